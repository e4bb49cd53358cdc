package shim

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/caronte"
	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/partition"
	"github.com/runphi/runphi/pkg/taskstate"
)

// serviceOptions configure a service. The zero value of every field but
// Publisher is usable.
type serviceOptions struct {
	// Namespace is the containerd namespace the shim serves (-namespace).
	Namespace string
	// Pid is reported as the pid of every task: a partition has no host
	// process, so the shim stands in for it (never 0: CRI skips kills of
	// pid 0, containerd#10441).
	Pid int
	// Version is reported by Connect.
	Version string
	// Publisher receives the task events.
	Publisher publisher
	// Config says where configuration files are looked up.
	Config config.LoadOptions
	// Containerd16 makes errors carry only the codes containerd 1.6
	// understands: it turns ResourceExhausted and PermissionDenied into
	// Unknown, so they are sent as FailedPrecondition.
	Containerd16 bool
	// CgroupV2 makes Stats answer with cgroup v2 Metrics (a unified-only
	// host) instead of v1 (a legacy or hybrid host).
	CgroupV2 bool
	// KillTimeout and DeleteTimeout bound Kill and Delete of a partition
	// (0: DefaultKillTimeout, DefaultDeleteTimeout).
	KillTimeout, DeleteTimeout time.Duration
	// OpenSimulator opens backend = "sim" (Info.OpenSimulator).
	OpenSimulator SimulatorOpener
}

// Deadlines of the partition RPCs that wait for the hypervisor. A wedged
// driver must not hang containerd: past its deadline the RPC answers
// DeadlineExceeded and the request goes on in the background
// (docs/reliability.md). Delete stays below the 10 s a client commonly
// gives it (containerd#7496).
const (
	DefaultKillTimeout   = 5 * time.Second
	DefaultDeleteTimeout = 8 * time.Second
)

// service implements the task API for partitions. One service lives in each
// long-lived shim process.
type service struct {
	// Immutable after newService.
	ctx       context.Context // lives as long as the process; caronte's watchers run under it
	namespace string
	pid       uint32
	version   string
	events    publisher
	lookup    config.LoadOptions
	legacy    bool // the daemon is containerd 1.6 (see serviceOptions.Containerd16)
	cgroupV2  bool // Stats sends cgroup v2 Metrics
	openSim   SimulatorOpener
	exit      chan struct{} // closed (once, under mu) when Shutdown lets the process end

	killTimeout   time.Duration
	deleteTimeout time.Duration

	mu    sync.Mutex
	tasks map[string]*task // guarded by mu; a nil value reserves an id while Create runs
	// abandoned are Deletes that ran past their deadline, by task id, until
	// a caller receives their result or the id is created again.
	abandoned map[string]*deleteOp // guarded by mu
	exiting   bool                 // guarded by mu; exit is closed, no new tasks

	// backendMu serialises opening backends, apart from mu: opening one may
	// enable the simulated hypervisor, a driver request that can wait
	// behind a wedged one, and mu must never wait for the hypervisor (every
	// RPC takes it).
	backendMu sync.Mutex
	backends  map[string]*backend // guarded by backendMu; by backendKey
}

func newService(ctx context.Context, opts serviceOptions) *service {
	return &service{
		ctx:       ctx,
		namespace: opts.Namespace,
		pid:       uint32(opts.Pid),
		version:   opts.Version,
		events:    opts.Publisher,
		lookup:    opts.Config,
		legacy:    opts.Containerd16,
		cgroupV2:  opts.CgroupV2,
		openSim:   opts.OpenSimulator,
		exit:      make(chan struct{}),

		killTimeout:   cmp.Or(opts.KillTimeout, DefaultKillTimeout),
		deleteTimeout: cmp.Or(opts.DeleteTimeout, DefaultDeleteTimeout),
		tasks:         make(map[string]*task),
		abandoned:     make(map[string]*deleteOp),
		backends:      make(map[string]*backend),
	}
}

// done is closed when the process may exit: Shutdown was called with no
// task left.
func (s *service) done() <-chan struct{} { return s.exit }

// get returns a task that finished Create and was not deleted.
func (s *service) get(id string) (*task, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tasks[id]
	if t == nil {
		return nil, fmt.Errorf("task %q: %w", id, errdefs.ErrNotFound)
	}
	return t, nil
}

// reserve claims id for a Create in progress.
func (s *service) reserve(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exiting {
		return fmt.Errorf("create task %q: the shim is shutting down: %w", id, errdefs.ErrFailedPrecondition)
	}
	if _, ok := s.tasks[id]; ok {
		return fmt.Errorf("task %q: %w", id, errdefs.ErrAlreadyExists)
	}
	s.tasks[id] = nil
	delete(s.abandoned, id) // a new task of that name: the old result is moot
	return nil
}

