package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
	"github.com/runphi/runphi/pkg/partition"
	"github.com/runphi/runphi/pkg/taskstate"
)

// The reliability behaviour of issue 7 (docs/reliability.md): rollback of
// every failed Create, RPCs bounded while the hypervisor is wedged, and the
// cleanup of a dead shim whose cell cannot be destroyed.

// openSimulator is what cmd/internal/backend gives the binary; tests may
// import the simulator themselves.
func openSimulator(dir string) (jailhouse.Driver, error) { return sim.Open(dir, sim.Options{}) }

// sim opens the host's simulator, as a test hook in another process would.
func (h *host) sim(t *testing.T) *sim.Driver {
	t.Helper()
	d, err := sim.Open(h.simDir, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (h *host) ledgerEntries(t *testing.T) []partition.Entry {
	t.Helper()
	entries, err := partition.OpenLedger(filepath.Join(h.dir, "state", "ledger.json")).Entries()
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// runTask creates and starts a partition task.
func (h *host) runTask(t *testing.T, id, inmate string) string {
	t.Helper()
	return h.runImage(t, id, partitionImage(inmate))
}

// activeImage is an image whose inmate answers shutdown requests itself
// (comm_region "active"): only such an inmate can deny them.
func activeImage(inmate string) map[string]string {
	return map[string]string{
		"boot/config.json": `{"os_var":"zephyr","inmate":"/boot/boot.bin","comm_region":"active"}`,
		"boot/boot.bin":    inmate,
	}
}

func (h *host) runImage(t *testing.T, id string, files map[string]string) string {
	t.Helper()
	ctx := context.Background()
	bundle := h.bundle(t, id, files, "")
	if _, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: id, Bundle: bundle}); err != nil {
		t.Fatalf("Create %s: %v", id, err)
	}
	if _, err := h.svc.Start(ctx, &taskv3.StartRequest{ID: id}); err != nil {
		t.Fatalf("Start %s: %v", id, err)
	}
	return bundle
}

// removeTask kills a task with SIGKILL, waits for its exit and deletes it.
func (h *host) removeTask(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	if _, err := h.svc.Kill(ctx, &taskv3.KillRequest{ID: id, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Wait(ctx, &taskv3.WaitRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
}

// wedgeDelete runs a partition that exits 0 and then Deletes it while its
// CELL_DESTROY is held for delay, longer than the service's deleteTimeout:
// the Delete must answer DeadlineExceeded and go on in the background.
func (h *host) wedgeDelete(t *testing.T, id string, delay time.Duration) {
	t.Helper()
	ctx := context.Background()
	h.runTask(t, id, inmateHello)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if w, err := h.svc.Wait(wctx, &taskv3.WaitRequest{ID: id}); err != nil || w.GetExitStatus() != 0 {
		t.Fatalf("Wait = %v, %v; want 0", w, err)
	}
	if err := h.sim(t).InjectDelay("destroy", delay); err != nil {
		t.Fatal(err)
	}
	_, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: id})
	isErr(t, err, context.DeadlineExceeded, "Delete with a wedged destroy")
}

// Every failure inside Create undoes what came before it — ledger entry,
// cell, FIFOs, state file — and the error carries the driver's errno.
func TestCreateRollsBackEveryStep(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject string // sim request to fail
		errno  unix.Errno
		stdout func(bundle string) string
		text   string
	}{
		{name: "CELL_CREATE refused", inject: "create", errno: unix.EBUSY, text: "device or resource busy"},
		{name: "CELL_LOAD refused", inject: "load", errno: unix.EINVAL, text: "invalid argument"},
		{name: "hypervisor out of memory", inject: "create", errno: unix.ENOMEM, text: "cannot allocate memory"},
		{name: "stdout cannot be opened", stdout: func(bundle string) string { return bundle }, text: "open stdout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			ctx := context.Background()
			bundle := h.bundle(t, "t1", partitionImage(inmateForever), "")
			if tc.inject != "" {
				// The simulator exists once the service opened it.
				h.svc.backend(mustConfig(t, h))
				if err := h.sim(t).InjectError(tc.inject, tc.errno); err != nil {
					t.Fatal(err)
				}
			}
			req := &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle}
			if tc.stdout != nil {
				req.Stdout = tc.stdout(bundle)
			}
			_, err := h.svc.Create(ctx, req)
			if err == nil {
				t.Fatal("Create succeeded")
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("Create: %v; want it to say %q", err, tc.text)
			}
			if tc.errno != 0 && !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) && !errdefs.IsResourceExhausted(errgrpc.ToNative(err)) {
				t.Errorf("Create: %v; want FailedPrecondition or ResourceExhausted", err)
			}
			if cells := h.simCells(t); len(cells) != 0 {
				t.Errorf("cells %v after the failed Create", cells)
			}
			if entries := h.ledgerEntries(t); len(entries) != 0 {
				t.Errorf("ledger entries %v after the failed Create", entries)
			}
			if _, err := os.Stat(taskstate.Path(bundle)); !os.IsNotExist(err) {
				t.Errorf("state file after the failed Create: %v", err)
			}
			h.assertTopics(t)
			// The id and the resources are free: the same task creates.
			if _, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle}); err != nil {
				t.Fatalf("Create after the rollback: %v", err)
			}
			if _, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func mustConfig(t *testing.T, h *host) config.Config {
	t.Helper()
	cfg, err := loadConfig(nil, h.svc.lookup)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A rollback whose destroy fails too leaves the cell with its ledger entry
// orphaned, and the next allocation destroys it.
func TestCreateRollbackLeavesAnOrphan(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	bundle := h.bundle(t, "t1", partitionImage(inmateForever), "")
	h.svc.backend(mustConfig(t, h))
	if err := h.sim(t).InjectError("destroy", unix.EIO); err != nil {
		t.Fatal(err)
	}
	// A directory as stdout fails caronte.New, after the cell exists.
	_, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle, Stdout: bundle})
	if err == nil {
		t.Fatal("Create succeeded")
	}
	entries := h.ledgerEntries(t)
	if len(entries) != 1 || entries[0].Orphaned.IsZero() || !strings.Contains(entries[0].OrphanReason, "input/output error") {
		t.Fatalf("ledger %+v, want the cell's entry orphaned with the destroy's error", entries)
	}
	if _, err := os.Stat(taskstate.Path(bundle)); !os.IsNotExist(err) {
		t.Errorf("state file after the failed Create: %v", err)
	}
	h.runTask(t, "t1", inmateForever)
	if cells := h.simCells(t); len(cells) != 1 {
		t.Errorf("cells %v, want only the new task's: the orphan is destroyed by the next allocation", cells)
	}
	if _, err := h.svc.Kill(ctx, &taskv3.KillRequest{ID: "t1", Signal: 9}); err != nil {
		t.Fatal(err)
	}
}

