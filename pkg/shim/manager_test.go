package shim

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootstrap "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/runphi/runphi/pkg/taskstate"
)

// The test binary doubles as the shim binary: with this variable set it
// runs Run instead of the tests, so `start` can re-execute itself exactly
// as the installed shim does.
const shimBinaryEnv = "RUNPHI_SHIM_TEST_BINARY"

func TestMain(m *testing.M) {
	if os.Getenv(shimBinaryEnv) == "1" {
		os.Exit(Run(context.Background(), os.Args, Info{Version: "test-version", Revision: "test-revision", OpenSimulator: openSimulator}))
	}
	os.Exit(m.Run())
}

// daemon plays the parts of containerd a shim invocation sees.
type daemon struct {
	dir    string // short, so socket paths stay short
	grpc   string // the -address flag
	events *fakeEvents
	ttrpc  string
}

func newDaemon(t *testing.T) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "rs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &daemon{dir: dir, grpc: filepath.Join(dir, "containerd.sock"), events: &fakeEvents{}}
	d.ttrpc = d.grpc + ".ttrpc"
	serveFakeEvents(t, d.ttrpc, d.events)
	return d
}

func (d *daemon) bundle(t *testing.T, id string) string {
	t.Helper()
	b := filepath.Join(d.dir, "bundles", id)
	if err := os.MkdirAll(filepath.Join(b, "rootfs"), 0o711); err != nil {
		t.Fatal(err)
	}
	return b
}

// shim runs the binary the way containerd does: cwd = bundle, flags, stdin,
// combined output.
func (d *daemon) shim(t *testing.T, bundle, id string, stdin []byte, action ...string) ([]byte, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-namespace", "default", "-address", d.grpc, "-publish-binary", "/usr/bin/containerd", "-id", id}, action...)
	cmd := exec.Command(self, args...)
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), shimBinaryEnv+"=1", ttrpcAddressEnv+"="+d.ttrpc)
	cmd.Stdin = bytes.NewReader(stdin)
	if action[len(action)-1] == "delete" {
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if stderr.Len() > 0 {
			t.Logf("delete stderr: %s", stderr.Bytes())
		}
		return out, err
	}
	return cmd.CombinedOutput() // what containerd 1.6 reads
}

func dialTTRPC(t *testing.T, address string) *ttrpc.Client {
	t.Helper()
	conn, err := net.Dial("unix", strings.TrimPrefix(address, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return c
}

// waitGone waits for the server to remove its socket on exit.
func waitGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("socket %s still there after Shutdown", path)
}

func TestStartLegacyCaller(t *testing.T) {
	d := newDaemon(t)
	bundle := d.bundle(t, "t1")
	// containerd opens the read side of the log FIFO before start.
	logPath := filepath.Join(bundle, "log")
	if err := unix.Mkfifo(logPath, 0o600); err != nil {
		t.Fatal(err)
	}
	logFIFO, err := os.OpenFile(logPath, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer logFIFO.Close()

	out, err := d.shim(t, bundle, "t1", nil, "start")
	if err != nil {
		t.Fatalf("start: %v: %s", err, out)
	}
	want, err := socketPath(filepath.Join(d.dir, "s"), d.grpc, "default", "t1")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "unix://"+want {
		t.Fatalf("start printed %q, want exactly the plain address unix://%s", out, want)
	}
	addressFile, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil || string(addressFile) != string(out) {
		t.Fatalf("address file %q (%v), want %q", addressFile, err, out)
	}
	if fi, err := os.Stat(want); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v, %v; want mode 0600", want, fi, err)
	}

	client := taskv2.NewTTRPCTaskClient(dialTTRPC(t, string(out)))
	ctx := context.Background()
	conn, err := client.Connect(ctx, &taskv2.ConnectRequest{ID: "t1"})
	if err != nil {
		t.Fatalf("v2 Connect: %v", err)
	}
	if conn.GetShimPid() == 0 || int(conn.GetShimPid()) == os.Getpid() || conn.GetVersion() != "test-version" {
		t.Fatalf("Connect = %v, want the server's own pid and version test-version", conn)
	}

	t.Run("a second start finds the running server", func(t *testing.T) {
		again, err := d.shim(t, bundle, "t1", nil, "start")
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("second start = %q, %v; want %q", again, err, out)
		}
		c2, err := taskv2.NewTTRPCTaskClient(dialTTRPC(t, string(again))).Connect(ctx, &taskv2.ConnectRequest{ID: "t1"})
		if err != nil || c2.GetShimPid() != conn.GetShimPid() {
			t.Fatalf("Connect through the second answer = %v, %v; want shim pid %d", c2, err, conn.GetShimPid())
		}
	})

	if _, err := client.Shutdown(ctx, &taskv2.ShutdownRequest{ID: "t1"}); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Shutdown: %v", err)
	}
	waitGone(t, want)

	logs := make([]byte, 1<<16)
	n, _ := logFIFO.Read(logs)
	if !bytes.Contains(logs[:n], []byte("serving the task API")) {
		t.Errorf("the log FIFO got %q, want the server's log", logs[:n])
	}
}

