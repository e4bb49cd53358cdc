package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/runphi/runphi/pkg/caronte"
	"github.com/runphi/runphi/pkg/partition"
	"github.com/runphi/runphi/pkg/taskstate"
)

// The task RPCs. Each one runs its native-error body and converts the error
// to a gRPC status with toRPC, the only place that does; containerd converts
// it back (errgrpc.ToNative, or errdefs.FromGRPC in 1.6).

// toRPC turns a native error into the gRPC status containerd decodes.
// containerd 1.6 knows fewer codes than errdefs has and turns the others
// into Unknown; for it, the codes a partition produces that it lacks
// (ResourceExhausted when a partition does not fit, PermissionDenied) are
// sent as FailedPrecondition, which keeps them distinguishable from a
// failure of the shim itself. The message is unchanged.
func (s *service) toRPC(err error) error {
	if err == nil {
		return nil
	}
	if s.legacy && (errdefs.IsResourceExhausted(err) || errdefs.IsPermissionDenied(err)) {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return errgrpc.ToGRPC(flattenError(err))
}

// flattenError keeps an error's message and its errdefs class but drops the
// rest of its tree. errgrpc walks errors with several causes (Unwrap() []error)
// and repeats each cause's text in the status, so a boot-description error
// reached 2.x clients three times over.
func flattenError(err error) error {
	for _, class := range errdefsClasses {
		if errors.Is(err, class) {
			return &classedError{msg: err.Error(), class: class}
		}
	}
	return errors.New(err.Error())
}

// errdefsClasses are the errdefs sentinels the shim's errors may carry,
// most specific first.
var errdefsClasses = []error{
	errdefs.ErrNotFound,
	errdefs.ErrAlreadyExists,
	errdefs.ErrInvalidArgument,
	errdefs.ErrPermissionDenied,
	errdefs.ErrResourceExhausted,
	errdefs.ErrFailedPrecondition,
	errdefs.ErrNotImplemented,
	errdefs.ErrUnavailable,
	errdefs.ErrAborted,
	errdefs.ErrOutOfRange,
	errdefs.ErrConflict,
	errdefs.ErrNotModified,
	context.Canceled,
	context.DeadlineExceeded,
	errdefs.ErrDataLoss,
	errdefs.ErrUnauthenticated,
	errdefs.ErrInternal,
}

// classedError is an error message with exactly one errdefs class.
type classedError struct {
	msg   string
	class error
}

func (e *classedError) Error() string { return e.msg }
func (e *classedError) Unwrap() error { return e.class }

var _ taskv3.TTRPCTaskService = (*service)(nil)

// Create mounts the rootfs, routes the container, creates and loads the
// partition's cell and prepares its caronte. The task's pid is the shim's:
// a partition has no host process.
func (s *service) Create(ctx context.Context, r *taskv3.CreateTaskRequest) (*taskv3.CreateTaskResponse, error) {
	t, err := s.create(ctx, r)
	if err != nil {
		return nil, s.toRPC(err)
	}
	return &taskv3.CreateTaskResponse{Pid: t.pid}, nil
}

func (s *service) create(ctx context.Context, r *taskv3.CreateTaskRequest) (_ *task, retErr error) {
	t0 := time.Now()
	switch {
	case r.GetID() == "":
		return nil, fmt.Errorf("create task: empty id: %w", errdefs.ErrInvalidArgument)
	case r.GetBundle() == "":
		return nil, fmt.Errorf("create task %q: empty bundle: %w", r.GetID(), errdefs.ErrInvalidArgument)
	case r.GetCheckpoint() != "" || r.GetParentCheckpoint() != "":
		return nil, fmt.Errorf("create task %q from a checkpoint: a partition has no host process to restore: %w",
			r.GetID(), errdefs.ErrNotImplemented)
	}
	if err := s.reserve(r.GetID()); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			s.release(r.GetID())
		}
	}()
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("id", r.GetID()))

	cfg, err := loadConfig(r.GetOptions(), s.lookup)
	if err != nil {
		return nil, err
	}
	if cfg.Debug {
		_ = log.SetLevel("debug")
	}
	timer := newPhaseTimer(ctx, t0)

	rootfs := filepath.Join(r.GetBundle(), "rootfs")
	mounted, err := mountRootfs(r.GetRootfs(), rootfs)
	if err != nil {
		return nil, err
	}
	timer.mark("mount")
	defer func() {
		if retErr != nil && mounted {
			if err := unmountRootfs(rootfs); err != nil {
				log.G(ctx).WithError(err).Error("undo the rootfs mount of a failed create; the mount is leaked")
			}
		}
	}()

	spec, err := readSpec(r.GetBundle())
	if err != nil {
		return nil, err
	}
	switch kind, err := route(spec, rootfs); {
	case err != nil:
		return nil, err
	case kind != targetPartition:
		return nil, fmt.Errorf("create task %q: %w", r.GetID(), errNotPartition)
	}
	be, err := s.backend(cfg)
	if err != nil {
		return nil, err
	}

	// The state goes to disk before the cell exists, so that a shim dying
	// from here on still leaves `delete` enough to unmount.
	st := &taskstate.State{
		ID:        r.GetID(),
		Namespace: s.namespace,
		Bundle:    r.GetBundle(),
		ShimPid:   int(s.pid),
		Rootfs:    rootfs,
		Mounted:   mounted,
		Config:    cfg,
	}
	if err := taskstate.Write(st); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			if err := taskstate.Remove(r.GetBundle()); err != nil {
				log.G(ctx).WithError(err).Warn("remove the state of a failed create")
			}
		}
	}()

	timer.mark("prepare")
	part, err := partition.Create(ctx, partition.Options{
		ID:        r.GetID(),
		Namespace: s.namespace,
		Rootfs:    rootfs,
		Spec:      spec,
		Board:     be.board,
		Driver:    timer.driver(be.driver),
		Ledger:    be.ledger,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			if err := part.Destroy(context.WithoutCancel(ctx)); err != nil {
				// The container goes away all the same; the ledger
				// keeps what the cell holds, and later allocations try
				// to destroy it again.
				log.G(ctx).WithError(err).WithField("cell", part.Name()).
					Error("CELL LEAKED: cannot destroy the cell of a failed create; its ledger entry is marked orphaned")
				if err := be.ledger.MarkOrphaned(part.Owner(), err.Error()); err != nil {
					log.G(ctx).WithError(err).Error("mark the ledger entry of the leaked cell orphaned")
				}
			}
		}
	}()
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("cell", part.Name()))
	rec := taskstate.Record(part.Record())
	st.Partition = &rec
	if err := taskstate.Write(st); err != nil {
		return nil, err
	}

	t := &task{
		id:      r.GetID(),
		bundle:  r.GetBundle(),
		rootfs:  rootfs,
		io:      caronte.IO{Stdin: r.GetStdin(), Stdout: r.GetStdout(), Stderr: r.GetStderr(), Terminal: r.GetTerminal()},
		state:   st,
		backend: be,
		part:    part,
		events:  s.events,
		pid:     s.pid,
		exited:  make(chan struct{}),
		status:  statusCreated,
	}
	// caronte keeps the context's logger for its background work; the
	// service's context carries the process-wide fields, this one the task's.
	proxy, err := caronte.New(log.WithLogger(s.ctx, log.G(ctx)), part, t.io, consoleOptions(part, caronte.Options{OnExit: t.onExit}))
	if err != nil {
		return nil, err
	}
	t.proxy = proxy

	t.mu.Lock()
	t.events.publish(topicTaskCreate, &eventstypes.TaskCreate{
		ContainerID: t.id,
		Bundle:      t.bundle,
		Rootfs:      r.GetRootfs(),
		IO:          &eventstypes.TaskIO{Stdin: t.io.Stdin, Stdout: t.io.Stdout, Stderr: t.io.Stderr, Terminal: t.io.Terminal},
		Checkpoint:  r.GetCheckpoint(),
		Pid:         t.pid,
	})
	t.mu.Unlock()
	s.publishTask(t)
	timer.mark("caronte")
	log.G(ctx).Info("task created")
	return t, nil
}

