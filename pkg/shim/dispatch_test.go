package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	eventstypes "github.com/containerd/containerd/api/events"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	cshim "github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/runphi/runphi/pkg/taskstate"
)

// fakeRunc stands in for containerd's runc task service: it records every
// call with the container id, exec id and namespace it saw, and publishes
// the events the real one does for Create and Delete.
type fakeRunc struct {
	pub        cshim.Publisher
	createErr  error
	mu         sync.Mutex
	calls      []string
	createOpts []*runcoptions.Options
}

func (f *fakeRunc) record(ctx context.Context, rpc, id, execID string) {
	ns, _ := namespaces.Namespace(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%s %s %s ns=%s", rpc, id, execID, ns))
}

func (f *fakeRunc) snapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

const fakeRuncPid = 777

func (f *fakeRunc) Create(ctx context.Context, r *taskv3.CreateTaskRequest) (*taskv3.CreateTaskResponse, error) {
	f.record(ctx, "Create", r.GetID(), "")
	v, err := typeurl.UnmarshalAny(r.GetOptions())
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.createOpts = append(f.createOpts, v.(*runcoptions.Options)) // the real service panics on any other type
	f.mu.Unlock()
	if f.createErr != nil {
		return nil, errgrpc.ToGRPC(f.createErr)
	}
	f.pub.Publish(ctx, topicTaskCreate, &eventstypes.TaskCreate{ContainerID: r.GetID(), Pid: fakeRuncPid})
	return &taskv3.CreateTaskResponse{Pid: fakeRuncPid}, nil
}

func (f *fakeRunc) Start(ctx context.Context, r *taskv3.StartRequest) (*taskv3.StartResponse, error) {
	f.record(ctx, "Start", r.GetID(), r.GetExecID())
	return &taskv3.StartResponse{Pid: fakeRuncPid}, nil
}

func (f *fakeRunc) Delete(ctx context.Context, r *taskv3.DeleteRequest) (*taskv3.DeleteResponse, error) {
	f.record(ctx, "Delete", r.GetID(), r.GetExecID())
	if r.GetExecID() == "" {
		f.pub.Publish(ctx, topicTaskDelete, &eventstypes.TaskDelete{ContainerID: r.GetID(), Pid: fakeRuncPid})
	}
	return &taskv3.DeleteResponse{Pid: fakeRuncPid, ExitStatus: 3}, nil
}

func (f *fakeRunc) State(ctx context.Context, r *taskv3.StateRequest) (*taskv3.StateResponse, error) {
	f.record(ctx, "State", r.GetID(), r.GetExecID())
	return &taskv3.StateResponse{ID: r.GetID(), Pid: fakeRuncPid, Status: tasktypes.Status_RUNNING}, nil
}

func (f *fakeRunc) Pids(ctx context.Context, r *taskv3.PidsRequest) (*taskv3.PidsResponse, error) {
	f.record(ctx, "Pids", r.GetID(), "")
	return &taskv3.PidsResponse{}, nil
}

func (f *fakeRunc) Pause(ctx context.Context, r *taskv3.PauseRequest) (*emptypb.Empty, error) {
	f.record(ctx, "Pause", r.GetID(), "")
	return &emptypb.Empty{}, nil
}

func (f *fakeRunc) Resume(ctx context.Context, r *taskv3.ResumeRequest) (*emptypb.Empty, error) {
	f.record(ctx, "Resume", r.GetID(), "")
	return &emptypb.Empty{}, nil
}

func (f *fakeRunc) Checkpoint(ctx context.Context, r *taskv3.CheckpointTaskRequest) (*emptypb.Empty, error) {
	f.record(ctx, "Checkpoint", r.GetID(), "")
	return &emptypb.Empty{}, nil
}

func (f *fakeRunc) Kill(ctx context.Context, r *taskv3.KillRequest) (*emptypb.Empty, error) {
	f.record(ctx, "Kill", r.GetID(), r.GetExecID())
	return &emptypb.Empty{}, nil
}

func (f *fakeRunc) Exec(ctx context.Context, r *taskv3.ExecProcessRequest) (*emptypb.Empty, error) {
	f.record(ctx, "Exec", r.GetID(), r.GetExecID())
	return &emptypb.Empty{}, nil
}

func (f *fakeRunc) ResizePty(ctx context.Context, r *taskv3.ResizePtyRequest) (*emptypb.Empty, error) {
	f.record(ctx, "ResizePty", r.GetID(), r.GetExecID())
	return &emptypb.Empty{}, nil
}

func (f *fakeRunc) CloseIO(ctx context.Context, r *taskv3.CloseIORequest) (*emptypb.Empty, error) {
	f.record(ctx, "CloseIO", r.GetID(), r.GetExecID())
	return &emptypb.Empty{}, nil
}

func (f *fakeRunc) Update(ctx context.Context, r *taskv3.UpdateTaskRequest) (*emptypb.Empty, error) {
	f.record(ctx, "Update", r.GetID(), "")
	return &emptypb.Empty{}, nil
}

func (f *fakeRunc) Wait(ctx context.Context, r *taskv3.WaitRequest) (*taskv3.WaitResponse, error) {
	f.record(ctx, "Wait", r.GetID(), r.GetExecID())
	return &taskv3.WaitResponse{ExitStatus: 3}, nil
}

func (f *fakeRunc) Stats(ctx context.Context, r *taskv3.StatsRequest) (*taskv3.StatsResponse, error) {
	f.record(ctx, "Stats", r.GetID(), "")
	return &taskv3.StatsResponse{}, nil
}

func (f *fakeRunc) Connect(ctx context.Context, r *taskv3.ConnectRequest) (*taskv3.ConnectResponse, error) {
	f.record(ctx, "Connect", r.GetID(), "")
	return &taskv3.ConnectResponse{TaskPid: fakeRuncPid}, nil
}

func (f *fakeRunc) Shutdown(ctx context.Context, r *taskv3.ShutdownRequest) (*emptypb.Empty, error) {
	f.record(ctx, "Shutdown", r.GetID(), "")
	return &emptypb.Empty{}, nil
}

// pod is a host whose shim serves partitions and, through a fake, runc.
type pod struct {
	*host
	runc    *fakeRunc
	started int // how often the runc service was started
	tasks   *dispatcher
}

func newPod(t *testing.T) *pod {
	t.Helper()
	p := &pod{host: newHost(t), runc: &fakeRunc{}}
	factory := func(ctx context.Context, pub cshim.Publisher, sd shutdown.Service) (taskv3.TTRPCTaskService, error) {
		p.started++
		p.runc.pub = pub
		return p.runc, nil
	}
	p.tasks = newDispatcher(p.svc, newRuncTasks(context.Background(), "default", p.events, factory))
	return p
}

// The pause container of a pod, a busybox sidecar and a partition share
// one shim: each RPC reaches the service that runs its container, exec ids
// go with their container, and the shim keeps serving until the last one
// is deleted.
func TestDispatcherRoutesAPod(t *testing.T) {
	p := newPod(t)
	ctx := context.Background()
	sandbox := `{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"pause"}`
	member := `{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"pause"}`
	options := optionsAny(t, &runtimeoptions.Options{ConfigPath: p.config})

	for _, c := range []struct {
		id, annotations string
		files           map[string]string
		wantPid         uint32
	}{
		{"pause", sandbox, partitionImage(inmateForever), fakeRuncPid}, // even with a boot description
		{"sidecar", member, map[string]string{"bin/sh": "busybox"}, fakeRuncPid},
		{"part", member, partitionImage(inmateForever), 4242},
	} {
		bundle := p.bundle(t, c.id, c.files, c.annotations)
		resp, err := p.tasks.Create(ctx, &taskv3.CreateTaskRequest{ID: c.id, Bundle: bundle, Options: options})
		if err != nil || resp.GetPid() != c.wantPid {
			t.Fatalf("Create %s = %v, %v; want pid %d", c.id, resp, err, c.wantPid)
		}
	}
	if p.started != 1 {
		t.Errorf("runc task service started %d times, want once for the pod", p.started)
	}
	// runc got runc options built from the configuration, never runphi's
	// runtime options (the real service type-asserts them).
	for i, o := range p.runc.createOpts {
		if o.GetBinaryName() != "" || o.GetRoot() != "" {
			t.Errorf("runc create %d got options %v, want the [runc] defaults", i, o)
		}
	}
	for _, id := range []string{"pause", "sidecar"} {
		st, err := taskstate.Read(filepath.Join(p.dir, "bundles", id))
		if err != nil || st.Kind != taskstate.KindRunc || st.Config.Source != p.config {
			t.Errorf("state of %s = %+v, %v; want kind runc with the resolved configuration", id, st, err)
		}
	}
	if cells := p.simCells(t); len(cells) != 1 {
		t.Fatalf("simulator cells %v, want only the partition's", cells)
	}

	// Every RPC of the sidecar, exec ids included, reaches runc.
	before := len(p.runc.snapshot())
	calls := []func() error{
		func() error { _, err := p.tasks.Start(ctx, &taskv3.StartRequest{ID: "sidecar"}); return err },
		func() error { _, err := p.tasks.State(ctx, &taskv3.StateRequest{ID: "sidecar"}); return err },
		func() error {
			_, err := p.tasks.Exec(ctx, &taskv3.ExecProcessRequest{ID: "sidecar", ExecID: "e1"})
			return err
		},
		func() error {
			_, err := p.tasks.Start(ctx, &taskv3.StartRequest{ID: "sidecar", ExecID: "e1"})
			return err
		},
		func() error {
			_, err := p.tasks.ResizePty(ctx, &taskv3.ResizePtyRequest{ID: "sidecar", ExecID: "e1", Width: 80, Height: 24})
			return err
		},
		func() error {
			_, err := p.tasks.CloseIO(ctx, &taskv3.CloseIORequest{ID: "sidecar", ExecID: "e1", Stdin: true})
			return err
		},
		func() error {
			_, err := p.tasks.Wait(ctx, &taskv3.WaitRequest{ID: "sidecar", ExecID: "e1"})
			return err
		},
		func() error {
			_, err := p.tasks.Delete(ctx, &taskv3.DeleteRequest{ID: "sidecar", ExecID: "e1"})
			return err
		},
		func() error { _, err := p.tasks.Kill(ctx, &taskv3.KillRequest{ID: "sidecar", Signal: 15}); return err },
		func() error { _, err := p.tasks.Pids(ctx, &taskv3.PidsRequest{ID: "sidecar"}); return err },
		func() error { _, err := p.tasks.Pause(ctx, &taskv3.PauseRequest{ID: "sidecar"}); return err },
		func() error { _, err := p.tasks.Resume(ctx, &taskv3.ResumeRequest{ID: "sidecar"}); return err },
		func() error { _, err := p.tasks.Update(ctx, &taskv3.UpdateTaskRequest{ID: "sidecar"}); return err },
		func() error { _, err := p.tasks.Stats(ctx, &taskv3.StatsRequest{ID: "sidecar"}); return err },
		func() error {
			_, err := p.tasks.Checkpoint(ctx, &taskv3.CheckpointTaskRequest{ID: "sidecar"})
			return err
		},
	}
	for i, call := range calls {
		if err := call(); err != nil {
			t.Fatalf("call %d on the sidecar: %v", i, err)
		}
	}
	got := p.runc.snapshot()[before:]
	want := []string{"Start sidecar  ns=default", "State sidecar  ns=default", "Exec sidecar e1 ns=default",
		"Start sidecar e1 ns=default", "ResizePty sidecar e1 ns=default", "CloseIO sidecar e1 ns=default",
		"Wait sidecar e1 ns=default", "Delete sidecar e1 ns=default", "Kill sidecar  ns=default",
		"Pids sidecar  ns=default", "Pause sidecar  ns=default", "Resume sidecar  ns=default",
		"Update sidecar  ns=default", "Stats sidecar  ns=default", "Checkpoint sidecar  ns=default"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("runc saw:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if c, err := p.tasks.Connect(ctx, &taskv3.ConnectRequest{ID: "sidecar"}); err != nil || c.GetTaskPid() != fakeRuncPid || c.GetShimPid() != 4242 {
		t.Errorf("Connect sidecar = %v, %v; want runc's task pid and the shim's pid", c, err)
	}

	// The partition's RPCs never reach runc.
	before = len(p.runc.snapshot())
	if _, err := p.tasks.Start(ctx, &taskv3.StartRequest{ID: "part"}); err != nil {
		t.Fatalf("Start part: %v", err)
	}
	_, err := p.tasks.Exec(ctx, &taskv3.ExecProcessRequest{ID: "part", ExecID: "e1"})
	isErr(t, err, errdefs.ErrNotImplemented, "Exec on a partition")
	if !strings.Contains(err.Error(), "a partition has no host process") {
		t.Errorf("Exec on a partition: %v, want the reason", err)
	}
	_, err = p.tasks.Pause(ctx, &taskv3.PauseRequest{ID: "part"})
	isErr(t, err, errdefs.ErrNotImplemented, "Pause on a partition")
	if got := p.runc.snapshot()[before:]; len(got) != 0 {
		t.Errorf("partition RPCs reached runc: %v", got)
	}

	_, err = p.tasks.Create(ctx, &taskv3.CreateTaskRequest{ID: "sidecar", Bundle: filepath.Join(p.dir, "bundles", "sidecar")})
	isErr(t, err, errdefs.ErrAlreadyExists, "Create of an existing runc id")

	// Shutdown keeps serving while any container of either kind is left.
	shutdownKeeps := func(what string) {
		t.Helper()
		if _, err := p.tasks.Shutdown(ctx, &taskv3.ShutdownRequest{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.tasks.done():
			t.Fatalf("Shutdown ended the shim while %s", what)
		default:
		}
	}
	shutdownKeeps("all three containers exist")
	if _, err := p.tasks.Kill(ctx, &taskv3.KillRequest{ID: "part", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.tasks.Wait(ctx, &taskv3.WaitRequest{ID: "part"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.tasks.Delete(ctx, &taskv3.DeleteRequest{ID: "part"}); err != nil {
		t.Fatalf("Delete part: %v", err)
	}
	shutdownKeeps("the pause and sidecar containers run")
	for _, id := range []string{"sidecar", "pause"} {
		if d, err := p.tasks.Delete(ctx, &taskv3.DeleteRequest{ID: id}); err != nil || d.GetExitStatus() != 3 {
			t.Fatalf("Delete %s = %v, %v; want runc's answer", id, d, err)
		}
		if _, err := os.Stat(filepath.Join(p.dir, "bundles", id, taskstate.FileName)); !os.IsNotExist(err) {
			t.Errorf("state of %s after Delete: %v", id, err)
		}
	}
	_, err = p.tasks.State(ctx, &taskv3.StateRequest{ID: "sidecar"})
	isErr(t, err, errdefs.ErrNotFound, "State of a deleted runc container")

	if _, err := p.tasks.Shutdown(ctx, &taskv3.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.tasks.done():
	default:
		t.Fatal("Shutdown with nothing left did not end the shim")
	}
	_, err = p.tasks.Create(ctx, &taskv3.CreateTaskRequest{ID: "late", Bundle: p.bundle(t, "late", nil, sandbox)})
	isErr(t, err, errdefs.ErrFailedPrecondition, "Create after the shim decided to exit")
	for _, c := range p.runc.snapshot() {
		if strings.HasPrefix(c, "Shutdown") {
			t.Errorf("the runc service's own Shutdown was called: %s", c)
		}
	}
	// Both services' events leave through the one ordered forwarder.
	topics, _ := p.events.snapshot()
	if n := strings.Count(strings.Join(topics, " "), topicTaskCreate); n != 3 {
		t.Errorf("events %v: %d creates, want 3 (two from runc, one partition)", topics, n)
	}
}

func TestDispatcherKeepsExplicitRuncOptions(t *testing.T) {
	p := newPod(t)
	given, err := typeurl.MarshalAnyToProto(&runcoptions.Options{BinaryName: "/opt/runc", Root: "/run/other"})
	if err != nil {
		t.Fatal(err)
	}
	bundle := p.bundle(t, "c1", nil, `{"org.runphi.runtime":"runc"}`)
	if _, err := p.tasks.Create(context.Background(), &taskv3.CreateTaskRequest{ID: "c1", Bundle: bundle, Options: given}); err != nil {
		t.Fatal(err)
	}
	if o := p.runc.createOpts[0]; o.GetBinaryName() != "/opt/runc" || o.GetRoot() != "/run/other" {
		t.Fatalf("runc got %v, want the options the client sent", o)
	}
}

func TestDispatcherRuncOptionsFromConfig(t *testing.T) {
	p := newPod(t)
	writeFile(t, p.config, "backend = \"sim\"\n[runc]\nbinary = \"/usr/sbin/runc\"\nroot = \"/run/runphi-runc\"\nsystemd_cgroup = true\n")
	bundle := p.bundle(t, "c1", nil, `{"org.runphi.runtime":"runc"}`)
	if _, err := p.tasks.Create(context.Background(), &taskv3.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if o := p.runc.createOpts[0]; o.GetBinaryName() != "/usr/sbin/runc" || o.GetRoot() != "/run/runphi-runc" || !o.GetSystemdCgroup() {
		t.Fatalf("runc got %v, want the [runc] table of the configuration", o)
	}
}

func TestDispatcherFailedRuncCreateFreesTheID(t *testing.T) {
	p := newPod(t)
	p.runc.createErr = fmt.Errorf("runc create failed: %w", errdefs.ErrInvalidArgument)
	ctx := context.Background()
	bundle := p.bundle(t, "c1", nil, `{"org.runphi.runtime":"runc"}`)
	_, err := p.tasks.Create(ctx, &taskv3.CreateTaskRequest{ID: "c1", Bundle: bundle})
	isErr(t, err, errdefs.ErrInvalidArgument, "Create that runc refuses")
	if _, err := os.Stat(filepath.Join(bundle, taskstate.FileName)); !os.IsNotExist(err) {
		t.Errorf("state after a failed runc create: %v", err)
	}
	p.runc.createErr = nil
	if _, err := p.tasks.Create(ctx, &taskv3.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
		t.Fatalf("Create again after the failure: %v", err)
	}
}

func TestDispatcherRejectsAnUnknownRuntimeAnnotation(t *testing.T) {
	p := newPod(t)
	bundle := p.bundle(t, "c1", nil, `{"org.runphi.runtime":"kata"}`)
	_, err := p.tasks.Create(context.Background(), &taskv3.CreateTaskRequest{ID: "c1", Bundle: bundle})
	isErr(t, err, errdefs.ErrInvalidArgument, "Create with org.runphi.runtime=kata")
	if p.started != 0 || len(p.runc.snapshot()) != 0 {
		t.Errorf("runc was involved: %v", p.runc.snapshot())
	}
}

func TestRuncPublisherForwardsInOrder(t *testing.T) {
	rec := &recorder{}
	pub := &runcPublisher{events: rec, closed: make(chan struct{})}
	ctx := context.Background()
	pub.Publish(ctx, "/tasks/exec-added", &eventstypes.TaskExecAdded{ContainerID: "c", ExecID: "e"})
	pub.Publish(ctx, "/tasks/oom", &eventstypes.TaskOOM{ContainerID: "c"})
	if err := pub.Publish(ctx, "/x", "not a message"); err == nil {
		t.Error("a non-protobuf event was accepted")
	}
	if topics, _ := rec.snapshot(); strings.Join(topics, " ") != "/tasks/exec-added /tasks/oom" {
		t.Fatalf("forwarded %v", topics)
	}
	pub.Close()
	pub.Close() // the runc service closes once; a second close must not panic
	select {
	case <-pub.closed:
	default:
		t.Fatal("Close did not signal the drain")
	}
}

func TestRuncTasksCloseWaitsForTheDrain(t *testing.T) {
	var sd shutdown.Service
	factory := func(ctx context.Context, pub cshim.Publisher, s shutdown.Service) (taskv3.TTRPCTaskService, error) {
		sd = s
		// What the real service's event goroutine does at shutdown.
		go func() { <-s.Done(); pub.Close() }()
		return &fakeRunc{pub: pub}, nil
	}
	r := newRuncTasks(context.Background(), "default", &recorder{}, factory)
	r.close(context.Background()) // never started: nothing to do
	if _, err := r.service(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5e9)
	defer cancel()
	r.close(ctx)
	if ctx.Err() != nil {
		t.Fatal("close waited for its deadline")
	}
	if !errors.Is(sd.Err(), shutdown.ErrShutdown) {
		t.Fatalf("runc shutdown err = %v, want it shut down", sd.Err())
	}
}
