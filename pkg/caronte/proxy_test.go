package caronte

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// A partition that stops without being killed reports what its cell state
// says, and caronte leaves the cell for Delete to destroy.
func TestExitFromCellState(t *testing.T) {
	tests := []struct {
		name   string
		stop   func(*fakeCell)
		status uint32
		reason string
	}{
		{"inmate shuts itself down", func(c *fakeCell) { c.set(jailhouse.StateShutDown) }, 0, "cell shut down"},
		{"cell fails", func(c *fakeCell) { c.set(jailhouse.StateFailed) }, 255, "cell failed"},
		{"comm ABI mismatch", func(c *fakeCell) { c.set(jailhouse.StateFailedCommRev) }, 255, "cell failed: Comm ABI mismatch"},
		{"cell destroyed from outside", (*fakeCell).destroyOutside, 137, "cell destroyed outside runphi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cell := newFakeCell()
			p := startProxy(t, cell, fastOptions())
			// Locked and transient errors are still "running".
			cell.set(jailhouse.StateRunningLocked)
			time.Sleep(20 * time.Millisecond)
			if _, ok := p.Exited(); ok {
				t.Fatal("exited while running/locked")
			}
			tt.stop(cell)
			e := waitExit(t, p, 5*time.Second)
			if e.Status != tt.status || e.Reason != tt.reason {
				t.Errorf("exit = %d %q, want %d %q", e.Status, e.Reason, tt.status, tt.reason)
			}
			if e.At.IsZero() {
				t.Error("exit time not set")
			}
			if got := cell.callLog(); !slices.Equal(got, []string{"start"}) {
				t.Errorf("cell calls = %v, want only start (Delete destroys a stopped cell)", got)
			}
		})
	}
}

// A State error that is not "not found" is transient: the watcher keeps
// going and the exit still comes once the state is readable again.
func TestTransientStateErrorIsNotAnExit(t *testing.T) {
	cell := newFakeCell()
	p := startProxy(t, cell, fastOptions())
	cell.mu.Lock()
	cell.stateErr = errors.New("read state: input/output error")
	cell.mu.Unlock()
	time.Sleep(30 * time.Millisecond)
	if e, ok := p.Exited(); ok {
		t.Fatalf("exited on a transient error: %+v", e)
	}
	cell.mu.Lock()
	cell.stateErr = nil
	cell.state = jailhouse.StateShutDown
	cell.mu.Unlock()
	if e := waitExit(t, p, 5*time.Second); e.Status != 0 {
		t.Errorf("status = %d, want 0", e.Status)
	}
}