// errNotPartition is create's answer for a container that is not a
// partition; the dispatcher hands such a container to runc instead.
var errNotPartition = fmt.Errorf("not a partition (annotation %s=%s, a pod's sandbox container, or an image without /boot/config.json): the shim runs it with runc: %w",
	RuntimeAnnotation, runtimeRunc, errdefs.ErrFailedPrecondition)

// readSpec reads the bundle's OCI runtime spec.
func readSpec(bundle string) (*specs.Spec, error) {
	path := filepath.Join(bundle, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("decode OCI spec %s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	return &spec, nil
}

// Start starts the partition's cell and publishes TaskStart, before any
// TaskExit of the same task.
func (s *service) Start(ctx context.Context, r *taskv3.StartRequest) (*taskv3.StartResponse, error) {
	pid, err := s.start(ctx, r)
	if err != nil {
		return nil, s.toRPC(err)
	}
	return &taskv3.StartResponse{Pid: pid}, nil
}

func (s *service) start(ctx context.Context, r *taskv3.StartRequest) (uint32, error) {
	t, err := s.getInit(r.GetID(), r.GetExecID())
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	if t.status != statusCreated {
		status := t.status
		t.mu.Unlock()
		return 0, fmt.Errorf("start task %q: it is %s, only a created task can start: %w", t.id, status, errdefs.ErrFailedPrecondition)
	}
	t.status = statusStarting
	t.startedAt = time.Now() // the cell's CPUs are the inmate's from here on
	t.mu.Unlock()

	err = t.proxy.Start(ctx)

	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		if t.status == statusStarting {
			t.status = statusCreated
			t.startedAt = time.Time{}
		}
		return 0, fmt.Errorf("start task %q: %w", t.id, err)
	}
	if t.status == statusStarting {
		t.status = statusRunning
	}
	t.events.publish(topicTaskStart, &eventstypes.TaskStart{ContainerID: t.id, Pid: t.pid})
	t.startPublished = true
	if t.exitPending {
		t.publishExitLocked()
	}
	log.G(ctx).WithField("id", t.id).Info("task started")
	return t.pid, nil
}

// State answers from memory, never from the hypervisor: containerd allows
// it two seconds.
func (s *service) State(ctx context.Context, r *taskv3.StateRequest) (*taskv3.StateResponse, error) {
	t, err := s.getInitKept(ctx, r.GetID(), r.GetExecID())
	if err != nil {
		return nil, s.toRPC(err)
	}
	return t.stateResponse(), nil
}

// stateResponse describes the task as it is now.
func (t *task) stateResponse() *taskv3.StateResponse {
	status, e := t.snapshot()
	return &taskv3.StateResponse{
		ID:         t.id,
		Bundle:     t.bundle,
		Pid:        t.pid,
		Status:     status.apiStatus(),
		Stdin:      t.io.Stdin,
		Stdout:     t.io.Stdout,
		Stderr:     t.io.Stderr,
		Terminal:   t.io.Terminal,
		ExitStatus: e.Status,
		ExitedAt:   timestamppb.New(exitTime(status, e)),
	}
}

// Kill passes the signal to caronte: SIGTERM and the like ask the inmate
// to shut down and destroy the cell after a grace period, SIGKILL destroys
// it at once. `all` changes nothing: a partition is one "process".
func (s *service) Kill(ctx context.Context, r *taskv3.KillRequest) (*emptypb.Empty, error) {
	if err := s.kill(ctx, r); err != nil {
		return nil, s.toRPC(err)
	}
	return &emptypb.Empty{}, nil
}

func (s *service) kill(ctx context.Context, r *taskv3.KillRequest) error {
	t, err := s.getInit(r.GetID(), r.GetExecID())
	if err != nil {
		return err
	}
	status, _ := t.snapshot()
	if status == statusStopped {
		// containerd and CRI take NotFound as "already gone".
		return fmt.Errorf("kill task %q: process already finished: %w", t.id, errdefs.ErrNotFound)
	}
	// A SIGKILL (or the shutdown request of a graceful kill) waits for the
	// hypervisor, which may be wedged: the kill goes on without the caller
	// after the deadline, and its destroy still ends the task.
	done := make(chan error, 1)
	kctx := context.WithoutCancel(ctx)
	go func() { done <- t.proxy.Kill(kctx, syscall.Signal(r.GetSignal())) }()
	timer := time.NewTimer(s.killTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("kill task %q with signal %d: %w", t.id, r.GetSignal(), err)
		}
		return nil
	case <-timer.C:
		log.G(ctx).WithField("id", t.id).WithField("signal", r.GetSignal()).WithField("timeout", s.killTimeout).
			Warn("kill: the hypervisor has not answered; the kill goes on in the background")
		return fmt.Errorf("kill task %q with signal %d: the hypervisor has not answered within %s; the kill goes on in the background: %w",
			t.id, r.GetSignal(), s.killTimeout, context.DeadlineExceeded)
	case <-ctx.Done():
		return fmt.Errorf("kill task %q with signal %d: %w", t.id, r.GetSignal(), ctx.Err())
	}
}

