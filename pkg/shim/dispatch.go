package shim

import (
	"context"
	"errors"
	"fmt"
	"sync"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/runphi/runphi/pkg/taskstate"
)

// dispatcher is the task service containerd talks to. One shim serves a
// whole pod (or group), so containers of both kinds arrive on it: it routes
// every RPC by container id, partitions to service and ordinary containers
// to containerd's runc task service. Exec ids belong to their container, so
// an exec RPC goes wherever its container went.
//
// Errors from service are native and converted here with service.toRPC;
// the runc task service already answers with gRPC statuses, which pass
// through unchanged.
type dispatcher struct {
	// Immutable after newDispatcher.
	parts     *service
	runc      *runcTasks
	namespace string

	mu      sync.Mutex
	ids     map[string]*container // guarded by mu; every container from the start of its Create to its Delete
	exiting bool                  // guarded by mu; Shutdown found nothing left, the process is ending
}

// container is what the dispatcher knows of one container.
type container struct {
	kind   target // 0 while Create runs
	bundle string
}

func newDispatcher(parts *service, runc *runcTasks) *dispatcher {
	return &dispatcher{parts: parts, runc: runc, namespace: parts.namespace, ids: map[string]*container{}}
}

var _ taskv3.TTRPCTaskService = (*dispatcher)(nil)

// done is closed when the process may exit.
func (d *dispatcher) done() <-chan struct{} { return d.parts.done() }

// reserve claims id for a Create in progress, across both kinds: one id is
// one container in containerd's namespace.
func (d *dispatcher) reserve(id, bundle string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case id == "":
		return fmt.Errorf("create task: empty id: %w", errdefs.ErrInvalidArgument)
	case d.exiting:
		return fmt.Errorf("create task %q: the shim is shutting down: %w", id, errdefs.ErrFailedPrecondition)
	case d.ids[id] != nil:
		return fmt.Errorf("task %q: %w", id, errdefs.ErrAlreadyExists)
	}
	d.ids[id] = &container{bundle: bundle}
	return nil
}

func (d *dispatcher) settle(id string, kind target) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.ids[id]; c != nil {
		c.kind = kind
	}
}

func (d *dispatcher) release(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.ids, id)
}

// lookup returns the container id, nil when there is none (yet).
func (d *dispatcher) lookup(id string) *container {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.ids[id]; c != nil && c.kind != 0 {
		cc := *c
		return &cc
	}
	return nil
}

// runcFor returns the runc task service when id is an ordinary container,
// nil otherwise (a partition, or an unknown id, which service answers with
// NotFound).
func (d *dispatcher) runcFor(id string) taskv3.TTRPCTaskService {
	if c := d.lookup(id); c != nil && c.kind == targetRunc {
		return d.runc.running()
	}
	return nil
}

func (d *dispatcher) rctx(ctx context.Context) context.Context { return runcContext(ctx, d.namespace) }

// Create routes the container and creates it where it belongs. The spec's
// annotations decide first (org.runphi.runtime, the CRI sandbox); otherwise
// service mounts the rootfs and looks for a boot description, and a
// container without one is handed, unmounted again, to runc.
func (d *dispatcher) Create(ctx context.Context, r *taskv3.CreateTaskRequest) (*taskv3.CreateTaskResponse, error) {
	if err := d.reserve(r.GetID(), r.GetBundle()); err != nil {
		return nil, d.parts.toRPC(err)
	}
	resp, kind, err := d.create(ctx, r)
	if err != nil {
		d.release(r.GetID())
		return nil, err
	}
	d.settle(r.GetID(), kind)
	return resp, nil
}

