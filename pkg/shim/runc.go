package shim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runcproc "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/process"
	runcshim "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	runctask "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	cshim "github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	gorunc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/runphi/runphi/pkg/config"
)

// Containers that are not partitions — a pod's pause container, sidecars,
// images without a boot description — run on runc through containerd's own
// runc task service (github.com/containerd/containerd/v2, the
// containerd-shim-runc-v2 task package), unchanged: it owns their stdio,
// ttys, execs, exits, OOM events, cgroup stats and the runc bookkeeping in
// their bundles. This file adapts it to the shim: events go through the
// shim's ordered forwarder, the shim becomes the child subreaper the service
// expects, and its shutdown runs when the whole process exits.

// runcServiceFactory builds the runc task service; tests pass a fake.
type runcServiceFactory func(ctx context.Context, pub cshim.Publisher, sd shutdown.Service) (taskv3.TTRPCTaskService, error)

// runcTasks starts the runc task service on first use, so a shim that
// serves only partitions neither starts runc's goroutines nor becomes a
// subreaper.
type runcTasks struct {
	ctx     context.Context // the process's; carries the namespace runc needs
	events  publisher
	factory runcServiceFactory

	mu  sync.Mutex
	svc taskv3.TTRPCTaskService // guarded by mu; nil until first use
	sd  shutdown.Service        // guarded by mu
	pub *runcPublisher          // guarded by mu
}

func newRuncTasks(ctx context.Context, namespace string, events publisher, factory runcServiceFactory) *runcTasks {
	if factory == nil {
		factory = newRuncTaskService
	}
	return &runcTasks{ctx: namespaces.WithNamespace(ctx, namespace), events: events, factory: factory}
}

// service returns the runc task service, starting it if need be.
func (r *runcTasks) service() (taskv3.TTRPCTaskService, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.svc != nil {
		return r.svc, nil
	}
	// The service's own shutdown must wait for the process to end: its
	// callbacks remove the shim's socket (read from ./address) and close the
	// console epoll, and its event goroutine drains and stops on Done.
	_, sd := shutdown.WithShutdown(context.WithoutCancel(r.ctx))
	pub := &runcPublisher{events: r.events, closed: make(chan struct{})}
	svc, err := r.factory(r.ctx, pub, sd)
	if err != nil {
		return nil, fmt.Errorf("start the runc task service: %w", err)
	}
	r.svc, r.sd, r.pub = svc, sd, pub
	log.G(r.ctx).Info("started the runc task service")
	return svc, nil
}

// running returns the service if it was started.
func (r *runcTasks) running() taskv3.TTRPCTaskService {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.svc
}

// close shuts the runc task service down, once the shim has no task left:
// it runs the service's shutdown callbacks and waits, until ctx ends, for
// its queued events to reach the shim's forwarder. It must run while the
// shim still holds its socket: one callback removes the socket path, which
// after the listener closed may belong to a new shim of the same group.
func (r *runcTasks) close(ctx context.Context) {
	r.mu.Lock()
	sd, pub := r.sd, r.pub
	r.mu.Unlock()
	if sd == nil {
		return
	}
	sd.Shutdown()
	select {
	case <-sd.Done():
	case <-ctx.Done():
		log.G(ctx).Warn("the runc task service did not finish its shutdown")
		return
	}
	select {
	case <-pub.closed:
	case <-ctx.Done():
		log.G(ctx).Warn("the runc task service did not hand over its last events")
	}
}

// newRuncTaskService is containerd's runc task service, with what it
// expects of the process around it: it reaps its children through
// containerd's reaper (go-runc's Monitor), so the shim reaps every exited
// child on SIGCHLD, and it is the child subreaper of the containers, so
// that their processes stay its children after runc exits.
func newRuncTaskService(ctx context.Context, pub cshim.Publisher, sd shutdown.Service) (taskv3.TTRPCTaskService, error) {
	if err := reaper.SetSubreaper(1); err != nil {
		return nil, fmt.Errorf("become a child subreaper: %w", err)
	}
	signals := make(chan os.Signal, 32)
	signal.Notify(signals, unix.SIGCHLD)
	go func() {
		for range signals {
			if err := reaper.Reap(); err != nil {
				log.G(ctx).WithError(err).Error("reap exited children")
			}
		}
	}()
	return runctask.NewTaskService(ctx, pub, sd)
}