// Wait blocks until the task exits, for any number of callers, and
// returns the same status to each.
func (s *service) Wait(ctx context.Context, r *taskv3.WaitRequest) (*taskv3.WaitResponse, error) {
	t, err := s.getInitKept(ctx, r.GetID(), r.GetExecID())
	if err != nil {
		return nil, s.toRPC(err)
	}
	select {
	case <-t.exited:
	case <-ctx.Done():
		return nil, s.toRPC(ctx.Err())
	}
	status, e := t.snapshot()
	return &taskv3.WaitResponse{ExitStatus: e.Status, ExitedAt: timestamppb.New(exitTime(status, e))}, nil
}

// Delete destroys a created or stopped task's cell (freeing its ledger
// entry), unmounts its rootfs, removes its state and publishes TaskDelete.
// Afterwards the id is unknown.
func (s *service) Delete(ctx context.Context, r *taskv3.DeleteRequest) (*taskv3.DeleteResponse, error) {
	resp, err := s.delete(ctx, r)
	if err != nil {
		return nil, s.toRPC(err)
	}
	return resp, nil
}

// deleteOp is one Delete of a task running in the background, so that a
// Delete past its deadline can be retried and join it rather than start
// over (containerd#7496).
type deleteOp struct {
	done chan struct{} // closed when resp, err and task are set
	resp *taskv3.DeleteResponse
	err  error
	// task is the deleted task, which the reading RPCs answer for while
	// the Delete is abandoned (getKept); nil when the Delete failed.
	task *task
}