func (d *dispatcher) create(ctx context.Context, r *taskv3.CreateTaskRequest) (*taskv3.CreateTaskResponse, target, error) {
	var kind target
	// A bundle without a readable spec is service's to report.
	if spec, err := readSpec(r.GetBundle()); err == nil {
		if kind, err = routeBySpec(spec); err != nil {
			return nil, 0, d.parts.toRPC(fmt.Errorf("create task %q: %w", r.GetID(), err))
		}
	}
	if kind != targetRunc {
		t, err := d.parts.create(ctx, r)
		switch {
		case err == nil:
			return &taskv3.CreateTaskResponse{Pid: t.pid}, targetPartition, nil
		case !errors.Is(err, errNotPartition):
			return nil, 0, d.parts.toRPC(err)
		}
	}
	resp, err := d.createRunc(ctx, r)
	return resp, targetRunc, err
}

// createRunc hands an ordinary container to the runc task service, with
// runc options in place of runphi's runtime options, after recording in
// the bundle that `delete` must clean it up as a runc container.
func (d *dispatcher) createRunc(ctx context.Context, r *taskv3.CreateTaskRequest) (*taskv3.CreateTaskResponse, error) {
	cfg, err := loadConfig(r.GetOptions(), d.parts.lookup)
	if err != nil {
		return nil, d.parts.toRPC(fmt.Errorf("create task %q: %w", r.GetID(), err))
	}
	opts, err := runcOptions(cfg, r.GetOptions())
	if err != nil {
		return nil, d.parts.toRPC(err)
	}
	svc, err := d.runc.service()
	if err != nil {
		return nil, d.parts.toRPC(fmt.Errorf("create task %q: %w", r.GetID(), err))
	}
	st := &taskstate.State{
		Kind:      taskstate.KindRunc,
		ID:        r.GetID(),
		Namespace: d.namespace,
		Bundle:    r.GetBundle(),
		ShimPid:   int(d.parts.pid),
		Config:    cfg,
	}
	if err := taskstate.Write(st); err != nil {
		return nil, d.parts.toRPC(err)
	}
	req := proto.Clone(r).(*taskv3.CreateTaskRequest)
	req.Options = opts
	resp, err := svc.Create(d.rctx(ctx), req)
	if err != nil {
		if err := taskstate.Remove(r.GetBundle()); err != nil {
			log.G(ctx).WithError(err).Warn("remove the state of a failed create")
		}
		return nil, err
	}
	log.G(ctx).WithField("id", r.GetID()).WithField("pid", resp.GetPid()).Info("runc task created")
	return resp, nil
}

// Delete deletes a container or an exec. Once a container's init is gone
// its id is free again.
func (d *dispatcher) Delete(ctx context.Context, r *taskv3.DeleteRequest) (*taskv3.DeleteResponse, error) {
	c := d.lookup(r.GetID())
	if c == nil || c.kind != targetRunc {
		resp, err := d.parts.Delete(ctx, r)
		if c != nil && r.GetExecID() == "" && (err == nil || errdefs.IsNotFound(errgrpc.ToNative(err))) {
			d.release(r.GetID())
		}
		return resp, err
	}
	resp, err := d.runc.running().Delete(d.rctx(ctx), r)
	if r.GetExecID() == "" && (err == nil || errdefs.IsNotFound(errgrpc.ToNative(err))) {
		if err := taskstate.Remove(c.bundle); err != nil {
			log.G(ctx).WithError(err).WithField("id", r.GetID()).Warn("remove the state of a deleted runc task")
		}
		d.release(r.GetID())
	}
	return resp, err
}

// Shutdown lets the process exit once no container of either kind is
// left; otherwise it succeeds and keeps serving, as containerd expects of a
// shim that serves a whole pod. The runc task service's own Shutdown is
// never called: it would end the process's event forwarding.
func (d *dispatcher) Shutdown(ctx context.Context, r *taskv3.ShutdownRequest) (*emptypb.Empty, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, c := range d.ids {
		// A partition whose Delete ran past its deadline and finished in
		// the background is gone without a Delete having said so here.
		if c.kind == targetPartition {
			if _, err := d.parts.get(id); errdefs.IsNotFound(err) {
				delete(d.ids, id)
			}
		}
	}
	if len(d.ids) > 0 {
		return &emptypb.Empty{}, nil
	}
	if d.parts.shutdown() {
		d.exiting = true
		log.G(ctx).Info("no task left; shutting down")
	}
	return &emptypb.Empty{}, nil
}

