package shim

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
	"github.com/runphi/runphi/pkg/taskstate"
)

// Scripted inmates for the tests.
const (
	inmateHello   = "#!runphi-sim\nprint hello\nsleep 200ms\nprint bye\nexit\n"
	inmateForever = "#!runphi-sim\nprint up\nsleep 1h\n"
	inmateFails   = "#!runphi-sim\nprint oops\nfail\n"
)

// host is one simulated node: a simulator directory, a state directory and
// a configuration file selecting them.
type host struct {
	dir    string
	config string
	simDir string
	events *recorder
	svc    *service
}

func newHost(t *testing.T) *host {
	t.Helper()
	dir := t.TempDir()
	h := &host{dir: dir, simDir: filepath.Join(dir, "sim"), events: &recorder{}}
	h.config = writeFile(t, filepath.Join(dir, "runphi.toml"),
		"backend = \"sim\"\nsim_dir = \""+h.simDir+"\"\nstate_dir = \""+filepath.Join(dir, "state")+"\"\n")
	h.svc = newService(context.Background(), serviceOptions{
		Namespace:     "default",
		Pid:           4242,
		Version:       "test",
		Publisher:     h.events,
		OpenSimulator: openSimulator,
		Config: config.LoadOptions{
			Getenv:      func(string) string { return "" },
			DefaultPath: h.config,
			DevicePath:  filepath.Join(dir, "no-jailhouse"),
		},
	})
	// Registered after t.TempDir, so it runs before the dir is removed.
	t.Cleanup(h.removeLeftoverTasks)
	return h
}

// removeLeftoverTasks kills and deletes the tasks a test left running: a
// partition's watcher and console reader use the simulator's files until
// its task is deleted, and removing the temp dir under them fails the test
// (seen under -race). Errors are the test's business, not the cleanup's: a
// task may have exited, or have a Delete wedged on purpose.
func (h *host) removeLeftoverTasks() {
	h.svc.mu.Lock()
	var ids []string
	for id, t := range h.svc.tasks {
		if t != nil {
			ids = append(ids, id)
		}
	}
	h.svc.mu.Unlock()
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		h.svc.Kill(ctx, &taskv3.KillRequest{ID: id, Signal: 9, All: true})
		h.svc.Wait(ctx, &taskv3.WaitRequest{ID: id})
		h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: id})
		cancel()
	}
}

// bundle writes an OCI bundle whose rootfs holds files (image path →
// content), with the given annotations.
func (h *host) bundle(t *testing.T, id string, files map[string]string, annotations string) string {
	t.Helper()
	b := filepath.Join(h.dir, "bundles", id)
	for p, content := range files {
		full := filepath.Join(b, "rootfs", p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(b, "rootfs"), 0o711); err != nil {
		t.Fatal(err)
	}
	if annotations == "" {
		annotations = "{}"
	}
	writeFile(t, filepath.Join(b, "config.json"),
		`{"ociVersion":"1.2.0","root":{"path":"rootfs"},"process":{"args":["/boot/boot.bin"],"cwd":"/"},"annotations":`+annotations+`}`)
	return b
}

func partitionImage(inmate string) map[string]string {
	return map[string]string{
		"boot/config.json": `{"os_var":"zephyr","inmate":"/boot/boot.bin"}`,
		"boot/boot.bin":    inmate,
	}
}

// stdout makes a FIFO for the task's stdout and collects what reaches it.
type stdout struct {
	path string
	done chan struct{}
	mu   sync.Mutex
	data []byte
}

func newStdout(t *testing.T, dir string) *stdout {
	t.Helper()
	s := &stdout{path: filepath.Join(dir, "stdout"), done: make(chan struct{})}
	if err := unix.Mkfifo(s.path, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(s.done)
		f, err := os.Open(s.path) // blocks until the shim opens its end
		if err != nil {
			return
		}
		defer f.Close()
		data, _ := io.ReadAll(f)
		s.mu.Lock()
		s.data = data
		s.mu.Unlock()
	}()
	return s
}

func (s *stdout) wait(t *testing.T) string {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("stdout never reached EOF")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.data)
}

// isErr checks a gRPC error from an RPC against an errdefs class.
func isErr(t *testing.T, err, class error, what string) {
	t.Helper()
	if err == nil || !errors.Is(errgrpc.ToNative(err), class) {
		t.Fatalf("%s: err = %v, want %v", what, err, class)
	}
}

