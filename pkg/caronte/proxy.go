package caronte

import (
	"context"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Defaults for the zero fields of Options.
const (
	DefaultPollInterval  = 100 * time.Millisecond
	DefaultGracePeriod   = 10 * time.Second
	DefaultDrainTimeout  = 2 * time.Second
	DefaultDrainIdle     = 200 * time.Millisecond
	DefaultConsoleBuffer = 1 << 20
	DefaultStallTimeout  = time.Second
)

// ConsoleMode says what Cell.Console carries (docs/console.md).
type ConsoleMode int

const (
	// ConsoleOwn is a stream of the cell's own (the ivshmem console): it
	// is copied as it is. If the stream also implements io.Writer the
	// console is bidirectional and stdin is copied into it.
	ConsoleOwn ConsoleMode = iota
	// ConsoleHypervisor is the hypervisor's virtual console ring, opened
	// non-blocking (a read with nothing new returns io.EOF), owned by
	// this partition: it is polled, the hypervisor's own lines go to the
	// log instead of stdout, and overruns become a marked line.
	ConsoleHypervisor
)

// Options tune a Proxy. The zero value means the defaults. Logging goes to
// log.G of the context given to New, so the shim attaches the task's fields
// there once.
type Options struct {
	// PollInterval is how often the watcher reads the cell state.
	PollInterval time.Duration
	// GracePeriod is how long a graceful kill (SIGTERM and the like) waits
	// for the inmate to stop after the shutdown request before the cell is
	// destroyed.
	GracePeriod time.Duration
	// DrainTimeout bounds each of the two steps between the cell stopping
	// and the exit becoming visible: draining the console, and writing what
	// was drained into a stalled stdout FIFO.
	DrainTimeout time.Duration
	// DrainIdle ends the console drain early once no output has arrived for
	// this long after the cell stopped. It must exceed the console's own
	// polling period, if it has one.
	DrainIdle time.Duration
	// ConsoleBuffer bounds the console output held while the stdout reader
	// is slow or absent.
	ConsoleBuffer int
	// StallTimeout is how long a write to stdout may stay stuck before the
	// reader counts as stalled. While the reader makes progress a full
	// ConsoleBuffer waits for it (the console feels backpressure, nothing
	// is lost); once it stalls, the oldest output is dropped instead.
	StallTimeout time.Duration
	// ConsoleMode says what Cell.Console carries.
	ConsoleMode ConsoleMode
	// ConsolePoll is how often a ConsoleHypervisor console is polled.
	ConsolePoll time.Duration
	// NoConsoleReason, when the cell has no console, is written to stdout
	// as one marked line, so that `ctr run` and `kubectl logs` say why
	// nothing comes.
	NoConsoleReason string
	// OnExit is called exactly once with the exit, after the console has
	// been drained and stdout/stderr closed, and before Wait returns it: the
	// shim queues /tasks/exit here, so the event is queued before any client
	// woken by Wait can ask to delete the task. It must not block.
	OnExit func(Exit)
}

func (o Options) withDefaults() Options {
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.GracePeriod <= 0 {
		o.GracePeriod = DefaultGracePeriod
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.DrainIdle <= 0 {
		o.DrainIdle = DefaultDrainIdle
	}
	if o.ConsoleBuffer <= 0 {
		o.ConsoleBuffer = DefaultConsoleBuffer
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.ConsolePoll <= 0 {
		o.ConsolePoll = DefaultConsolePoll
	}
	return o
}

// Exit is how a partition ended, in the terms of a process exit
// (docs/exit-status.md).
type Exit struct {
	// Status is the exit status: 0 for a clean shutdown, 255 for a failed
	// cell, 128+signal when killed or destroyed.
	Status uint32
	// At is when caronte saw the cell stop.
	At time.Time
	// Reason says in words what happened, for logs and State.
	Reason string
}

// phase is where a Proxy is in its life.
type phase int

const (
	phaseCreated phase = iota // New returned; the cell is loaded but not started
	phaseRunning              // Start succeeded; the watcher runs
	phaseExiting              // the Exit is decided; the console is draining
	phaseExited               // the Exit is visible
)

var phaseText = [...]string{"created", "running", "exiting", "exited"}

func (p phase) String() string {
	if int(p) < len(phaseText) {
		return phaseText[p]
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// Errors returned by Proxy methods besides those of the Cell.
var (
	// ErrClosed is wrapped by Wait when the Proxy was closed before the
	// partition exited. It is errdefs.ErrUnavailable underneath.
	ErrClosed = fmt.Errorf("caronte closed before the partition exited: %w", errdefs.ErrUnavailable)
)

// Proxy is the per-partition stand-in for a container's init process. See
// the package documentation.
type Proxy struct {
	cell  Cell
	opts  Options
	ctx   context.Context // New's context without its cancellation: logging and background cell calls
	log   *log.Entry
	stdio *stdio // outputs closed by the exit path; everything by Close after waiting for that path

	// opMu serialises Start, Kill and Close: a kill never races the start
	// it follows, and Close waits for a Start or Kill in progress. The
	// watcher and the exit path never take it.
	opMu sync.Mutex

	mu     sync.Mutex     // guards the fields below
	phase  phase          // lifecycle position
	signal syscall.Signal // terminating signal accepted by Kill and in progress; 0 if none
	exit   Exit           // valid from phaseExiting on
	closed bool           // Close was called
	pump   *pump          // console pump, set by Start

	graceC    chan struct{}  // closed by Kill (with mu held, once: when signal goes from 0) to start the grace timer
	decided   chan struct{}  // closed when the Exit is decided
	done      chan struct{}  // closed when the Exit is visible
	closing   chan struct{}  // closed by Close: background goroutines stop
	abandoned chan struct{}  // closed by Close if no Exit was ever visible
	wg        sync.WaitGroup // the watcher and the exit path
}

// New opens the task's stdio and returns a Proxy for a created (loaded, not
// started) cell. It never blocks on a FIFO whose other end nobody opened.
// ctx's values (the logger) are kept; its cancellation only covers New.
func New(ctx context.Context, cell Cell, stdio IO, opts Options) (*Proxy, error) {
	if cell == nil {
		return nil, fmt.Errorf("caronte: nil cell: %w", errdefs.ErrInvalidArgument)
	}
	s, err := openStdio(stdio)
	if err != nil {
		return nil, err
	}
	bg := context.WithoutCancel(ctx)
	return &Proxy{
		cell:      cell,
		opts:      opts.withDefaults(),
		ctx:       bg,
		log:       log.G(bg),
		stdio:     s,
		graceC:    make(chan struct{}),
		decided:   make(chan struct{}),
		done:      make(chan struct{}),
		closing:   make(chan struct{}),
		abandoned: make(chan struct{}),
	}, nil
}

// Start opens the cell's console, starts the cell, and then the watcher and
// the console pump. It fails with errdefs.ErrFailedPrecondition if the
// Proxy was started, has exited, or was closed.
func (p *Proxy) Start(ctx context.Context) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()

	p.mu.Lock()
	closed, ph := p.closed, p.phase
	p.mu.Unlock()
	if closed {
		return fmt.Errorf("start partition: caronte is closed: %w", errdefs.ErrFailedPrecondition)
	}
	if ph != phaseCreated {
		return fmt.Errorf("start partition: already %s: %w", ph, errdefs.ErrFailedPrecondition)
	}

	// The console is opened before the cell starts so that the first
	// lines the inmate prints are not lost.
	console, err := p.cell.Console()
	if err != nil {
		return fmt.Errorf("open cell console: %w", err)
	}
	var input io.Writer // the console's input side, if it has one
	if console != nil {
		switch p.opts.ConsoleMode {
		case ConsoleHypervisor:
			console = newHVConsole(console, p.log, p.opts.ConsolePoll)
		default:
			input, _ = console.(io.Writer)
		}
	}
	if err := p.cell.Start(ctx); err != nil {
		if console != nil {
			console.Close()
		}
		return fmt.Errorf("start cell: %w", err)
	}

	pump := newPump(console, p.stdio.stdout, p.opts.ConsoleBuffer, p.opts.StallTimeout, p.stdio.terminal, p.log)
	if console == nil {
		reason := p.opts.NoConsoleReason
		if reason == "" {
			reason = "the cell has no console"
		}
		p.log.WithField("reason", reason).Info("partition has no console")
		pump.push(fmt.Appendf(nil, "[runphi: no console output from this partition: %s]\n", reason))
	}
	p.mu.Lock()
	p.phase = phaseRunning
	p.pump = pump
	p.mu.Unlock()
	pump.start()
	if in := p.stdio.stdin; in != nil {
		go copyStdin(in, input, p.log)
	}
	p.wg.Go(p.watch)
	p.log.Info("partition started")
	return nil
}

// CloseStdin closes the task's stdin (CloseIO): the client has no more
// input. The partition keeps running. It is idempotent.
func (p *Proxy) CloseStdin() error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	return p.stdio.closeStdin()
}

// Wait blocks until the partition has exited and returns its Exit; every
// caller gets the same one. It returns ctx's error if ctx ends first, and an
// error wrapping ErrClosed if the Proxy is closed before any exit.
func (p *Proxy) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-p.done:
		return p.exitValue(), nil
	case <-p.abandoned:
		return Exit{}, ErrClosed
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// Exited returns the Exit once it is visible.
func (p *Proxy) Exited() (Exit, bool) {
	select {
	case <-p.done:
		return p.exitValue(), true
	default:
		return Exit{}, false
	}
}

func (p *Proxy) exitValue() Exit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// decide records e as the Exit unless one was decided already (the first
// cause wins) or the Proxy is closed, and starts the exit path. It reports
// whether e was taken.
func (p *Proxy) decide(e Exit) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.decideLocked(e)
}

// decideLocked is decide with p.mu held.
func (p *Proxy) decideLocked(e Exit) bool {
	if p.phase >= phaseExiting || p.closed {
		return false
	}
	p.phase = phaseExiting
	p.exit = e
	close(p.decided)
	p.log.WithField("exit_status", e.Status).WithField("reason", e.Reason).Info("partition exited")
	p.wg.Go(p.finishExit)
	return true
}

// finishExit makes a decided Exit visible: drain the console, close stdout
// and stderr so that the client's copiers finish, then OnExit, then Wait.
func (p *Proxy) finishExit() {
	p.mu.Lock()
	pump, e := p.pump, p.exit
	p.mu.Unlock()
	if pump != nil {
		pump.finish(p.opts.DrainTimeout, p.opts.DrainIdle, p.closing)
	}
	if err := p.stdio.closeOutputs(); err != nil {
		p.log.WithError(err).Warn("close stdout and stderr")
	}
	if p.opts.OnExit != nil {
		p.opts.OnExit(e)
	}
	p.mu.Lock()
	p.phase = phaseExited
	close(p.done)
	p.mu.Unlock()
}

// Close stops the watcher and the console pump and closes the stdio files.
// It does not touch the cell: a partition still running keeps running. Wait
// callers still blocked get ErrClosed. Close is idempotent.
func (p *Proxy) Close() error {
	p.opMu.Lock()
	defer p.opMu.Unlock()

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.closing)
	pump, ph := p.pump, p.phase
	p.mu.Unlock()

	if pump != nil && ph == phaseRunning {
		// No exit path owns the pump: stop it here.
		pump.stop()
	}
	p.wg.Wait()
	err := p.stdio.closeAll()

	p.mu.Lock()
	if p.phase != phaseExited {
		close(p.abandoned)
	}
	p.mu.Unlock()
	return err
}