// Connect reports the shim's pid and version, and the container's pid.
func (d *dispatcher) Connect(ctx context.Context, r *taskv3.ConnectRequest) (*taskv3.ConnectResponse, error) {
	resp, err := d.parts.Connect(ctx, r)
	if err != nil {
		return nil, err
	}
	if svc := d.runcFor(r.GetID()); svc != nil {
		if rc, err := svc.Connect(d.rctx(ctx), r); err == nil {
			resp.TaskPid = rc.GetTaskPid()
		}
	}
	return resp, nil
}

// The other RPCs go wherever the container is.

func (d *dispatcher) Start(ctx context.Context, r *taskv3.StartRequest) (*taskv3.StartResponse, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.Start(d.rctx(ctx), r)
	}
	return d.parts.Start(ctx, r)
}

func (d *dispatcher) State(ctx context.Context, r *taskv3.StateRequest) (*taskv3.StateResponse, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.State(d.rctx(ctx), r)
	}
	return d.parts.State(ctx, r)
}

func (d *dispatcher) Pids(ctx context.Context, r *taskv3.PidsRequest) (*taskv3.PidsResponse, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.Pids(d.rctx(ctx), r)
	}
	return d.parts.Pids(ctx, r)
}

func (d *dispatcher) Pause(ctx context.Context, r *taskv3.PauseRequest) (*emptypb.Empty, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.Pause(d.rctx(ctx), r)
	}
	return d.parts.Pause(ctx, r)
}

func (d *dispatcher) Resume(ctx context.Context, r *taskv3.ResumeRequest) (*emptypb.Empty, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.Resume(d.rctx(ctx), r)
	}
	return d.parts.Resume(ctx, r)
}

func (d *dispatcher) Checkpoint(ctx context.Context, r *taskv3.CheckpointTaskRequest) (*emptypb.Empty, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.Checkpoint(d.rctx(ctx), r)
	}
	return d.parts.Checkpoint(ctx, r)
}

func (d *dispatcher) Kill(ctx context.Context, r *taskv3.KillRequest) (*emptypb.Empty, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.Kill(d.rctx(ctx), r)
	}
	return d.parts.Kill(ctx, r)
}

func (d *dispatcher) Exec(ctx context.Context, r *taskv3.ExecProcessRequest) (*emptypb.Empty, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.Exec(d.rctx(ctx), r)
	}
	return d.parts.Exec(ctx, r)
}

func (d *dispatcher) ResizePty(ctx context.Context, r *taskv3.ResizePtyRequest) (*emptypb.Empty, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.ResizePty(d.rctx(ctx), r)
	}
	return d.parts.ResizePty(ctx, r)
}

func (d *dispatcher) CloseIO(ctx context.Context, r *taskv3.CloseIORequest) (*emptypb.Empty, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.CloseIO(d.rctx(ctx), r)
	}
	return d.parts.CloseIO(ctx, r)
}

func (d *dispatcher) Update(ctx context.Context, r *taskv3.UpdateTaskRequest) (*emptypb.Empty, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.Update(d.rctx(ctx), r)
	}
	return d.parts.Update(ctx, r)
}

func (d *dispatcher) Wait(ctx context.Context, r *taskv3.WaitRequest) (*taskv3.WaitResponse, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.Wait(d.rctx(ctx), r)
	}
	return d.parts.Wait(ctx, r)
}

func (d *dispatcher) Stats(ctx context.Context, r *taskv3.StatsRequest) (*taskv3.StatsResponse, error) {
	if svc := d.runcFor(r.GetID()); svc != nil {
		return svc.Stats(d.rctx(ctx), r)
	}
	return d.parts.Stats(ctx, r)
}