// runcPublisher hands the runc task service's events (it forwards them
// from one goroutine, in order) to the shim's forwarder, so that all events
// of the shim leave through one ordered queue. Close is called by that
// goroutine once it has drained at shutdown.
type runcPublisher struct {
	events publisher
	once   sync.Once
	closed chan struct{}
}

var _ cshim.Publisher = (*runcPublisher)(nil)

func (p *runcPublisher) Publish(ctx context.Context, topic string, event events.Event) error {
	m, ok := event.(proto.Message)
	if !ok {
		return fmt.Errorf("publish %s: event %T is not a protobuf message", topic, event)
	}
	p.events.publish(topic, m)
	return nil
}

func (p *runcPublisher) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

// runcOptionsName is the full name of the runc shim's options type.
var runcOptionsName = string((&runcoptions.Options{}).ProtoReflect().Descriptor().FullName())

// runcOptions are the options the runc task service gets for a container.
// The runc service reads CreateTaskRequest.options as its own Options type
// (and fails on any other), while CRI and ctr send runphi's runtime options:
// runc options given explicitly are kept, anything else is replaced by
// runc options built from the configuration's [runc] table.
func runcOptions(cfg config.Config, given *anypb.Any) (*anypb.Any, error) {
	if url := given.GetTypeUrl(); url != "" && url[strings.LastIndexByte(url, '/')+1:] == runcOptionsName {
		return given, nil
	}
	opts, err := typeurl.MarshalAnyToProto(&runcoptions.Options{
		BinaryName:    cfg.Runc.Binary,
		Root:          cfg.Runc.Root,
		SystemdCgroup: cfg.Runc.SystemdCgroup,
	})
	if err != nil {
		return nil, fmt.Errorf("encode runc options: %w", err)
	}
	return opts, nil
}

// runcContext is an RPC context for the runc task service, which reads the
// namespace from it (runc's state lives under <root>/<namespace>). A shim
// serves exactly one namespace.
func runcContext(ctx context.Context, namespace string) context.Context {
	if ns, ok := namespaces.Namespace(ctx); ok && ns == namespace {
		return ctx
	}
	return namespaces.WithNamespace(ctx, namespace)
}

// runcExit is what `delete` reports for an ordinary container whose shim
// died.
type runcExit struct {
	pid    int
	status int
	at     time.Time
}

// deleteRunc cleans up an ordinary container after its shim died, as
// containerd's runc shim does in its own `delete`: force-delete the runc
// container (its runtime binary and root are in the bundle's runtime and
// options.json files, written by the runc service), unmount the rootfs, and
// report the exit the service recorded in exit.json, or 137 when none was.
func deleteRunc(ctx context.Context, bundle, id, namespace string) (runcExit, error) {
	binary, err := runcshim.ReadRuntime(bundle)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return runcExit{}, fmt.Errorf("read the runc binary of task %q: %w", id, err)
	}
	opts, err := runcshim.ReadOptions(bundle)
	if err != nil {
		return runcExit{}, fmt.Errorf("read the runc options of task %q: %w", id, err)
	}
	root, systemd := runcproc.RuncRoot, false
	if opts != nil {
		if opts.Root != "" {
			root = opts.Root
		}
		systemd = opts.SystemdCgroup
	}
	r := runcproc.NewRunc(root, bundle, namespace, binary, systemd)
	if err := r.Delete(ctx, id, &gorunc.DeleteOpts{Force: true}); err != nil {
		// Gone already, most likely: runc only knows running or created
		// containers. containerd's runc shim carries on the same way.
		log.G(ctx).WithError(err).Warn("runc delete --force")
	}
	fallback := time.Now()
	if err := mount.UnmountRecursive(filepath.Join(bundle, "rootfs"), 0); err != nil {
		return runcExit{}, fmt.Errorf("unmount the rootfs of task %q: %w", id, err)
	}
	if e, err := runcshim.ReadExitStatus(bundle); err == nil {
		return runcExit{pid: e.Pid, status: e.Status, at: e.Timestamp}, nil
	}
	pid, err := gorunc.ReadPidFile(filepath.Join(bundle, runcproc.InitPidFile))
	if err != nil {
		pid = 0
	}
	return runcExit{pid: pid, status: int(exitStatusKilled), at: fallback}, nil
}