// release drops a reservation or a deleted task.
func (s *service) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tasks, id)
}

// publishTask makes a created task visible to the other RPCs.
func (s *service) publishTask(t *task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tasks[t.id] = t
}

// backend opens, or reuses, the backend a configuration selects.
func (s *service) backend(cfg config.Config) (*backend, error) {
	s.backendMu.Lock()
	defer s.backendMu.Unlock()
	key := backendKey(cfg)
	if b, ok := s.backends[key]; ok {
		return b, nil
	}
	b, err := openBackend(s.ctx, cfg, s.openSim, true)
	if err != nil {
		return nil, err
	}
	s.backends[key] = b
	return b, nil
}

// isExiting reports whether Shutdown has let the process end.
func (s *service) isExiting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exiting
}

// shutdown ends the process if no task is left, and reports whether it
// will.
func (s *service) shutdown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tasks) > 0 {
		return false
	}
	if !s.exiting {
		s.exiting = true
		close(s.exit)
	}
	return true
}

// taskStatus is where a task is in its life.
type taskStatus int

const (
	statusCreated taskStatus = iota + 1
	statusStarting
	statusRunning
	statusStopped
)

var taskStatusText = map[taskStatus]string{
	statusCreated:  "created",
	statusStarting: "starting",
	statusRunning:  "running",
	statusStopped:  "stopped",
}

func (s taskStatus) String() string {
	if t, ok := taskStatusText[s]; ok {
		return t
	}
	return fmt.Sprintf("taskStatus(%d)", int(s))
}

// apiStatus is the task API's view: a task that is being started still
// counts as created.
func (s taskStatus) apiStatus() tasktypes.Status {
	switch s {
	case statusCreated, statusStarting:
		return tasktypes.Status_CREATED
	case statusRunning:
		return tasktypes.Status_RUNNING
	case statusStopped:
		return tasktypes.Status_STOPPED
	}
	return tasktypes.Status_UNKNOWN
}

// task is one partition task.
type task struct {
	// Immutable after Create.
	id      string
	bundle  string
	rootfs  string
	io      caronte.IO
	state   *taskstate.State // as persisted; Delete removes it
	backend *backend
	part    *partition.Partition
	proxy   *caronte.Proxy
	events  publisher
	pid     uint32
	exited  chan struct{} // closed when status becomes stopped, or at delete

	mu             sync.Mutex
	deleting       *deleteOp    // guarded by mu; the Delete in progress, which a retried Delete joins
	status         taskStatus   // guarded by mu
	exit           caronte.Exit // guarded by mu; meaningful once status is stopped
	startedAt      time.Time    // guarded by mu; when Start began, zero before
	startPublished bool         // guarded by mu; TaskStart is queued
	exitPending    bool         // guarded by mu; exited before TaskStart was queued
	deleted        bool         // guarded by mu
}

// onExit is caronte's exit callback. A partition that exits while Start is
// still returning gets its TaskExit held back until TaskStart is queued.
func (t *task) onExit(e caronte.Exit) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recordExitLocked(e)
}

// recordExitLocked marks the task stopped with e, once. t.mu must be held.
func (t *task) recordExitLocked(e caronte.Exit) {
	if t.status == statusStopped || t.deleted {
		return
	}
	t.status = statusStopped
	t.exit = e
	close(t.exited)
	if t.startPublished {
		t.publishExitLocked()
	} else {
		t.exitPending = true
	}
}

// publishExitLocked queues TaskExit. t.mu must be held.
func (t *task) publishExitLocked() {
	t.events.publish(topicTaskExit, taskExitEvent(t.id, t.pid, t.exit))
	t.exitPending = false
}

// snapshot returns the task's status and exit under its lock.
func (t *task) snapshot() (taskStatus, caronte.Exit) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status, t.exit
}

// exitTime is an exit's time, zero when the task never exited.
func exitTime(status taskStatus, e caronte.Exit) time.Time {
	if status != statusStopped {
		return time.Time{}
	}
	return e.At
}

// usage is what the partition uses at now: its cell's CPUs and RAM, and
// how long it has been running (from Start to its exit, or to now).
func (t *task) usage(now time.Time) cellUsage {
	a := t.part.Allocation()
	var ram uint64
	for _, r := range a.RAM {
		ram += r.Size()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var running time.Duration
	if !t.startedAt.IsZero() {
		end := now
		if t.status == statusStopped && !t.exit.At.IsZero() {
			end = t.exit.At
		}
		running = end.Sub(t.startedAt)
	}
	return cellUsage{cpus: a.CPUs, ram: ram, running: running}
}