func (s *service) delete(ctx context.Context, r *taskv3.DeleteRequest) (*taskv3.DeleteResponse, error) {
	t, err := s.getInit(r.GetID(), r.GetExecID())
	if err != nil {
		// A Delete that ran past its deadline may have finished in the
		// background since, and forgotten the task: its caller was told
		// that a retry gets the result.
		if op := s.abandonedDelete(r.GetID(), r.GetExecID()); op != nil {
			return s.awaitDelete(ctx, r.GetID(), op)
		}
		return nil, err
	}
	t.mu.Lock()
	deleted, status, op := t.deleted, t.status, t.deleting
	switch {
	case deleted:
		t.mu.Unlock()
		return nil, fmt.Errorf("task %q: %w", t.id, errdefs.ErrNotFound)
	case op == nil && (status == statusStarting || status == statusRunning):
		t.mu.Unlock()
		return nil, fmt.Errorf("delete task %q: it is %s; kill it first: %w", t.id, status, errdefs.ErrFailedPrecondition)
	case op == nil:
		op = &deleteOp{done: make(chan struct{})}
		t.deleting = op
		go s.runDelete(log.WithLogger(context.WithoutCancel(ctx), log.G(ctx)), t, op)
	}
	t.mu.Unlock()
	return s.awaitDelete(ctx, t.id, op)
}

// awaitDelete waits for a Delete running in the background, at most the
// delete timeout. One that does not finish in time is kept as abandoned, so
// that a retry after it finished, when the task is already forgotten, still
// gets its result instead of NotFound.
func (s *service) awaitDelete(ctx context.Context, id string, op *deleteOp) (*taskv3.DeleteResponse, error) {
	timer := time.NewTimer(s.deleteTimeout)
	defer timer.Stop()
	select {
	case <-op.done:
		s.dropAbandoned(id, op)
		return op.resp, op.err
	case <-timer.C:
		s.abandon(id, op)
		log.G(ctx).WithField("id", id).WithField("timeout", s.deleteTimeout).
			Warn("delete: the hypervisor has not answered; the delete goes on in the background")
		return nil, fmt.Errorf("delete task %q: not done within %s (the hypervisor has not answered); it goes on in the background, and a retried Delete waits for it: %w",
			id, s.deleteTimeout, context.DeadlineExceeded)
	case <-ctx.Done():
		s.abandon(id, op)
		return nil, fmt.Errorf("delete task %q: %w", id, ctx.Err())
	}
}

// abandon remembers a background Delete whose caller stopped waiting.
func (s *service) abandon(id string, op *deleteOp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abandoned[id] = op
}

// dropAbandoned forgets op once a caller received its result.
func (s *service) dropAbandoned(id string, op *deleteOp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.abandoned[id] == op {
		delete(s.abandoned, id)
	}
}

