package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/config"
)

// ttrpcAddressEnv names containerd's ttrpc socket, where events go. Every
// daemon version sets it; for 2.3+ `start` copies the bootstrap value in.
const ttrpcAddressEnv = "TTRPC_ADDRESS"

// grpcAddressEnv names containerd's gRPC socket. containerd 1.7 and later
// set it for every shim, 1.6 does not: its absence is how the server knows
// it talks to a 1.6 daemon, whose error mapping lacks some codes.
const grpcAddressEnv = "GRPC_ADDRESS"

// listenerFD is the fd `start` hands the bound socket over on.
const listenerFD = 3

// How long the server waits, once it decided to exit, for replies in
// flight (containerd allows Shutdown 3 s) and for queued events.
const (
	serverShutdownTimeout = 2 * time.Second
	eventDrainTimeout     = 5 * time.Second
)

// serve is the long-lived shim process: it serves the task API on the
// socket inherited from `start` until Shutdown finds no task left, or the
// listener fails.
func (m *manager) serve(ctx context.Context) error {
	logFile := openShimLog()
	if logFile != nil {
		defer logFile.Close()
	}
	configureLogging(logFile, m.debug)
	ctx = log.WithLogger(ctx, log.G(ctx).WithFields(log.Fields{
		"runtime":   RuntimeName,
		"namespace": m.namespace,
		"pid":       os.Getpid(),
	}))

	l, err := inheritedListener()
	if err != nil {
		return err
	}
	socket := l.Addr().String()
	// containerd's own shims run with a low GC target to keep their RSS
	// near 10 MB; runphi's has the same job.
	debug.SetGCPercent(40)

	events := newForwarder(ctx, os.Getenv(ttrpcAddressEnv), m.namespace)
	svc := newService(ctx, serviceOptions{
		Namespace: m.namespace,
		Pid:       os.Getpid(),
		Version:   m.build.Version,
		Publisher: events,
		Config:    config.LoadOptions{},
		// containerd 1.6 turns codes it does not know into Unknown.
		Containerd16:  os.Getenv(grpcAddressEnv) == "",
		CgroupV2:      hostCgroupV2(),
		OpenSimulator: m.build.OpenSimulator,
	})
	go svc.warmBackend(cwd())
	runc := newRuncTasks(ctx, m.namespace, events, nil)
	tasks := newDispatcher(svc, runc)
	server, err := ttrpc.NewServer()
	if err != nil {
		return fmt.Errorf("create ttrpc server: %w", err)
	}
	registerTaskService(server, tasks)

	dumps := make(chan os.Signal, 1)
	signal.Notify(dumps, unix.SIGUSR1)
	defer signal.Stop(dumps)
	go dumpStacksOn(ctx, dumps)

	served := make(chan error, 1)
	go func() { served <- server.Serve(ctx, l) }()
	log.G(ctx).WithField("socket", socket).Info("serving the task API")

	var serveErr error
	select {
	case <-tasks.done():
	case serveErr = <-served:
		if errors.Is(serveErr, ttrpc.ErrServerClosed) {
			serveErr = nil
		}
		log.G(ctx).WithError(serveErr).Warn("listener closed; exiting")
	}
	// The socket file goes first, while this server still holds the
	// address: once the listener is closed, a new `start` for the same
	// group may find the path free and bind it, and removing the path
	// after that would strand the new server. The runc task service's
	// shutdown removes it too, so it runs here as well.
	rctx, cancel := context.WithTimeout(ctx, serverShutdownTimeout)
	runc.close(rctx)
	cancel()
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("remove the shim socket")
	}
	// Shutdown lets the reply to the Shutdown RPC reach containerd.
	sctx, cancel := context.WithTimeout(ctx, serverShutdownTimeout)
	if err := server.Shutdown(sctx); err != nil {
		server.Close()
	}
	cancel()
	dctx, cancel := context.WithTimeout(ctx, eventDrainTimeout)
	events.close(dctx)
	cancel()
	log.G(ctx).Info("shim exiting")
	return serveErr
}

// inheritedListener is the socket `start` bound, on fd 3.
func inheritedListener() (net.Listener, error) {
	f := os.NewFile(listenerFD, "shim-socket")
	if f == nil {
		return nil, errors.New("no socket on fd 3: the server is started by `start`, not by hand")
	}
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("no socket on fd 3 (the server is started by `start`, not by hand): %w", err)
	}
	return l, nil
}

// openShimLog opens the bundle's log FIFO, whose read end containerd holds
// and copies into its own log. O_NONBLOCK makes the open fail instead of
// hang when nobody reads; writes then block as usual, like any shim's.
func openShimLog() *os.File {
	f, err := os.OpenFile(filepath.Join(cwd(), "log"), os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil
	}
	return f
}

func configureLogging(out io.Writer, debugLevel bool) {
	if out == nil {
		out = io.Discard
	}
	logrus.SetOutput(out)
	logrus.SetFormatter(&logrus.TextFormatter{
		TimestampFormat: log.RFC3339NanoFixed,
		FullTimestamp:   true,
	})
	level := logrus.InfoLevel
	if debugLevel {
		level = logrus.DebugLevel
	}
	logrus.SetLevel(level)
}

// dumpStacksOn logs, on each signal (SIGUSR1), how many goroutines and open
// file descriptors the process has (one line: the leak checks of the
// reliability tests read it) and then every goroutine's stack.
func dumpStacksOn(ctx context.Context, signals <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-signals:
		}
		log.G(ctx).WithField("goroutines", runtime.NumGoroutine()).WithField("open_fds", openFDs()).
			Info("shim resources")
		buf := make([]byte, 64<<10)
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) {
				buf = buf[:n]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		log.G(ctx).Infof("=== goroutine stack dump ===\n%s\n=== end of goroutine stack dump ===", buf)
	}
}

// openFDs counts the process's open file descriptors; -1 if /proc cannot
// tell.
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory being read is one of them
}
