package shim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	bootstrap "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/runphi/runphi/pkg/partition"
	"github.com/runphi/runphi/pkg/taskstate"
)

// RuntimeName is the runtime name containerd knows this shim by.
const RuntimeName = "io.containerd.runphi.v2"

// Info is the build's identity, set by cmd/containerd-shim-runphi-v2 from
// -ldflags -X.
type Info struct {
	Version  string
	Revision string
	// OpenSimulator opens backend = "sim". The shim leaves the choice of
	// implementations to the binary (cmd/internal/backend); nil makes
	// that backend fail with FailedPrecondition.
	OpenSimulator SimulatorOpener
}

// maxSocketPath is the longest unix socket path Linux accepts: sun_path has
// 108 bytes including the terminating NUL.
const maxSocketPath = 107

// exitStatusKilled is what `delete` reports for a partition it had to tear
// down after its shim died: 128+SIGKILL, as the runc shim does.
const exitStatusKilled = 128 + uint32(unix.SIGKILL)

// flags are the command line containerd passes to every invocation.
type flags struct {
	namespace     string
	address       string // containerd's gRPC socket
	publishBinary string // legacy event publisher; unused, events go over ttrpc
	id            string
	bundle        string // only on `delete`; cwd is the bundle otherwise
	socket        string // accepted for old daemons; unused
	debug         bool
	version       bool
	info          bool
	action        string // "start", "delete" or "" (the long-lived server)
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	var f flags
	name := "containerd-shim-runphi-v2"
	if len(args) > 0 {
		name = filepath.Base(args[0])
		args = args[1:]
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.namespace, "namespace", "", "containerd namespace of the task")
	fs.StringVar(&f.address, "address", "", "containerd's gRPC socket")
	fs.StringVar(&f.publishBinary, "publish-binary", "", "containerd binary (unused: events go over ttrpc)")
	fs.StringVar(&f.id, "id", "", "id of the task")
	fs.StringVar(&f.bundle, "bundle", "", "bundle directory (delete)")
	fs.StringVar(&f.socket, "socket", "", "unused; accepted for old daemons")
	fs.BoolVar(&f.debug, "debug", false, "log at debug level")
	fs.BoolVar(&f.version, "v", false, "print the version and exit")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	fs.BoolVar(&f.info, "info", false, "read runtime options on stdin, write a protobuf RuntimeInfo on stdout")
	if err := fs.Parse(args); err != nil {
		return flags{}, err
	}
	switch rest := fs.Args(); len(rest) {
	case 0:
	case 1:
		f.action = rest[0]
	default:
		return flags{}, fmt.Errorf("want at most one action (start or delete), got %q", rest)
	}
	return f, nil
}

// Run is the whole shim binary: it parses args (os.Args) and runs the
// invocation containerd asked for. It returns the process exit code.
func Run(ctx context.Context, args []string, info Info) int {
	// Nothing may reach stdout or stderr during `start` but the answer,
	// so the global logger writes nowhere until a mode sets it up.
	logrus.SetOutput(io.Discard)
	f, err := parseFlags(args, os.Stderr)
	if err != nil {
		return 2
	}
	m := &manager{flags: f, build: info, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	if err := m.run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", RuntimeName, err)
		return 1
	}
	return 0
}