// While a hypervisor request hangs, State, Stats, Pids and Connect answer
// at once, and Kill answers DeadlineExceeded at its deadline; the kill goes
// on and ends the task when the driver comes back.
func TestRPCsAnswerWhileTheDriverIsWedged(t *testing.T) {
	h := newHost(t)
	h.svc.killTimeout = 300 * time.Millisecond
	ctx := context.Background()
	h.runTask(t, "t1", inmateForever)
	drv := h.sim(t)
	if err := drv.InjectDelay("destroy", time.Hour); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	_, err := h.svc.Kill(ctx, &taskv3.KillRequest{ID: "t1", Signal: 9})
	isErr(t, err, context.DeadlineExceeded, "Kill with a wedged destroy")
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("Kill took %v, want about its 300ms deadline", took)
	}
	for name, rpc := range map[string]func() error{
		"State": func() error {
			st, err := h.svc.State(ctx, &taskv3.StateRequest{ID: "t1"})
			if err == nil && st.GetStatus() != tasktypes.Status_RUNNING {
				return errors.New("not RUNNING: " + st.GetStatus().String())
			}
			return err
		},
		"Stats":   func() error { _, err := h.svc.Stats(ctx, &taskv3.StatsRequest{ID: "t1"}); return err },
		"Pids":    func() error { _, err := h.svc.Pids(ctx, &taskv3.PidsRequest{ID: "t1"}); return err },
		"Connect": func() error { _, err := h.svc.Connect(ctx, &taskv3.ConnectRequest{ID: "t1"}); return err },
		"second Kill": func() error {
			_, err := h.svc.Kill(ctx, &taskv3.KillRequest{ID: "t1", Signal: 9})
			if errdefs.IsDeadlineExceeded(errgrpc.ToNative(err)) {
				return nil
			}
			return errors.New("want DeadlineExceeded, got " + errString(err))
		},
	} {
		began := time.Now()
		if err := rpc(); err != nil {
			t.Errorf("%s while the driver is wedged: %v", name, err)
		}
		limit := 200 * time.Millisecond
		if name == "second Kill" {
			limit = time.Second
		}
		if took := time.Since(began); took > limit {
			t.Errorf("%s took %v while the driver is wedged", name, took)
		}
	}

	if err := drv.ClearFaults(); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w, err := h.svc.Wait(wctx, &taskv3.WaitRequest{ID: "t1"})
	if err != nil || w.GetExitStatus() != 137 {
		t.Fatalf("Wait after the driver came back = %v, %v; want 137", w, err)
	}
	if _, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if cells, entries := h.simCells(t), h.ledgerEntries(t); len(cells)+len(entries) != 0 {
		t.Errorf("left behind: cells %v, ledger %v", cells, entries)
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// A Delete past its deadline answers DeadlineExceeded and goes on; a retry
// joins it and gets the exit status, and a Delete after that finds nothing
// (containerd#7496: the retry must not strand the shim). Shutdown then ends
// the service.
func TestDeleteDeadlineAndRetry(t *testing.T) {
	h := newHost(t)
	h.svc.deleteTimeout = 300 * time.Millisecond
	ctx := context.Background()
	h.wedgeDelete(t, "t1", 800*time.Millisecond)
	if st, err := h.svc.State(ctx, &taskv3.StateRequest{ID: "t1"}); err != nil || st.GetStatus() != tasktypes.Status_STOPPED {
		t.Errorf("State during the wedged Delete = %v, %v; want STOPPED", st, err)
	}
	h.svc.deleteTimeout = 5 * time.Second
	del, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"})
	if err != nil || del.GetExitStatus() != 0 {
		t.Fatalf("retried Delete = %v, %v; want the exit status 0", del, err)
	}
	_, err = h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"})
	isErr(t, err, errdefs.ErrNotFound, "Delete after the task is gone")
	if topics, _ := h.events.snapshot(); strings.Count(strings.Join(topics, " "), topicTaskDelete) != 1 {
		t.Errorf("events %v, want exactly one TaskDelete", topics)
	}
	if _, err := h.svc.Shutdown(ctx, &taskv3.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.svc.done():
	case <-time.After(time.Second):
		t.Fatal("Shutdown did not end the service after the delete finished")
	}
}

// A retry that comes only after the background Delete finished, when the
// task is already forgotten, still gets the result the first Delete could
// not wait for, once; containerd would otherwise leave the task behind.
// containerd loads the task (State) before it retries, and a restarted one
// keeps only shims whose Pids answer, so the reading RPCs still answer,
// STOPPED with the exit status, until the result is taken.
func TestDeleteRetryAfterTheBackgroundDeleteFinished(t *testing.T) {
	h := newHost(t)
	h.svc.deleteTimeout = 200 * time.Millisecond
	ctx := context.Background()
	h.wedgeDelete(t, "t1", 500*time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := h.svc.get("t1"); errdefs.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background delete never finished")
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, err := h.svc.State(ctx, &taskv3.StateRequest{ID: "t1"})
	if err != nil || st.GetStatus() != tasktypes.Status_STOPPED || st.GetExitStatus() != 0 || st.GetID() != "t1" {
		t.Fatalf("State after the background delete finished = %v, %v; want t1 STOPPED with exit status 0", st, err)
	}
	_, err = h.svc.State(ctx, &taskv3.StateRequest{ID: "t1", ExecID: "e1"})
	isErr(t, err, errdefs.ErrNotFound, "State of an exec of the deleted task")
	// containerd, restarted, keeps a shim only if Pids answers.
	if p, err := h.svc.Pids(ctx, &taskv3.PidsRequest{ID: "t1"}); err != nil || len(p.GetProcesses()) != 1 {
		t.Errorf("Pids after the background delete finished = %v, %v; want the task's pid", p, err)
	}
	if w, err := h.svc.Wait(ctx, &taskv3.WaitRequest{ID: "t1"}); err != nil || w.GetExitStatus() != 0 {
		t.Errorf("Wait after the background delete finished = %v, %v; want the exit status 0", w, err)
	}
	if _, err := h.svc.Stats(ctx, &taskv3.StatsRequest{ID: "t1"}); err != nil {
		t.Errorf("Stats after the background delete finished: %v", err)
	}
	del, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"})
	if err != nil || del.GetExitStatus() != 0 {
		t.Fatalf("Delete after the background delete finished = %v, %v; want the exit status 0", del, err)
	}
	_, err = h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"})
	isErr(t, err, errdefs.ErrNotFound, "a second Delete after the result was taken")
	_, err = h.svc.State(ctx, &taskv3.StateRequest{ID: "t1"})
	isErr(t, err, errdefs.ErrNotFound, "State after the result was taken")
	_, err = h.svc.Pids(ctx, &taskv3.PidsRequest{ID: "t1"})
	isErr(t, err, errdefs.ErrNotFound, "Pids after the result was taken")
	if _, err := h.svc.Shutdown(ctx, &taskv3.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.svc.done():
	case <-time.After(time.Second):
		t.Fatal("Shutdown did not end the service")
	}
}

// A dispatcher whose partition Delete finished in the background still
// lets Shutdown end the process.
func TestDispatcherShutdownAfterBackgroundDelete(t *testing.T) {
	h := newHost(t)
	h.svc.deleteTimeout = 200 * time.Millisecond
	d := newDispatcher(h.svc, newRuncTasks(context.Background(), "default", h.events, nil))
	ctx := context.Background()
	bundle := h.bundle(t, "t1", partitionImage(inmateForever), "")
	if _, err := d.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if err := h.sim(t).InjectDelay("destroy", 600*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	_, err := d.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"})
	isErr(t, err, context.DeadlineExceeded, "Delete with a wedged destroy")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := d.Shutdown(ctx, &taskv3.ShutdownRequest{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-d.done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("Shutdown never ended the process after the background delete finished")
		}
	}
}

// `delete` after the shim died, when the cell refuses to be destroyed (an
// inmate that denies shutdown): the rootfs, state file and socket still
// go, the exit is reported, and the ledger entry stays, orphaned, until a
// later allocation can destroy the cell.
func TestDeleteAfterShimDiedCellRefuses(t *testing.T) {
	h := newHost(t)
	bundle := h.runImage(t, "t1", activeImage(inmateForever))
	drv := h.sim(t)
	cells := h.simCells(t)
	if len(cells) != 1 {
		t.Fatalf("cells %v, want one", cells)
	}
	if err := drv.SetShutdownPolicy(cells[0], sim.PolicyDeny); err != nil {
		t.Fatal(err)
	}

	d := &daemon{dir: h.dir, grpc: filepath.Join(h.dir, "c.sock")}
	began := time.Now()
	out, err := d.shim(t, bundle, "t1", nil, "-bundle", bundle, "delete")
	if err != nil {
		t.Fatalf("delete: %v (it must succeed, or containerd keeps the bundle)", err)
	}
	if took := time.Since(began); took > 4*time.Second {
		t.Errorf("delete took %v; containerd kills it after 5 s", took)
	}
	var resp taskv3.DeleteResponse
	if err := proto.Unmarshal(out, &resp); err != nil || resp.GetExitStatus() != 137 {
		t.Fatalf("delete printed %v (%v), want exit status 137", &resp, err)
	}
	if _, err := os.Stat(taskstate.Path(bundle)); !os.IsNotExist(err) {
		t.Errorf("state file after delete: %v", err)
	}
	entries := h.ledgerEntries(t)
	if len(entries) != 1 || entries[0].Orphaned.IsZero() || !strings.Contains(entries[0].OrphanReason, "operation not permitted") {
		t.Fatalf("ledger %+v, want the cell's entry orphaned with the EPERM", entries)
	}
	if got := h.simCells(t); len(got) != 1 {
		t.Fatalf("cells %v, want the refusing cell still there", got)
	}

	// The inmate relents; the next partition's allocation destroys it.
	if err := drv.SetShutdownPolicy(cells[0], sim.PolicyApprove); err != nil {
		t.Fatal(err)
	}
	h.runTask(t, "t2", inmateForever)
	if got := h.simCells(t); len(got) != 1 || got[0] == cells[0] {
		t.Errorf("cells %v, want only t2's: the orphan is healed", got)
	}
	if _, err := h.svc.Kill(context.Background(), &taskv3.KillRequest{ID: "t2", Signal: 9}); err != nil {
		t.Fatal(err)
	}
}

// A shim that died inside partition.Create, before recording the cell in
// its state file, still has its cell and ledger entry cleaned up: delete
// finds them by the container's ledger entry.
func TestDeleteAfterShimDiedDuringCreate(t *testing.T) {
	h := newHost(t)
	bundle := h.runTask(t, "t1", inmateForever)
	st, err := taskstate.Read(bundle)
	if err != nil {
		t.Fatal(err)
	}
	// As written before partition.Create, by this (the ledger's) process.
	st.Partition = nil
	st.ShimPid = os.Getpid()
	if err := taskstate.Write(st); err != nil {
		t.Fatal(err)
	}
	d := &daemon{dir: h.dir, grpc: filepath.Join(h.dir, "c.sock")}
	if _, err := d.shim(t, bundle, "t1", nil, "-bundle", bundle, "delete"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if cells, entries := h.simCells(t), h.ledgerEntries(t); len(cells)+len(entries) != 0 {
		t.Errorf("left behind: cells %v, ledger %v", cells, entries)
	}
}

// Events published while containerd cannot be reached (a daemon restart)
// wait and are delivered, in order, once it is back (containerd#6771).
func TestForwarderHoldsEventsWhileContainerdIsDown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "containerd.sock.ttrpc")
	f := newForwarder(context.Background(), "unix://"+path, "default")
	f.publish(topicTaskExit, &eventstypes.TaskExit{ContainerID: "t1", ExitStatus: 143})
	f.publish(topicTaskDelete, &eventstypes.TaskDelete{ContainerID: "t1"})
	// Longer than forwardAttempts with their back-off would last.
	time.Sleep(2 * time.Second)
	fake := &fakeEvents{}
	serveFakeEvents(t, path, fake)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.close(ctx)
	got := fake.topics()
	if strings.Join(got, " ") != topicTaskExit+" "+topicTaskDelete {
		t.Fatalf("forwarded %v after containerd came back, want the exit and the delete in order", got)
	}
}