func TestKill(t *testing.T) {
	tests := []struct {
		name       string
		reply      shutdownReply
		grace      time.Duration
		sig        syscall.Signal
		status     uint32
		calls      []string
		minElapsed time.Duration // the grace period must have run
	}{
		{"SIGTERM, inmate complies", approve, 10 * time.Second, unix.SIGTERM, 143, []string{"start", "shutdown", "destroy"}, 0},
		{"SIGTERM, inmate ignores the request", ignore, 100 * time.Millisecond, unix.SIGTERM, 143, []string{"start", "shutdown", "destroy"}, 100 * time.Millisecond},
		{"SIGTERM, inmate refuses (EPERM)", deny, 100 * time.Millisecond, unix.SIGTERM, 143, []string{"start", "shutdown", "destroy"}, 100 * time.Millisecond},
		{"SIGINT", approve, 10 * time.Second, unix.SIGINT, 130, []string{"start", "shutdown", "destroy"}, 0},
		{"SIGQUIT", approve, 10 * time.Second, unix.SIGQUIT, 131, []string{"start", "shutdown", "destroy"}, 0},
		{"SIGHUP", approve, 10 * time.Second, unix.SIGHUP, 129, []string{"start", "shutdown", "destroy"}, 0},
		{"SIGUSR1", approve, 10 * time.Second, unix.SIGUSR1, 138, []string{"start", "shutdown", "destroy"}, 0},
		{"SIGKILL", approve, 10 * time.Second, unix.SIGKILL, 137, []string{"start", "destroy"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cell := newFakeCell()
			cell.onShutdown = tt.reply
			opts := fastOptions()
			opts.GracePeriod = tt.grace
			p := startProxy(t, cell, opts)

			start := time.Now()
			if err := p.Kill(t.Context(), tt.sig); err != nil {
				t.Fatalf("Kill(%v): %v", tt.sig, err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Kill took %v; it must not wait for the grace period", d)
			}
			e := waitExit(t, p, 5*time.Second)
			if e.Status != tt.status {
				t.Errorf("status = %d (%s), want %d", e.Status, e.Reason, tt.status)
			}
			if d := time.Since(start); d < tt.minElapsed {
				t.Errorf("exit after %v, before the grace period %v", d, tt.minElapsed)
			}
			// Destroy may be called once more by the watcher; its first call
			// is what matters.
			if got := slices.Compact(cell.callLog()); !slices.Equal(got, tt.calls) {
				t.Errorf("cell calls = %v, want %v", got, tt.calls)
			}
		})
	}
}

// A SIGKILL while a graceful stop waits for its grace period destroys the
// cell at once, and the status is SIGKILL's.
func TestSIGKILLEscalatesSIGTERM(t *testing.T) {
	cell := newFakeCell()
	cell.onShutdown = ignore
	p := startProxy(t, cell, fastOptions()) // grace 10s: only SIGKILL can end it in time
	if err := p.Kill(t.Context(), unix.SIGTERM); err != nil {
		t.Fatalf("Kill(SIGTERM): %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, ok := p.Exited(); ok {
		t.Fatal("exited before the grace period on an ignoring inmate")
	}
	if err := p.Kill(t.Context(), unix.SIGKILL); err != nil {
		t.Fatalf("Kill(SIGKILL): %v", err)
	}
	if e := waitExit(t, p, 2*time.Second); e.Status != 137 {
		t.Errorf("status = %d (%s), want 137", e.Status, e.Reason)
	}
}

// Concurrent SIGTERM and SIGKILL produce exactly one exit, and with an
// ignoring inmate it is SIGKILL's.
func TestConcurrentKillsOneExit(t *testing.T) {
	for i := range 20 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			cell := newFakeCell()
			cell.onShutdown = ignore
			var mu sync.Mutex
			var exits []Exit
			opts := fastOptions()
			opts.OnExit = func(e Exit) {
				mu.Lock()
				exits = append(exits, e)
				mu.Unlock()
			}
			p := startProxy(t, cell, opts)
			var wg sync.WaitGroup
			for _, sig := range []syscall.Signal{unix.SIGTERM, unix.SIGKILL, unix.SIGTERM, unix.SIGKILL} {
				wg.Go(func() {
					if err := p.Kill(t.Context(), sig); err != nil && !errdefs.IsNotFound(err) {
						t.Errorf("Kill(%v): %v", sig, err)
					}
				})
			}
			wg.Wait()
			if e := waitExit(t, p, 2*time.Second); e.Status != 137 {
				t.Errorf("status = %d (%s), want 137", e.Status, e.Reason)
			}
			p.Close()
			mu.Lock()
			defer mu.Unlock()
			if len(exits) != 1 {
				t.Errorf("OnExit called %d times, want 1", len(exits))
			}
		})
	}
}

// After the exit, Kill finds no process: NotFound, which CRI ignores. Signal
// 0 answers whether the partition lives.
func TestKillAfterExitIsNotFound(t *testing.T) {
	cell := newFakeCell()
	p := startProxy(t, cell, fastOptions())
	if err := p.Kill(t.Context(), 0); err != nil {
		t.Errorf("Kill(0) while running: %v", err)
	}
	cell.set(jailhouse.StateShutDown)
	waitExit(t, p, 5*time.Second)
	for _, sig := range []syscall.Signal{0, unix.SIGTERM, unix.SIGKILL} {
		if err := p.Kill(t.Context(), sig); !errdefs.IsNotFound(err) {
			t.Errorf("Kill(%v) after exit = %v, want NotFound", sig, err)
		}
	}
	if got := cell.callLog(); !slices.Equal(got, []string{"start"}) {
		t.Errorf("cell calls = %v: a kill after exit must not touch the cell", got)
	}
}

// A SIGTERM that arrives after the inmate stopped by itself, but before the
// watcher's next poll, finds the exit already there: status 0, NotFound.
func TestKillSeesUnwatchedSelfShutdown(t *testing.T) {
	cell := newFakeCell()
	opts := fastOptions()
	opts.PollInterval = time.Hour
	p := startProxy(t, cell, opts)
	cell.set(jailhouse.StateShutDown)
	if err := p.Kill(t.Context(), unix.SIGTERM); !errdefs.IsNotFound(err) {
		t.Errorf("Kill = %v, want NotFound", err)
	}
	if e := waitExit(t, p, 5*time.Second); e.Status != 0 {
		t.Errorf("status = %d (%s), want 0", e.Status, e.Reason)
	}
}