// manager runs one invocation of the binary.
type manager struct {
	flags
	build  Info
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func (m *manager) run(ctx context.Context) error {
	switch {
	case m.version:
		m.printVersion()
		return nil
	case m.info:
		return m.runtimeInfo()
	}
	switch m.action {
	case "start":
		return m.start()
	case "delete":
		return m.delete(ctx)
	case "":
		return m.serve(ctx)
	}
	return fmt.Errorf("unknown action %q: want start or delete", m.action)
}

func (m *manager) printVersion() {
	fmt.Fprintf(m.stdout, "%s (%s):\n  Version:  %s\n  Revision: %s\n  Go version: %s\n",
		filepath.Base(os.Args[0]), RuntimeName, m.build.Version, m.build.Revision, runtime.Version())
}

// runtimeInfo answers `-info` (containerd 2.2+ runs it for every non-runc
// runtime): the runtime options on stdin, possibly none, are echoed back.
func (m *manager) runtimeInfo() error {
	in, err := io.ReadAll(m.stdin)
	if err != nil {
		return fmt.Errorf("read runtime options: %w", err)
	}
	ri := &types.RuntimeInfo{
		Name:    RuntimeName,
		Version: &types.RuntimeVersion{Version: m.build.Version, Revision: m.build.Revision},
	}
	if len(in) > 0 {
		var options anypb.Any
		if err := proto.Unmarshal(in, &options); err != nil {
			return fmt.Errorf("decode runtime options on stdin: %w", err)
		}
		ri.Options = &options
	}
	out, err := proto.Marshal(ri)
	if err != nil {
		return fmt.Errorf("marshal runtime info: %w", err)
	}
	_, err = m.stdout.Write(out)
	return err
}

// start is the `start` handshake: bind the task's socket, hand it to a
// long-lived copy of this binary, write <bundle>/address and answer in the
// caller's protocol. containerd runs it with the bundle as the working
// directory.
func (m *manager) start() error {
	in, err := io.ReadAll(m.stdin)
	if err != nil {
		return fmt.Errorf("read start input: %w", err)
	}
	params := parseBootstrapParams(in, m.id, m.namespace)

	grpcAddress := m.address
	if grpcAddress == "" && params != nil {
		grpcAddress = params.GetContainerdGrpcAddress()
	}
	group, err := groupOf(cwd(), m.id)
	if err != nil {
		return err
	}
	dir := socketDir(params, grpcAddress)
	path, err := socketPath(dir, grpcAddress, m.namespace, group)
	if err != nil {
		return err
	}
	address := "unix://" + path

	l, version, err := listenSocket(path)
	if err != nil {
		return err
	}
	if l != nil { // nil: a server of the group already answers there
		if err := m.spawn(l, params); err != nil {
			os.Remove(path)
			return err
		}
	}
	// containerd 1.6 and 1.7 reconnect through this file after a restart.
	if err := os.WriteFile("address", []byte(address), 0o600); err != nil {
		return fmt.Errorf("write %s/address: %w", cwd(), err)
	}
	answer, err := startAnswer(params, address, version)
	if err != nil {
		return err
	}
	_, err = m.stdout.Write(answer)
	return err
}

// groupAnnotations put a container into the shim of an existing group, in
// the order containerd's runc shim reads them: an explicit group for users
// that are not CRI, then the pod's sandbox id, which CRI sets on the pause
// container (its own id) and on every container of the pod.
var groupAnnotations = []string{runcGroupAnnotation, criSandboxID}

// groupOf returns the group of task id from the spec in its bundle: the
// first group annotation present, else the task's own id. A bundle without
// a spec (a daemon that writes it later, a test) is a group of its own; a
// spec that does not decode is an error, since guessing could split a pod
// over two shims.
func groupOf(bundle, id string) (string, error) {
	path := filepath.Join(bundle, "config.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return id, nil
	}
	if err != nil {
		return "", fmt.Errorf("read the group of task %q: %w", id, err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return "", fmt.Errorf("read the group of task %q from %s: %w", id, path, err)
	}
	for _, a := range groupAnnotations {
		if g := spec.Annotations[a]; g != "" {
			return g, nil
		}
	}
	return id, nil
}

// socketDir is where the task sockets live: the 2.3+ daemon's socket_dir,
// or "s" beside containerd's own socket, which keeps a private daemon's
// sockets private.
func socketDir(params *bootstrap.BootstrapParams, grpcAddress string) string {
	if d := params.GetSocketDir(); d != "" {
		return d
	}
	return filepath.Join(filepath.Dir(strings.TrimPrefix(grpcAddress, "unix://")), "s")
}

// socketPath derives the socket of a group the way containerd's own shims
// do, from a hash of the daemon address, namespace and group, so the path
// length does not depend on the ids.
func socketPath(dir, grpcAddress, namespace, group string) (string, error) {
	sum := sha256.Sum256([]byte(filepath.Join(grpcAddress, namespace, group)))
	path := filepath.Join(dir, hex.EncodeToString(sum[:]))
	if len(path) > maxSocketPath {
		return "", fmt.Errorf("socket path %s is %d bytes, unix sockets allow %d; use a shorter containerd state or socket directory",
			path, len(path), maxSocketPath)
	}
	return path, nil
}

// listenSocket binds path (0600 in a 0700 directory) and returns the
// listener and the task API version a server started on it speaks. If a
// shim server that is not shutting down already serves there, it returns a
// nil listener and the highest task API version that server answers. A
// stale socket file is replaced; a server on its way out is waited for, so
// that its address is never handed to containerd just before it vanishes.
func listenSocket(path string) (*net.UnixListener, uint32, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, 0, fmt.Errorf("create socket directory: %w", err)
	}
	deadline := time.Now().Add(exitingServerWait)
	for {
		old := unix.Umask(0o177) // the socket is born 0600
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		unix.Umask(old)
		if err == nil {
			return l, bootstrapVersion, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			return nil, 0, fmt.Errorf("listen on %s: %w", path, err)
		}
		switch state, version := serverState(path); state {
		case serverServing:
			return nil, version, nil
		case serverGone:
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, 0, fmt.Errorf("remove stale socket: %w", err)
			}
		case serverExiting:
			if time.Now().After(deadline) {
				return nil, 0, fmt.Errorf("listen on %s: the shim serving there has been shutting down for %v: %w",
					path, exitingServerWait, unix.EADDRINUSE)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// exitingServerWait bounds how long `start` waits for a shim server that
// is shutting down to release the socket.
const exitingServerWait = 5 * time.Second

type socketServer int

const (
	serverGone    socketServer = iota // nothing accepts connections
	serverServing                     // a shim server answers Connect
	serverExiting                     // something listens but does not serve (a shim shutting down)
)

// serverState probes the socket at path with a task API Connect, and
// reports which task API the server speaks: a grouped `start` must announce
// the version of the server that is running, which after an upgrade may be
// an older shim than this binary (containerd#10888). It asks for v3 first;
// a server without the v3 service (ttrpc answers Unimplemented) is asked
// for v2.
func serverState(path string) (socketServer, uint32) {
	conn, err := net.DialTimeout("unix", path, 200*time.Millisecond)
	if err != nil {
		return serverGone, 0
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = taskv3.NewTTRPCTaskClient(client).Connect(ctx, &taskv3.ConnectRequest{})
	if err == nil {
		return serverServing, 3
	}
	if status.Code(err) != codes.Unimplemented {
		return serverExiting, 0
	}
	if _, err := taskv2.NewTTRPCTaskClient(client).Connect(ctx, &taskv2.ConnectRequest{}); err != nil {
		return serverExiting, 0
	}
	return serverServing, 2
}

// socketAnswers reports whether something accepts connections at path.
func socketAnswers(path string) bool {
	conn, err := net.DialTimeout("unix", path, 200*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// spawn starts the long-lived server: this binary without an action, same
// flags, the listener as fd 3, in its own session so that signals to the
// caller's process group do not reach it, and with /dev/null as stdio so
// that containerd's read of start's output ends when start exits.
func (m *manager) spawn(l *net.UnixListener, params *bootstrap.BootstrapParams) error {
	file, err := l.File()
	if err != nil {
		return fmt.Errorf("socket file descriptor: %w", err)
	}
	defer file.Close()
	// The child owns the socket now; closing our copy must not unlink it.
	l.SetUnlinkOnClose(false)
	defer l.Close()

	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	args := []string{"-namespace", m.namespace, "-id", m.id, "-address", m.address}
	if m.publishBinary != "" {
		args = append(args, "-publish-binary", m.publishBinary)
	}
	if m.debug || debugRequested(params) {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Env = os.Environ()
	if a := params.GetContainerdTtrpcAddress(); a != "" {
		cmd.Env = append(cmd.Env, ttrpcAddressEnv+"="+strings.TrimPrefix(a, "unix://"))
	}
	// The server tells containerd 1.6 by the absence of GRPC_ADDRESS, which
	// 1.7+ set; keep that true for a 2.3+ daemon that stops setting it.
	if a := params.GetContainerdGrpcAddress(); a != "" && os.Getenv(grpcAddressEnv) == "" {
		cmd.Env = append(cmd.Env, grpcAddressEnv+"="+strings.TrimPrefix(a, "unix://"))
	}
	cmd.ExtraFiles = []*os.File{file}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the shim server: %w", err)
	}
	return cmd.Process.Release()
}

// delete is the cleanup containerd runs after the shim died (or after a
// failed start): destroy the partition from the state file alone, unmount
// the rootfs, remove the state, report 137. An ordinary container is
// force-deleted with runc and reports the exit runc's service recorded. It
// never dials the old socket for long, so it is fast when that is gone,
// and it is idempotent.
func (m *manager) delete(ctx context.Context) error {
	// containerd logs delete's stderr as a warning.
	logrus.SetOutput(m.stderr)
	logrus.SetLevel(logrus.WarnLevel)
	bundle := m.bundle
	if bundle == "" {
		bundle = cwd()
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("id", m.id).WithField("namespace", m.namespace))

	var errs []error
	resp := &taskv3.DeleteResponse{ExitStatus: exitStatusKilled, ExitedAt: timestamppb.Now()}
	st, err := taskstate.Read(bundle)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		errs = append(errs, err)
	case st.Kind == taskstate.KindRunc:
		exit, err := deleteRunc(ctx, bundle, m.id, m.namespace)
		if err != nil {
			errs = append(errs, err)
			break
		}
		resp.Pid, resp.ExitStatus, resp.ExitedAt = uint32(exit.pid), uint32(exit.status), timestamppb.New(exit.at)
	default:
		resp.Pid = uint32(st.ShimPid)
		// A cell that cannot be destroyed does not fail the delete: the
		// container is gone for containerd either way, and a failed
		// delete would leave its bundle behind ("mkdir bundle: file
		// exists" on the next run with the id). The cell is left orphaned
		// in the ledger instead (destroyRecorded).
		destroyRecorded(ctx, st, m.build.OpenSimulator, destroyTimeout)
		if st.Mounted && st.Rootfs != "" {
			if err := unmountRootfs(st.Rootfs); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// A shim that died between mounting and writing its state still
	// leaves a mount here.
	if err := unmountRootfs(filepath.Join(bundle, "rootfs")); err != nil {
		errs = append(errs, err)
	}
	removeDeadSocket(bundle)
	if len(errs) > 0 {
		// The state stays, so a second delete can try again.
		return errors.Join(errs...)
	}
	if err := taskstate.Remove(bundle); err != nil {
		return err
	}
	out, err := proto.Marshal(resp)
	if err != nil {
		return fmt.Errorf("marshal delete response: %w", err)
	}
	_, err = m.stdout.Write(out)
	return err
}

// destroyTimeout bounds the destroy in `delete`: containerd kills the
// command after 5 s (io.containerd.timeout.shim.cleanup) and then reports
// 255 and keeps the bundle, so the rest of the cleanup must fit.
const destroyTimeout = 3 * time.Second

// destroyRecorded destroys the partition of a task whose shim died, through
// the backend the task was created on, and frees its ledger entry. The
// record in the state file names the cell; a shim that died inside
// partition.Create, before writing it, is found by its ledger entry (its
// owner, made by that shim). When the cell cannot be destroyed within
// timeout (an inmate that denies shutdown, a wedged or failing driver), the
// entry is marked orphaned: it keeps the cell's resources taken, frees the
// container id, and later allocations destroy the cell once they can. That
// is logged as an error, which containerd shows as a warning.
func destroyRecorded(ctx context.Context, st *taskstate.State, openSim SimulatorOpener, timeout time.Duration) {
	logger := log.G(ctx)
	be, err := openBackend(ctx, st.Config, openSim, false)
	if err != nil {
		logger.WithError(err).Error("PARTITION LEAKED: cannot reopen the backend of the task; its cell and ledger entry stay")
		return
	}
	rec := st.Partition
	if rec == nil {
		owner := st.Namespace + "/" + st.ID
		e, found, err := be.ledger.Lookup(owner)
		switch {
		case err != nil:
			logger.WithError(err).Error("PARTITION LEAKED: cannot read the ledger to find the task's cell")
			return
		case !found:
			return // the shim died before allocating anything
		case e.PID != st.ShimPid:
			logger.WithField("cell", e.Cell).WithField("pid", e.PID).
				Warn("the ledger entry of this container id was made by another shim; leaving it")
			return
		}
		rec = &taskstate.Record{Owner: owner, Cell: e.Cell, Ledger: be.ledger.Path()}
	}
	logger = logger.WithField("cell", rec.Cell)
	done := make(chan error, 1)
	go func() { done <- partition.DestroyRecord(ctx, be.driver, be.ledger, partition.Record(*rec)) }()
	select {
	case err = <-done:
	case <-time.After(timeout):
		err = fmt.Errorf("destroy cell %q: the hypervisor has not answered within %s: %w", rec.Cell, timeout, context.DeadlineExceeded)
	}
	if err == nil {
		return
	}
	logger.WithError(err).Error("CELL LEAKED: the cell of the dead shim's partition cannot be destroyed; " +
		"its ledger entry is marked orphaned and later partitions' allocations will try to destroy it again")
	if merr := be.ledger.MarkOrphaned(rec.Owner, err.Error()); merr != nil {
		logger.WithError(merr).Error("mark the ledger entry orphaned")
	}
}

// removeDeadSocket removes the socket named in <bundle>/address if nothing
// answers there any more, so that a dead shim leaves no socket behind
// (containerd#11409: dead sockets slow down daemon restarts).
func removeDeadSocket(bundle string) {
	data, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil {
		return
	}
	path := strings.TrimPrefix(string(bytes.TrimSpace(data)), "unix://")
	if path == "" || socketAnswers(path) {
		return
	}
	os.Remove(path)
}

func cwd() string {
	d, err := os.Getwd()
	if err != nil {
		return "."
	}
	return d
}
