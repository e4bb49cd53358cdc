package caronte

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// shutdownReply is how the fake inmate answers a shutdown request.
type shutdownReply int

const (
	approve shutdownReply = iota // stops: state "shut down"
	ignore                       // accepts the request but keeps running
	deny                         // refuses: EPERM, as a non-passive cell that denies
)

// fakeCell is a consumer-side fake of a partition: a cell whose state the
// test scripts and whose console is an io.Pipe the test writes into.
type fakeCell struct {
	onShutdown shutdownReply
	destroyErr error // returned by Destroy while set
	noConsole  bool
	console    io.ReadCloser // returned by Console instead of consoleR when set

	consoleR *io.PipeReader
	consoleW *io.PipeWriter

	mu       sync.Mutex // guards the fields below
	state    jailhouse.CellState
	gone     bool
	stateErr error
	calls    []string
}

func newFakeCell() *fakeCell {
	r, w := io.Pipe()
	return &fakeCell{state: jailhouse.StateShutDown, consoleR: r, consoleW: w}
}

func (c *fakeCell) record(call string) {
	c.calls = append(c.calls, call)
}

func (c *fakeCell) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.record("start")
	c.state = jailhouse.StateRunning
	return nil
}

func (c *fakeCell) State() (jailhouse.CellState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone {
		return jailhouse.StateInvalid, fmt.Errorf("cell %q: %w", "fake", jailhouse.ErrCellNotFound)
	}
	if c.stateErr != nil {
		return jailhouse.StateInvalid, c.stateErr
	}
	return c.state, nil
}

func (c *fakeCell) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.record("shutdown")
	switch c.onShutdown {
	case approve:
		c.state = jailhouse.StateShutDown
	case deny:
		return fmt.Errorf("shut down cell %q: %w", "fake", unix.EPERM)
	}
	return nil
}

func (c *fakeCell) Destroy(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.record("destroy")
	if c.destroyErr != nil {
		return c.destroyErr
	}
	if !c.gone {
		c.gone = true
		// Like the simulator's cell console: EOF once the cell is gone.
		c.consoleW.Close()
	}
	return nil
}

func (c *fakeCell) Console() (io.ReadCloser, error) {
	if c.noConsole {
		return nil, nil
	}
	if c.console != nil {
		return c.console, nil
	}
	return c.consoleR, nil
}

// set scripts the cell state, as the inmate would.
func (c *fakeCell) set(st jailhouse.CellState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = st
}

// destroyOutside removes the cell behind caronte's back (`jailhouse cell destroy`).
func (c *fakeCell) destroyOutside() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gone = true
	c.consoleW.Close()
}

func (c *fakeCell) setDestroyErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.destroyErr = err
}

func (c *fakeCell) callLog() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// fastOptions are short timings so that tests run in milliseconds.
func fastOptions() Options {
	return Options{
		PollInterval: 5 * time.Millisecond,
		GracePeriod:  10 * time.Second, // tests that want it to expire shorten it
		DrainTimeout: 2 * time.Second,
		DrainIdle:    20 * time.Millisecond,
	}
}

// startProxy builds and starts a Proxy over cell with no stdio.
func startProxy(t *testing.T, cell *fakeCell, opts Options) *Proxy {
	t.Helper()
	p, err := New(t.Context(), cell, IO{}, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return p
}

// waitExit waits for the exit with a test deadline.
func waitExit(t *testing.T, p *Proxy, within time.Duration) Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	e, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return e
}