func TestKillSignalsWithoutExit(t *testing.T) {
	tests := []struct {
		name    string
		sig     syscall.Signal
		wantErr error // nil: accepted and nothing happens
	}{
		{"probe", 0, nil},
		{"SIGWINCH ignored", unix.SIGWINCH, nil},
		{"SIGCHLD ignored", unix.SIGCHLD, nil},
		{"SIGCONT ignored", unix.SIGCONT, nil},
		{"SIGSTOP not implemented", unix.SIGSTOP, errdefs.ErrNotImplemented},
		{"SIGTSTP not implemented", unix.SIGTSTP, errdefs.ErrNotImplemented},
		{"negative signal", -1, errdefs.ErrInvalidArgument},
		{"signal 65", 65, errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cell := newFakeCell()
			p := startProxy(t, cell, fastOptions())
			err := p.Kill(t.Context(), tt.sig)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Kill(%d) = %v, want %v", tt.sig, err, tt.wantErr)
			}
			time.Sleep(20 * time.Millisecond)
			if e, ok := p.Exited(); ok {
				t.Errorf("exited: %+v", e)
			}
			if got := cell.callLog(); !slices.Equal(got, []string{"start"}) {
				t.Errorf("cell calls = %v, want only start", got)
			}
		})
	}
}

func TestActionOf(t *testing.T) {
	tests := []struct {
		sig  syscall.Signal
		want action
	}{
		{0, actProbe},
		{unix.SIGKILL, actDestroy},
		{unix.SIGTERM, actGraceful},
		{unix.SIGINT, actGraceful},
		{unix.SIGQUIT, actGraceful},
		{unix.SIGHUP, actGraceful},
		{unix.SIGUSR1, actGraceful},
		{unix.SIGUSR2, actGraceful},
		{unix.SIGABRT, actGraceful},
		{unix.SIGPIPE, actGraceful},
		{unix.SIGALRM, actGraceful},
		{unix.SIGPWR, actGraceful},
		{34, actGraceful}, // SIGRTMIN as glibc numbers it
		{64, actGraceful},
		{unix.SIGCHLD, actIgnore},
		{unix.SIGCONT, actIgnore},
		{unix.SIGURG, actIgnore},
		{unix.SIGWINCH, actIgnore},
		{unix.SIGSTOP, actStop},
		{unix.SIGTSTP, actStop},
		{unix.SIGTTIN, actStop},
		{unix.SIGTTOU, actStop},
	}
	for _, tt := range tests {
		t.Run(signalName(tt.sig), func(t *testing.T) {
			got, err := actionOf(tt.sig)
			if err != nil || got != tt.want {
				t.Errorf("actionOf(%d) = %v, %v; want %v", tt.sig, got, err, tt.want)
			}
		})
	}
}

// A SIGKILL whose destroy fails reports the error (with its errno) and
// produces no exit: the partition still runs.
func TestSIGKILLDestroyFailure(t *testing.T) {
	cell := newFakeCell()
	p := startProxy(t, cell, fastOptions())
	cell.setDestroyErr(fmt.Errorf("destroy cell %q: %w", "fake", unix.EPERM))
	err := p.Kill(t.Context(), unix.SIGKILL)
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("Kill(SIGKILL) = %v, want EPERM", err)
	}
	time.Sleep(20 * time.Millisecond)
	if e, ok := p.Exited(); ok {
		t.Fatalf("exited although the destroy failed: %+v", e)
	}
	cell.setDestroyErr(nil)
	if err := p.Kill(t.Context(), unix.SIGKILL); err != nil {
		t.Fatalf("second Kill(SIGKILL): %v", err)
	}
	if e := waitExit(t, p, 2*time.Second); e.Status != 137 {
		t.Errorf("status = %d, want 137", e.Status)
	}
}

// When the destroy after the grace period fails, the watcher retries it
// until it works, and only then reports the exit.
func TestGraceDestroyRetried(t *testing.T) {
	cell := newFakeCell()
	cell.onShutdown = ignore
	cell.setDestroyErr(fmt.Errorf("destroy cell %q: %w", "fake", unix.EPERM))
	opts := fastOptions()
	opts.GracePeriod = 20 * time.Millisecond
	p := startProxy(t, cell, opts)
	if err := p.Kill(t.Context(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if e, ok := p.Exited(); ok {
		t.Fatalf("exited although every destroy failed: %+v", e)
	}
	cell.setDestroyErr(nil)
	if e := waitExit(t, p, 2*time.Second); e.Status != 143 {
		t.Errorf("status = %d, want 143", e.Status)
	}
}

func TestKillBeforeStart(t *testing.T) {
	tests := []struct {
		name   string
		sig    syscall.Signal
		status uint32
	}{
		{"SIGKILL", unix.SIGKILL, 137},
		{"SIGTERM", unix.SIGTERM, 143},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cell := newFakeCell()
			p, err := New(t.Context(), cell, IO{}, fastOptions())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if err := p.Kill(t.Context(), tt.sig); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if e := waitExit(t, p, 2*time.Second); e.Status != tt.status {
				t.Errorf("status = %d, want %d", e.Status, tt.status)
			}
			if got := cell.callLog(); !slices.Equal(got, []string{"destroy"}) {
				t.Errorf("cell calls = %v, want [destroy]", got)
			}
			if err := p.Start(t.Context()); !errdefs.IsFailedPrecondition(err) {
				t.Errorf("Start after exit = %v, want FailedPrecondition", err)
			}
		})
	}
}