func TestStartBootstrapCaller(t *testing.T) {
	d := newDaemon(t)
	bundle := d.bundle(t, "t1")
	socketDir := filepath.Join(d.dir, "s2")
	params, err := proto.Marshal(&bootstrap.BootstrapParams{
		InstanceID:             "t1",
		Namespace:              "default",
		ContainerdVersion:      "v2.4.2",
		ContainerdTtrpcAddress: "unix://" + d.ttrpc,
		ContainerdGrpcAddress:  "unix://" + d.grpc,
		SocketDir:              proto.String(socketDir),
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := d.shim(t, bundle, "t1", params, "start")
	if err != nil {
		t.Fatalf("start: %v: %s", err, out)
	}
	var res bootstrap.BootstrapResult
	if err := proto.Unmarshal(out, &res); err != nil {
		t.Fatalf("start printed %q, not a BootstrapResult: %v", out, err)
	}
	want, _ := socketPath(socketDir, d.grpc, "default", "t1")
	if res.GetVersion() != 3 || res.GetProtocol() != "ttrpc" || res.GetAddress() != "unix://"+want {
		t.Fatalf("result %v, want version 3, ttrpc, unix://%s", &res, want)
	}

	client := taskv3.NewTTRPCTaskClient(dialTTRPC(t, res.GetAddress()))
	ctx := context.Background()
	if _, err := client.Connect(ctx, &taskv3.ConnectRequest{ID: "t1"}); err != nil {
		t.Fatalf("v3 Connect: %v", err)
	}
	if _, err := client.Shutdown(ctx, &taskv3.ShutdownRequest{ID: "t1"}); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Shutdown: %v", err)
	}
	waitGone(t, want)
}

func TestDeleteWithoutState(t *testing.T) {
	d := newDaemon(t)
	bundle := d.bundle(t, "t1")
	// A dead shim's socket, named in the bundle's address file.
	dead := filepath.Join(d.dir, "dead.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if err := os.WriteFile(filepath.Join(bundle, "address"), []byte("unix://"+dead), 0o600); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 2; i++ { // idempotent
		begin := time.Now()
		out, err := d.shim(t, bundle, "t1", nil, "-bundle", bundle, "delete")
		if err != nil {
			t.Fatalf("delete #%d: %v", i+1, err)
		}
		if took := time.Since(begin); took > 5*time.Second {
			t.Errorf("delete #%d took %v", i+1, took)
		}
		var resp taskv3.DeleteResponse
		if err := proto.Unmarshal(out, &resp); err != nil {
			t.Fatalf("delete printed %q: %v", out, err)
		}
		if resp.GetExitStatus() != 137 || resp.GetExitedAt() == nil {
			t.Fatalf("delete = %v, want exit status 137 and a time", &resp)
		}
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("dead socket %s left behind: %v", dead, err)
	}
}

func TestInfoAndVersion(t *testing.T) {
	d := newDaemon(t)
	bundle := d.bundle(t, "t1")
	self, _ := os.Executable()

	cmd := exec.Command(self, "-info")
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), shimBinaryEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("-info: %v", err)
	}
	var info types.RuntimeInfo
	if err := proto.Unmarshal(out, &info); err != nil {
		t.Fatalf("-info printed %q: %v", out, err)
	}
	if info.GetName() != RuntimeName || info.GetVersion().GetVersion() != "test-version" || info.GetVersion().GetRevision() != "test-revision" {
		t.Fatalf("-info = %v", &info)
	}

	for _, flag := range []string{"-v", "-version"} {
		cmd := exec.Command(self, flag)
		cmd.Env = append(os.Environ(), shimBinaryEnv+"=1")
		out, err := cmd.Output()
		if err != nil || !bytes.Contains(out, []byte("test-version")) {
			t.Fatalf("%s = %q, %v", flag, out, err)
		}
	}
}