// abandonedDelete returns the background Delete of a task that nobody
// received the result of, nil if there is none.
func (s *service) abandonedDelete(id, execID string) *deleteOp {
	if execID != "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.abandoned[id]
}

// runDelete does the work of a Delete: close caronte, destroy the cell
// (freeing the ledger entry), unmount, remove the state, publish
// TaskDelete and forget the task. On failure the task stays, so that a
// retried Delete tries again.
func (s *service) runDelete(ctx context.Context, t *task, op *deleteOp) {
	resp, err := s.deleteNow(ctx, t)
	t.mu.Lock()
	if err != nil {
		t.deleting = nil
	} else {
		op.task = t
	}
	op.resp, op.err = resp, err
	close(op.done)
	t.mu.Unlock()
}

func (s *service) deleteNow(ctx context.Context, t *task) (*taskv3.DeleteResponse, error) {
	// caronte first: it stops watching and closes the FIFOs; the cell is
	// not touched by Close.
	if err := t.proxy.Close(); err != nil {
		log.G(ctx).WithError(err).WithField("id", t.id).Warn("close the task's stdio")
	}
	if err := t.part.Destroy(ctx); err != nil {
		return nil, fmt.Errorf("delete task %q: %w", t.id, err)
	}
	if t.state.Mounted {
		if err := unmountRootfs(t.rootfs); err != nil {
			return nil, fmt.Errorf("delete task %q: %w", t.id, err)
		}
	}
	if err := taskstate.Remove(t.bundle); err != nil {
		return nil, fmt.Errorf("delete task %q: %w", t.id, err)
	}

	// Forget the task before marking it deleted: a retried Delete that sees
	// "deleted" answers NotFound, and containerd then sends Shutdown at
	// once, which must find no task left or the shim outlives its last
	// container.
	s.release(t.id)
	t.mu.Lock()
	t.deleted = true
	status, e := t.status, t.exit
	if status != statusStopped {
		close(t.exited) // a created task never exits: release its waiters
	}
	at := timestamppb.New(exitTime(status, e))
	ev := &eventstypes.TaskDelete{ContainerID: t.id, ID: t.id, Pid: t.pid}
	if status == statusStopped {
		ev.ExitStatus, ev.ExitedAt = e.Status, at
	}
	t.events.publish(topicTaskDelete, ev)
	t.mu.Unlock()

	log.G(ctx).WithField("id", t.id).Info("task deleted")
	return &taskv3.DeleteResponse{Pid: t.pid, ExitStatus: e.Status, ExitedAt: at}, nil
}

// Pids lists the shim's pid for a task that is not deleted (or whose
// Delete's result is kept, getKept): containerd takes an empty list after a
// daemon restart for a leaked shim and shuts it down.
func (s *service) Pids(ctx context.Context, r *taskv3.PidsRequest) (*taskv3.PidsResponse, error) {
	t, err := s.getKept(ctx, r.GetID())
	if err != nil {
		return nil, s.toRPC(err)
	}
	return &taskv3.PidsResponse{Processes: []*tasktypes.ProcessInfo{{Pid: t.pid}}}, nil
}

// Connect reports the shim's pid, and the task's while it exists.
func (s *service) Connect(ctx context.Context, r *taskv3.ConnectRequest) (*taskv3.ConnectResponse, error) {
	if s.isExiting() {
		// `start` probes with Connect: a shim on its way out must not be
		// handed to containerd as the server of a new task.
		return nil, s.toRPC(fmt.Errorf("connect: the shim is shutting down: %w", errdefs.ErrUnavailable))
	}
	resp := &taskv3.ConnectResponse{ShimPid: s.pid, Version: s.version}
	if t, err := s.get(r.GetID()); err == nil {
		resp.TaskPid = t.pid
	}
	return resp, nil
}

// Shutdown lets the process exit once no task is left; with tasks left it
// succeeds and keeps serving, as containerd expects of a shared shim.
func (s *service) Shutdown(ctx context.Context, r *taskv3.ShutdownRequest) (*emptypb.Empty, error) {
	if s.shutdown() {
		log.G(ctx).Info("no task left; shutting down")
	}
	return &emptypb.Empty{}, nil
}