// Every Wait caller gets the same Exit, and OnExit fires once, before any
// Wait returns.
func TestManyWaiters(t *testing.T) {
	cell := newFakeCell()
	var onExit sync.WaitGroup
	onExit.Add(1)
	var exitCalls int
	var mu sync.Mutex
	var got []Exit
	var p *Proxy
	opts := fastOptions()
	opts.OnExit = func(e Exit) {
		mu.Lock()
		exitCalls++
		if len(got) != 0 {
			t.Errorf("a Wait returned before OnExit")
		}
		mu.Unlock()
		if _, ok := p.Exited(); ok {
			t.Errorf("Exited true before OnExit")
		}
		onExit.Done()
	}
	p = startProxy(t, cell, opts)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			e, err := p.Wait(t.Context())
			if err != nil {
				t.Errorf("Wait: %v", err)
			}
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
		})
	}
	time.Sleep(20 * time.Millisecond)
	if err := p.Kill(t.Context(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	onExit.Wait()
	if exitCalls != 1 {
		t.Errorf("OnExit called %d times, want 1", exitCalls)
	}
	for i, e := range got {
		if e != got[0] || e.Status != 143 {
			t.Fatalf("waiter %d got %+v, first got %+v", i, e, got[0])
		}
	}
	// A late caller gets the same.
	if e := waitExit(t, p, time.Second); e != got[0] {
		t.Errorf("late Wait = %+v, want %+v", e, got[0])
	}
}

func TestWaitContextAndClose(t *testing.T) {
	cell := newFakeCell()
	p := startProxy(t, cell, fastOptions())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with expiring ctx = %v, want DeadlineExceeded", err)
	}

	waitErr := make(chan error, 1)
	go func() {
		_, err := p.Wait(context.Background())
		waitErr <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-waitErr:
		if !errors.Is(err, ErrClosed) || !errdefs.IsUnavailable(err) {
			t.Errorf("Wait after Close = %v, want ErrClosed (Unavailable)", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not release Wait")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := p.Kill(t.Context(), unix.SIGKILL); !errdefs.IsNotFound(err) {
		t.Errorf("Kill after Close = %v, want NotFound", err)
	}
	// Close does not touch the cell.
	if got := cell.callLog(); !slices.Equal(got, []string{"start"}) {
		t.Errorf("cell calls = %v, want only start", got)
	}
}

// Close during a graceful stop's grace period returns promptly.
func TestCloseDuringGrace(t *testing.T) {
	cell := newFakeCell()
	cell.onShutdown = ignore
	p := startProxy(t, cell, fastOptions())
	if err := p.Kill(t.Context(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close blocked during the grace period")
	}
}

type startFailCell struct {
	*fakeCell
}

func (c *startFailCell) Start(ctx context.Context) error {
	return fmt.Errorf("start cell %q: %w", "fake", unix.EINVAL)
}

func TestStartErrors(t *testing.T) {
	t.Run("cell start fails", func(t *testing.T) {
		cell := &startFailCell{fakeCell: newFakeCell()}
		p, err := New(t.Context(), cell, IO{}, fastOptions())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if err := p.Start(t.Context()); !errors.Is(err, unix.EINVAL) {
			t.Errorf("Start = %v, want EINVAL", err)
		}
		// The console was closed: the fake inmate's write fails.
		if _, err := cell.consoleW.Write([]byte("x")); err == nil {
			t.Error("console left open after a failed start")
		}
	})
	t.Run("second start", func(t *testing.T) {
		p := startProxy(t, newFakeCell(), fastOptions())
		if err := p.Start(t.Context()); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("second Start = %v, want FailedPrecondition", err)
		}
	})
	t.Run("start after close", func(t *testing.T) {
		p, err := New(t.Context(), newFakeCell(), IO{}, fastOptions())
		if err != nil {
			t.Fatal(err)
		}
		p.Close()
		if err := p.Start(t.Context()); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("Start after Close = %v, want FailedPrecondition", err)
		}
	})
	t.Run("nil cell", func(t *testing.T) {
		if _, err := New(t.Context(), nil, IO{}, Options{}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("New(nil) = %v, want InvalidArgument", err)
		}
	})
}
