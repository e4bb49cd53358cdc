package shim

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// The phase timing log: at debug level (runphi.toml `debug = true`, or the
// shim's -debug flag) the shim logs one "phase" line per step of a
// partition's start, which `make bench` reads back (docs/performance.md).
// At any other level nothing is timed and the driver is not wrapped.

// processStart is when this process's package variables were initialised:
// the shim's own start, minus the Go runtime's start-up before it.
var processStart = time.Now()

// phaseTimer times the phases of one task. A nil *phaseTimer does nothing,
// so callers need no checks.
type phaseTimer struct {
	ctx context.Context // carries the task's logger

	mu   sync.Mutex
	last time.Time // guarded by mu; the end of the previous phase
}

// servedFirstCreate is set once the first Create has been timed: only the
// first task of a process can say how long the shim took to start.
var servedFirstCreate sync.Once

// newPhaseTimer returns a timer for the task whose Create began at t0, or
// nil when the logger would drop debug lines.
func newPhaseTimer(ctx context.Context, t0 time.Time) *phaseTimer {
	if !log.G(ctx).Logger.IsLevelEnabled(log.DebugLevel) {
		return nil
	}
	p := &phaseTimer{ctx: ctx, last: t0}
	servedFirstCreate.Do(func() { p.log("shim start", t0.Sub(processStart)) })
	return p
}

// mark ends the phase that began at the previous mark.
func (p *phaseTimer) mark(phase string) {
	if p == nil {
		return
	}
	now := time.Now()
	p.mu.Lock()
	d := now.Sub(p.last)
	p.last = now
	p.mu.Unlock()
	p.log(phase, d)
}

// restart starts a new phase at now without logging the gap (the time
// between two RPCs belongs to containerd).
func (p *phaseTimer) restart() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.last = time.Now()
	p.mu.Unlock()
}

func (p *phaseTimer) log(phase string, d time.Duration) {
	log.G(p.ctx).WithField("phase", phase).
		WithField("ms", float64(d.Microseconds())/1000).
		Debug("phase timing")
}

// driver wraps d so that the cell requests of this task end phases: the
// time before CELL_CREATE is "plan" (boot description, allocation, plan,
// generation, checks, encoding), then "create", "load", and at Start
// "start" and "first console byte".
func (p *phaseTimer) driver(d jailhouse.Driver) jailhouse.Driver {
	if p == nil {
		return d
	}
	t := &timedDriver{Driver: d, timer: p}
	if c, ok := d.(jailhouse.CellConsoler); ok {
		return &timedConsoleDriver{timedDriver: t, consoler: c}
	}
	return t
}

// timedDriver passes every request through and marks the phases.
type timedDriver struct {
	jailhouse.Driver
	timer *phaseTimer
}

func (d *timedDriver) CreateCell(config []byte) error {
	d.timer.mark("plan")
	err := d.Driver.CreateCell(config)
	d.timer.mark("create")
	return err
}

func (d *timedDriver) LoadCell(name string, images ...jailhouse.Image) error {
	err := d.Driver.LoadCell(name, images...)
	d.timer.mark("load")
	return err
}

func (d *timedDriver) StartCell(name string) error {
	d.timer.restart()
	err := d.Driver.StartCell(name)
	d.timer.mark("start")
	return err
}

// timedConsoleDriver is a timedDriver whose backend has per-cell consoles;
// it stays a CellConsoler so that the console choice is the same as
// without timing.
type timedConsoleDriver struct {
	*timedDriver
	consoler jailhouse.CellConsoler
}

func (d *timedConsoleDriver) OpenCellConsole(name string) (io.ReadCloser, error) {
	rc, err := d.consoler.OpenCellConsole(name)
	if err != nil {
		return nil, err
	}
	return &firstByteReader{ReadCloser: rc, timer: d.timer}, nil
}

// firstByteReader marks "first console byte" at the first read that
// returns data: the time from CELL_START until the inmate's output reached
// the shim.
type firstByteReader struct {
	io.ReadCloser
	timer *phaseTimer
	once  sync.Once
}

func (r *firstByteReader) Read(b []byte) (int, error) {
	n, err := r.ReadCloser.Read(b)
	if n > 0 {
		r.once.Do(func() { r.timer.mark("first console byte") })
	}
	return n, err
}