// TestDeleteAfterShimDied creates a partition in-process (the "dead shim"),
// then runs the `delete` binary on its bundle, as containerd does after
// losing the shim: the cell is destroyed, the ledger entry freed, the state
// removed and 137 reported, from the state file alone.
func TestDeleteAfterShimDied(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	bundle := h.bundle(t, "t1", partitionImage(inmateForever), "")
	if _, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := h.svc.Start(ctx, &taskv3.StartRequest{ID: "t1"}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if cells := h.simCells(t); len(cells) != 1 {
		t.Fatalf("cells %v, want one", cells)
	}

	d := &daemon{dir: h.dir, grpc: filepath.Join(h.dir, "c.sock")}
	// delete gets no configuration from anywhere: everything it needs
	// comes from the state file.
	out, err := d.shim(t, bundle, "t1", nil, "-bundle", bundle, "delete")
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	var resp taskv3.DeleteResponse
	if err := proto.Unmarshal(out, &resp); err != nil {
		t.Fatalf("delete printed %q: %v", out, err)
	}
	if resp.GetExitStatus() != 137 || resp.GetPid() != 4242 {
		t.Fatalf("delete = %v, want 137 and the recorded pid 4242", &resp)
	}
	if cells := h.simCells(t); len(cells) != 0 {
		t.Errorf("cells %v left after delete", cells)
	}
	if _, err := os.Stat(filepath.Join(bundle, taskstate.FileName)); !os.IsNotExist(err) {
		t.Errorf("state file after delete: %v", err)
	}
	h.svc.backendMu.Lock()
	defer h.svc.backendMu.Unlock()
	if len(h.svc.backends) != 1 {
		t.Fatalf("%d backends, want the one the task used", len(h.svc.backends))
	}
	for _, b := range h.svc.backends {
		entries, err := b.ledger.Entries()
		if err != nil || len(entries) != 0 {
			t.Errorf("ledger entries %v (%v) after delete, want none", entries, err)
		}
	}
}

func TestGroupOf(t *testing.T) {
	cases := []struct {
		name    string
		spec    string // config.json; empty: none
		want    string
		wantErr bool
	}{
		{"no spec: a group of its own", "", "c1", false},
		{"no group annotation: a group of its own", `{"annotations":{"a":"b"}}`, "c1", false},
		{"a CRI container joins its pod", `{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}`, "pod1", false},
		{"the runc group annotation wins, as in containerd's runc shim",
			`{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1","io.containerd.runc.v2.group":"g1"}}`, "g1", false},
		{"an empty annotation is no group", `{"annotations":{"io.kubernetes.cri.sandbox-id":""}}`, "c1", false},
		{"a spec that does not decode is an error, not a guess", `{"annotations":`, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bundle := t.TempDir()
			if tc.spec != "" {
				writeFile(t, filepath.Join(bundle, "config.json"), tc.spec)
			}
			got, err := groupOf(bundle, "c1")
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "config.json") {
					t.Fatalf("groupOf = %q, %v; want an error naming config.json", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("groupOf = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestStartGroupsAPod runs `start` for the pause container of a pod and
// for a container of the same pod, as containerd 1.6 (and 2.x with a
// version-2 shim) does for every container: the second start returns the
// running server's address, so the pod has one shim process. A container
// of another pod gets its own.
func TestStartGroupsAPod(t *testing.T) {
	d := newDaemon(t)
	bundles := map[string]string{}
	for id, pod := range map[string]string{"pause1": "pause1", "c1": "pause1", "pause2": "pause2"} {
		bundles[id] = d.bundle(t, id)
		writeFile(t, filepath.Join(bundles[id], "config.json"),
			`{"annotations":{"io.kubernetes.cri.sandbox-id":"`+pod+`"}}`)
	}
	ctx := context.Background()
	shimPid := func(address, id string) uint32 {
		t.Helper()
		c, err := taskv2.NewTTRPCTaskClient(dialTTRPC(t, address)).Connect(ctx, &taskv2.ConnectRequest{ID: id})
		if err != nil {
			t.Fatalf("Connect %s: %v", address, err)
		}
		return c.GetShimPid()
	}

	pause1, err := d.shim(t, bundles["pause1"], "pause1", nil, "start")
	if err != nil {
		t.Fatalf("start pause1: %v: %s", err, pause1)
	}
	want, _ := socketPath(filepath.Join(d.dir, "s"), d.grpc, "default", "pause1")
	if string(pause1) != "unix://"+want {
		t.Fatalf("start pause1 = %q, want the pod's socket unix://%s", pause1, want)
	}
	c1, err := d.shim(t, bundles["c1"], "c1", nil, "start")
	if err != nil || string(c1) != string(pause1) {
		t.Fatalf("start c1 = %q, %v; want the pod's address %q", c1, err, pause1)
	}
	if a, _ := os.ReadFile(filepath.Join(bundles["c1"], "address")); string(a) != string(pause1) {
		t.Errorf("c1's address file %q, want the pod's address (1.6 reconnects through it)", a)
	}
	// A 2.3+ daemon joining the pod gets the version of the running server.
	params, _ := proto.Marshal(&bootstrap.BootstrapParams{InstanceID: "c1", Namespace: "default",
		ContainerdGrpcAddress: "unix://" + d.grpc, ContainerdTtrpcAddress: "unix://" + d.ttrpc})
	out, err := d.shim(t, bundles["c1"], "c1", params, "start")
	var res bootstrap.BootstrapResult
	if err != nil || proto.Unmarshal(out, &res) != nil || res.GetAddress() != string(pause1) || res.GetVersion() != 3 {
		t.Fatalf("2.3+ start of c1 = %v (%q), %v; want %s, version 3", &res, out, err, pause1)
	}
	pause2, err := d.shim(t, bundles["pause2"], "pause2", nil, "start")
	if err != nil || string(pause2) == string(pause1) {
		t.Fatalf("start pause2 = %q, %v; want a socket of its own", pause2, err)
	}
	if a, b := shimPid(string(pause1), "c1"), shimPid(string(pause2), "pause2"); a == b {
		t.Fatalf("two pods share shim process %d", a)
	}

	for _, address := range []string{string(pause1), string(pause2)} {
		client := taskv2.NewTTRPCTaskClient(dialTTRPC(t, address))
		if _, err := client.Shutdown(ctx, &taskv2.ShutdownRequest{}); err != nil && !strings.Contains(err.Error(), "closed") {
			t.Fatalf("Shutdown: %v", err)
		}
		waitGone(t, strings.TrimPrefix(address, "unix://"))
	}
}

// TestDeleteAfterRuncShimDied runs `delete` on the bundle of an ordinary
// container whose shim died: it reports the exit the runc service recorded
// in exit.json (not 137) and removes the state, even though runc no longer
// knows the container.
func TestDeleteAfterRuncShimDied(t *testing.T) {
	d := newDaemon(t)
	bundle := d.bundle(t, "r1")
	if err := taskstate.Write(&taskstate.State{Kind: taskstate.KindRunc, ID: "r1", Namespace: "default", Bundle: bundle, ShimPid: 99}); err != nil {
		t.Fatal(err)
	}
	// What containerd's runc task service writes into a bundle.
	writeFile(t, filepath.Join(bundle, "options.json"), `{"binary_name":"/nonexistent/runc"}`)
	writeFile(t, filepath.Join(bundle, "exit.json"), `{"Timestamp":"2026-12-01T10:00:00Z","Pid":4321,"Status":7}`)

	out, err := d.shim(t, bundle, "r1", nil, "-bundle", bundle, "delete")
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	var resp taskv3.DeleteResponse
	if err := proto.Unmarshal(out, &resp); err != nil {
		t.Fatalf("delete printed %q: %v", out, err)
	}
	if resp.GetPid() != 4321 || resp.GetExitStatus() != 7 || resp.GetExitedAt().AsTime().Format(time.RFC3339) != "2026-12-01T10:00:00Z" {
		t.Fatalf("delete = %v, want runc's recorded exit: pid 4321, status 7", &resp)
	}
	if _, err := os.Stat(filepath.Join(bundle, taskstate.FileName)); !os.IsNotExist(err) {
		t.Errorf("state file after delete: %v", err)
	}
}