func (h *host) simCells(t *testing.T) []string {
	t.Helper()
	d, err := sim.Open(h.simDir, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cells, err := d.Cells()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range cells {
		if c.ID != 0 {
			names = append(names, c.Name)
		}
	}
	return names
}

func (h *host) assertTopics(t *testing.T, want ...string) []any {
	t.Helper()
	topics, events := h.events.snapshot()
	if strings.Join(topics, " ") != strings.Join(want, " ") {
		t.Fatalf("events %v, want %v", topics, want)
	}
	out := make([]any, len(events))
	for i, e := range events {
		out[i] = e
	}
	return out
}

func TestServiceRunToExit(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	bundle := h.bundle(t, "t1", partitionImage(inmateHello), "")
	out := newStdout(t, bundle)

	created, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle, Stdout: out.path})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if created.GetPid() != 4242 {
		t.Errorf("Create pid %d, want the shim's 4242", created.GetPid())
	}
	if _, err := os.Stat(filepath.Join(bundle, taskstate.FileName)); err != nil {
		t.Errorf("state file: %v", err)
	}
	if cells := h.simCells(t); len(cells) != 1 {
		t.Fatalf("simulator cells %v, want one", cells)
	}
	st, err := h.svc.State(ctx, &taskv3.StateRequest{ID: "t1"})
	if err != nil || st.GetStatus() != tasktypes.Status_CREATED || st.GetPid() != 4242 || st.GetBundle() != bundle || st.GetStdout() != out.path {
		t.Fatalf("State = %v, %v; want CREATED with pid, bundle and stdout", st, err)
	}

	_, err = h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle})
	isErr(t, err, errdefs.ErrAlreadyExists, "second Create")

	// Wait from several callers before the start.
	type waited struct {
		resp *taskv3.WaitResponse
		err  error
	}
	waits := make(chan waited, 3)
	for i := 0; i < 3; i++ {
		go func() {
			r, err := h.svc.Wait(ctx, &taskv3.WaitRequest{ID: "t1"})
			waits <- waited{r, err}
		}()
	}

	if _, err := h.svc.Start(ctx, &taskv3.StartRequest{ID: "t1"}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	_, err = h.svc.Start(ctx, &taskv3.StartRequest{ID: "t1"})
	isErr(t, err, errdefs.ErrFailedPrecondition, "second Start")

	for i := 0; i < 3; i++ {
		select {
		case w := <-waits:
			if w.err != nil || w.resp.GetExitStatus() != 0 || w.resp.GetExitedAt().AsTime().IsZero() {
				t.Fatalf("Wait = %v, %v; want exit 0 with a time", w.resp, w.err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Wait did not return after the inmate's exit")
		}
	}
	if got := out.wait(t); got != "hello\nbye\n" {
		t.Errorf("stdout %q, want the inmate's lines in order", got)
	}
	st, err = h.svc.State(ctx, &taskv3.StateRequest{ID: "t1"})
	if err != nil || st.GetStatus() != tasktypes.Status_STOPPED || st.GetExitStatus() != 0 {
		t.Fatalf("State = %v, %v; want STOPPED, 0", st, err)
	}
	if p, err := h.svc.Pids(ctx, &taskv3.PidsRequest{ID: "t1"}); err != nil || len(p.GetProcesses()) != 1 || p.GetProcesses()[0].GetPid() != 4242 {
		t.Fatalf("Pids = %v, %v", p, err)
	}
	_, err = h.svc.Kill(ctx, &taskv3.KillRequest{ID: "t1", Signal: 15})
	isErr(t, err, errdefs.ErrNotFound, "Kill after exit")

	del, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"})
	if err != nil || del.GetExitStatus() != 0 || del.GetPid() != 4242 {
		t.Fatalf("Delete = %v, %v", del, err)
	}
	evs := h.assertTopics(t, topicTaskCreate, topicTaskStart, topicTaskExit, topicTaskDelete)
	if e := evs[2].(*eventstypes.TaskExit); e.GetContainerID() != "t1" || e.GetID() != "t1" || e.GetExitStatus() != 0 || e.GetPid() != 4242 {
		t.Errorf("TaskExit %v", e)
	}
	if e := evs[0].(*eventstypes.TaskCreate); e.GetBundle() != bundle || e.GetIO().GetStdout() != out.path || e.GetPid() != 4242 {
		t.Errorf("TaskCreate %v", e)
	}

	for _, call := range []struct {
		name string
		err  error
	}{
		{"State after Delete", func() error { _, err := h.svc.State(ctx, &taskv3.StateRequest{ID: "t1"}); return err }()},
		{"Delete after Delete", func() error { _, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"}); return err }()},
		{"Pids after Delete", func() error { _, err := h.svc.Pids(ctx, &taskv3.PidsRequest{ID: "t1"}); return err }()},
	} {
		isErr(t, call.err, errdefs.ErrNotFound, call.name)
	}
	if cells := h.simCells(t); len(cells) != 0 {
		t.Errorf("simulator still has cells %v after Delete", cells)
	}
	if _, err := os.Stat(filepath.Join(bundle, taskstate.FileName)); !os.IsNotExist(err) {
		t.Errorf("state file after Delete: %v", err)
	}
	if _, err := h.svc.Shutdown(ctx, &taskv3.ShutdownRequest{ID: "t1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.svc.done():
	default:
		t.Error("Shutdown with no task left did not end the service")
	}
}

func TestServiceKill(t *testing.T) {
	for _, tc := range []struct {
		name   string
		signal uint32
		want   uint32
	}{
		{"SIGTERM stops the partition gracefully", 15, 143},
		{"SIGKILL destroys it", 9, 137},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			ctx := context.Background()
			bundle := h.bundle(t, "t1", partitionImage(inmateForever), "")
			if _, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle}); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if _, err := h.svc.Start(ctx, &taskv3.StartRequest{ID: "t1"}); err != nil {
				t.Fatalf("Start: %v", err)
			}
			st, _ := h.svc.State(ctx, &taskv3.StateRequest{ID: "t1"})
			if st.GetStatus() != tasktypes.Status_RUNNING {
				t.Fatalf("State %v, want RUNNING", st.GetStatus())
			}
			_, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"})
			isErr(t, err, errdefs.ErrFailedPrecondition, "Delete of a running task")
			_, err = h.svc.Exec(ctx, &taskv3.ExecProcessRequest{ID: "t1", ExecID: "e1"})
			isErr(t, err, errdefs.ErrNotImplemented, "Exec")
			// ctr run -t resizes right after Start; a serial console
			// ignores it rather than failing the client.
			if _, err := h.svc.ResizePty(ctx, &taskv3.ResizePtyRequest{ID: "t1", Width: 80, Height: 24}); err != nil {
				t.Errorf("ResizePty: %v", err)
			}

			if _, err := h.svc.Shutdown(ctx, &taskv3.ShutdownRequest{ID: "t1"}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-h.svc.done():
				t.Fatal("Shutdown ended the service while a task runs")
			default:
			}

			if _, err := h.svc.Kill(ctx, &taskv3.KillRequest{ID: "t1", Signal: tc.signal, All: true}); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			w, err := h.svc.Wait(wctx, &taskv3.WaitRequest{ID: "t1"})
			if err != nil || w.GetExitStatus() != tc.want {
				t.Fatalf("Wait = %v, %v; want %d", w, err, tc.want)
			}
			del, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"})
			if err != nil || del.GetExitStatus() != tc.want {
				t.Fatalf("Delete = %v, %v; want %d", del, err, tc.want)
			}
			h.assertTopics(t, topicTaskCreate, topicTaskStart, topicTaskExit, topicTaskDelete)
			if cells := h.simCells(t); len(cells) != 0 {
				t.Errorf("simulator still has cells %v", cells)
			}
		})
	}
}

func TestServiceInmateFails(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	bundle := h.bundle(t, "t1", partitionImage(inmateFails), "")
	if _, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := h.svc.Start(ctx, &taskv3.StartRequest{ID: "t1"}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	w, err := h.svc.Wait(wctx, &taskv3.WaitRequest{ID: "t1"})
	if err != nil || w.GetExitStatus() == 0 {
		t.Fatalf("Wait = %v, %v; want a non-zero status", w, err)
	}
	if _, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"}); err != nil {
		t.Fatal(err)
	}
	h.assertTopics(t, topicTaskCreate, topicTaskStart, topicTaskExit, topicTaskDelete)
}

func TestServiceDeleteNeverStarted(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	bundle := h.bundle(t, "t1", partitionImage(inmateForever), "")
	if _, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	evs := h.assertTopics(t, topicTaskCreate, topicTaskDelete)
	if e := evs[1].(*eventstypes.TaskDelete); e.GetExitedAt() != nil || e.GetExitStatus() != 0 {
		t.Errorf("TaskDelete of a never started task carries an exit: %v", e)
	}
	if cells := h.simCells(t); len(cells) != 0 {
		t.Errorf("simulator still has cells %v", cells)
	}
}

func TestServiceCreateErrors(t *testing.T) {
	cases := []struct {
		name        string
		files       map[string]string
		annotations string
		config      string // replaces the host's configuration when set
		want        error
		text        string
	}{
		{"image without a boot description is left to runc", map[string]string{"bin/sh": "x"}, "", "",
			errdefs.ErrFailedPrecondition, "runs it with runc"},
		{"annotation runc is left to runc", partitionImage(inmateHello), `{"org.runphi.runtime":"runc"}`, "",
			errdefs.ErrFailedPrecondition, "runs it with runc"},
		{"the CRI sandbox is left to runc", partitionImage(inmateHello), `{"io.kubernetes.cri.container-type":"sandbox"}`, "",
			errdefs.ErrFailedPrecondition, "runs it with runc"},
		{"malformed boot description names the file",
			map[string]string{"boot/config.json": `{"os_var": `, "boot/boot.bin": inmateHello}, "", "",
			errdefs.ErrInvalidArgument, "/boot/config.json"},
		{"no jailhouse and no backend says how to pick the simulator", partitionImage(inmateHello), "", `debug = false`,
			errdefs.ErrFailedPrecondition, `set backend = "sim" in`},
		{"unknown configuration key names key and file", partitionImage(inmateHello), "", `backedn = "sim"`,
			errdefs.ErrInvalidArgument, "backedn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			if tc.config != "" {
				writeFile(t, h.config, tc.config)
			}
			ctx := context.Background()
			bundle := h.bundle(t, "t1", tc.files, tc.annotations)
			_, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle})
			isErr(t, err, tc.want, "Create")
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q does not mention %q", err, tc.text)
			}
			if tc.config != "" && !strings.Contains(err.Error(), h.config) && tc.want == errdefs.ErrFailedPrecondition {
				t.Errorf("error %q does not name the configuration file %s", err, h.config)
			}
			// Nothing is left behind: no state, no cell, and the id is free.
			if _, err := os.Stat(filepath.Join(bundle, taskstate.FileName)); !os.IsNotExist(err) {
				t.Errorf("state file after a failed Create: %v", err)
			}
			if _, err := os.Stat(h.simDir); err == nil {
				if cells := h.simCells(t); len(cells) != 0 {
					t.Errorf("simulator has cells %v after a failed Create", cells)
				}
			}
			_, err = h.svc.State(ctx, &taskv3.StateRequest{ID: "t1"})
			isErr(t, err, errdefs.ErrNotFound, "State after a failed Create")
			h.assertTopics(t)
		})
	}
}

func TestServiceUnknownTask(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"State": func() error { _, err := h.svc.State(ctx, &taskv3.StateRequest{ID: "nope"}); return err },
		"Start": func() error { _, err := h.svc.Start(ctx, &taskv3.StartRequest{ID: "nope"}); return err },
		"Kill":  func() error { _, err := h.svc.Kill(ctx, &taskv3.KillRequest{ID: "nope", Signal: 9}); return err },
		"Wait":  func() error { _, err := h.svc.Wait(ctx, &taskv3.WaitRequest{ID: "nope"}); return err },
		"Stats": func() error { _, err := h.svc.Stats(ctx, &taskv3.StatsRequest{ID: "nope"}); return err },
		"ResizePty": func() error {
			_, err := h.svc.ResizePty(ctx, &taskv3.ResizePtyRequest{ID: "nope", Width: 80, Height: 24})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) { isErr(t, call(), errdefs.ErrNotFound, name) })
	}
	c, err := h.svc.Connect(ctx, &taskv3.ConnectRequest{ID: "nope"})
	if err != nil || c.GetShimPid() != 4242 || c.GetTaskPid() != 0 {
		t.Fatalf("Connect for an unknown task = %v, %v; want shim pid, no task pid", c, err)
	}
}