// Stats describes the partition in cgroup Metrics terms (metrics.go): CPU
// usage is the cell's CPUs times the time it has been running, memory usage
// is the cell's RAM. It answers from memory, for a stopped task too (CRI's
// OOM check asks after the exit).
func (s *service) Stats(ctx context.Context, r *taskv3.StatsRequest) (*taskv3.StatsResponse, error) {
	t, err := s.getKept(ctx, r.GetID())
	if err != nil {
		return nil, s.toRPC(err)
	}
	stats, err := t.usage(time.Now()).metrics(s.cgroupV2)
	if err != nil {
		return nil, s.toRPC(err)
	}
	return &taskv3.StatsResponse{Stats: stats}, nil
}

// The RPCs a partition cannot support.

func (s *service) Pause(ctx context.Context, r *taskv3.PauseRequest) (*emptypb.Empty, error) {
	return nil, s.toRPC(notImplemented("pause", "a partition's CPUs cannot be frozen from the host"))
}

func (s *service) Resume(ctx context.Context, r *taskv3.ResumeRequest) (*emptypb.Empty, error) {
	return nil, s.toRPC(notImplemented("resume", "a partition's CPUs cannot be frozen from the host"))
}

func (s *service) Checkpoint(ctx context.Context, r *taskv3.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, s.toRPC(notImplemented("checkpoint", "a partition has no host process to checkpoint"))
}

func (s *service) Exec(ctx context.Context, r *taskv3.ExecProcessRequest) (*emptypb.Empty, error) {
	if _, err := s.get(r.GetID()); err != nil {
		return nil, s.toRPC(err)
	}
	return nil, s.toRPC(notImplemented("exec in task "+strconv.Quote(r.GetID()),
		"a partition has no host process: its inmate runs on its own CPUs, outside Linux"))
}

// ResizePty is accepted and ignored: a partition's console is a serial
// line with no window size. Refusing it would make every `ctr run -t`
// print an error, since ctr resizes right after Start; runc likewise
// ignores a resize of a process without a console.
func (s *service) ResizePty(ctx context.Context, r *taskv3.ResizePtyRequest) (*emptypb.Empty, error) {
	if _, err := s.getInit(r.GetID(), r.GetExecID()); err != nil {
		return nil, s.toRPC(err)
	}
	log.G(ctx).WithField("id", r.GetID()).WithField("width", r.GetWidth()).WithField("height", r.GetHeight()).
		Debug("resize pty ignored: a partition's console has no window size")
	return &emptypb.Empty{}, nil
}

func notImplemented(rpc, reason string) error {
	return fmt.Errorf("%s: %s: %w", rpc, reason, errdefs.ErrNotImplemented)
}

// getInit returns the task for RPCs that address a process: a partition
// has only its init, so every exec id is unknown.
func (s *service) getInit(id, execID string) (*task, error) {
	t, err := s.get(id)
	if err != nil {
		return nil, err
	}
	if execID != "" {
		return nil, fmt.Errorf("exec %q in task %q: a partition has no exec processes: %w", execID, id, errdefs.ErrNotFound)
	}
	return t, nil
}

// getKept is get for the RPCs that only read a task (State, Wait, Pids,
// Stats). A task whose Delete finished in the background after its caller
// gave up is still answered for, stopped, until a retried Delete takes the
// result: containerd loads a task (State) before it deletes it, and after a
// restart it keeps only the shims whose Pids answer. Without this the retry
// never comes, and containerd either keeps the task for good or drops it
// with its exit status.
func (s *service) getKept(ctx context.Context, id string) (*task, error) {
	t, err := s.get(id)
	if err == nil {
		return t, nil
	}
	op := s.abandonedDelete(id, "")
	if op == nil {
		return nil, err
	}
	select {
	case <-op.done: // the task is forgotten just before op is done
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if op.task == nil {
		return nil, err
	}
	return op.task, nil
}

// getInitKept is getInit for the RPCs that only read a task (getKept).
func (s *service) getInitKept(ctx context.Context, id, execID string) (*task, error) {
	if execID != "" {
		return s.getInit(id, execID)
	}
	return s.getKept(ctx, id)
}

// taskExitEvent is the TaskExit of a partition's init.
func taskExitEvent(id string, pid uint32, e caronte.Exit) *eventstypes.TaskExit {
	return &eventstypes.TaskExit{
		ContainerID: id,
		ID:          id,
		Pid:         pid,
		ExitStatus:  e.Status,
		ExitedAt:    timestamppb.New(e.At),
	}
}
