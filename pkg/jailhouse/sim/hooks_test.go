package sim

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

func TestSetCellState(t *testing.T) {
	t.Run("failed from outside stops the inmate", func(t *testing.T) {
		clk := newFakeClock()
		d := enabled(t, Options{Now: clk.Now})
		run(t, d, testCell(t, "c", []int{2}), "print a", "sleep 1s", "print b")
		must(t, d.SetCellState("c", jailhouse.StateFailed))
		clk.Advance(time.Hour)
		wantState(t, d, "c", jailhouse.StateFailed)
		if got := cellOutput(t, d, "c"); got != "a\n" {
			t.Errorf("output %q, want only what came before the failure", got)
		}
	})
	t.Run("running/locked from outside blocks other creates", func(t *testing.T) {
		d := enabled(t, Options{})
		run(t, d, testCell(t, "c", []int{2}), "sleep 1h")
		must(t, d.SetCellState("c", jailhouse.StateRunningLocked))
		if err := d.CreateCell(marshal(t, testCell(t, "other", []int{3}))); !errors.Is(err, unix.EPERM) {
			t.Errorf("create next to a locked cell: %v, want EPERM", err)
		}
	})
	t.Run("Comm ABI mismatch never answers a shutdown request", func(t *testing.T) {
		d := enabled(t, Options{ReplyTimeout: 100 * time.Millisecond})
		run(t, d, testCell(t, "c", []int{2}), "sleep 1h")
		must(t, d.SetCellState("c", jailhouse.StateFailedCommRev))
		if err := d.DestroyCell("c"); !errors.Is(err, ErrNoReply) {
			t.Errorf("destroy of a cell in Comm ABI mismatch: %v, want ErrNoReply", err)
		}
	})
	t.Run("refused targets", func(t *testing.T) {
		d := enabled(t, Options{})
		for _, tc := range []struct {
			name  string
			state jailhouse.CellState
		}{
			{"qemu-arm64", jailhouse.StateFailed},
			{"nope", jailhouse.StateFailed},
			{"c", jailhouse.CellState(7)},
		} {
			if err := d.SetCellState(tc.name, tc.state); err == nil {
				t.Errorf("SetCellState(%q, %d) succeeded", tc.name, tc.state)
			}
		}
	})
}

func TestFailCPU(t *testing.T) {
	d := enabled(t, Options{})
	run(t, d, testCell(t, "c", []int{2, 3}), "sleep 1h")
	must(t, d.FailCPU("c", 3))
	info, err := d.Cell("c")
	must(t, err)
	if info.State != jailhouse.StateRunning || len(info.FailedCPUs) != 1 || info.FailedCPUs[0] != 3 {
		t.Errorf("after one failed CPU: %+v, want running with CPU 3 failed", info)
	}
	if !strings.Contains(hvConsoleText(t, d), "Parking CPU 3 (Cell: \"c\")\n") {
		t.Error("no Parking CPU line on the console")
	}
	if err := d.FailCPU("c", 4); err == nil {
		t.Error("FailCPU of a CPU the cell does not have succeeded")
	}
	must(t, d.FailCPU("c", 2))
	wantState(t, d, "c", jailhouse.StateFailed)
	// CELL_LOAD clears the failed flags.
	must(t, d.LoadCell("c"))
	info, err = d.Cell("c")
	must(t, err)
	if len(info.FailedCPUs) != 0 {
		t.Errorf("failed CPUs after load: %v, want none", info.FailedCPUs)
	}
}

func TestInjectErrorRequests(t *testing.T) {
	d := enabled(t, Options{})
	create(t, d, testCell(t, "c", []int{2}))
	for _, tc := range []struct {
		req  string
		call func() error
	}{
		{"load", func() error { return d.LoadCell("c") }},
		{jailhouse.RequestCellStart, func() error { return d.StartCell("c") }},
		{"DESTROY", func() error { return d.DestroyCell("c") }},
		{"disable", func() error { return d.Disable() }},
	} {
		must(t, d.InjectError(tc.req, unix.EIO))
		if err := tc.call(); !errors.Is(err, unix.EIO) || !errors.Is(err, ErrInjected) {
			t.Errorf("%s after InjectError: %v, want the injected EIO", tc.req, err)
		}
	}
	if err := d.InjectError("reboot", unix.EIO); err == nil {
		t.Error("InjectError of an unknown request succeeded")
	}
	// Every injection was used up: the requests work again.
	must(t, d.LoadCell("c"))
	must(t, d.StartCell("c"))
	must(t, d.DestroyCell("c"))
}

func TestInjectDelay(t *testing.T) {
	t.Run("wedges every request but not reads, and is used up", func(t *testing.T) {
		d := enabled(t, Options{})
		run(t, d, testCell(t, "c", []int{2}), "sleep 1h")
		create(t, d, testCell(t, "other", []int{3}))
		// Another Driver on the same directory stands for another process.
		other, err := Open(d.Dir(), Options{})
		must(t, err)
		must(t, other.InjectDelay("destroy", 400*time.Millisecond))
		if f, err := d.PendingFaults(); err != nil || f.Delays[jailhouse.RequestCellDestroy] != 400*time.Millisecond {
			t.Fatalf("PendingFaults = %+v, %v; want the destroy's delay", f, err)
		}

		began := time.Now()
		destroyed := make(chan error, 1)
		go func() { destroyed <- d.DestroyCell("c") }()
		time.Sleep(100 * time.Millisecond)
		// Reads answer while the destroy holds the driver's mutex.
		readAt := time.Now()
		if _, err := other.Cells(); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(readAt); took > 200*time.Millisecond {
			t.Errorf("Cells took %v while a request was wedged, want an immediate answer", took)
		}
		// A request of another kind waits behind the wedged one.
		must(t, other.StartCell("other"))
		if waited := time.Since(began); waited < 350*time.Millisecond {
			t.Errorf("a start issued during the wedged destroy returned after %v, want it to wait the delay out", waited)
		}
		if f, _ := d.PendingFaults(); len(f.Delays) != 0 {
			t.Errorf("PendingFaults while the delay is served = %+v, want it taken", f)
		}
		must(t, <-destroyed)
		if f, _ := d.PendingFaults(); len(f.Hanging) != 0 {
			t.Errorf("PendingFaults after the delay was served = %+v, want nothing hanging", f)
		}
		if took := time.Since(began); took < 400*time.Millisecond {
			t.Errorf("delayed destroy took %v, want at least the injected 400ms", took)
		}
		// Used up: the next destroy is immediate.
		began = time.Now()
		must(t, d.DestroyCell("other"))
		if took := time.Since(began); took > 300*time.Millisecond {
			t.Errorf("destroy after the delay was used up took %v", took)
		}
	})
	t.Run("ClearFaults releases a wedged request and drops pending faults", func(t *testing.T) {
		d := enabled(t, Options{})
		create(t, d, testCell(t, "c", []int{2}))
		must(t, d.InjectDelay(jailhouse.RequestCellStart, time.Hour))
		must(t, d.InjectError("destroy", unix.EBUSY))
		started := make(chan error, 1)
		go func() { started <- d.StartCell("c") }()
		time.Sleep(100 * time.Millisecond)
		// Taken, the delay is no longer pending, but the request is seen
		// hanging, by this process, for about an hour.
		f, err := d.PendingFaults()
		must(t, err)
		h, ok := f.Hanging[jailhouse.RequestCellStart]
		if len(f.Delays) != 0 || !ok || h.PID != os.Getpid() || time.Until(h.Until) < 59*time.Minute {
			t.Fatalf("PendingFaults during the wedged start = %+v; want no delay and the start hanging in pid %d for an hour", f, os.Getpid())
		}
		cleared, err := d.ClearFaultsReport()
		must(t, err)
		if _, ok := cleared.Hanging[jailhouse.RequestCellStart]; !ok || cleared.Errors[jailhouse.RequestCellDestroy] != unix.EBUSY {
			t.Errorf("ClearFaultsReport = %+v; want the hanging start and the destroy's EBUSY", cleared)
		}
		select {
		case err := <-started:
			must(t, err)
		case <-time.After(2 * time.Second):
			t.Fatal("ClearFaults did not release the request wedged for an hour")
		}
		must(t, d.DestroyCell("c")) // the injected EBUSY is gone too
		if f, _ := d.PendingFaults(); len(f.Hanging)+len(f.Delays)+len(f.Errors) != 0 {
			t.Errorf("PendingFaults after ClearFaults = %+v, want nothing", f)
		}
	})
	t.Run("refused arguments", func(t *testing.T) {
		d := enabled(t, Options{})
		if err := d.InjectDelay("reboot", time.Second); err == nil {
			t.Error("InjectDelay of an unknown request succeeded")
		}
		if err := d.InjectDelay("create", 0); err == nil {
			t.Error("InjectDelay of 0 succeeded")
		}
	})
}

func TestSetShutdownPolicy(t *testing.T) {
	d := enabled(t, Options{ReplyTimeout: 100 * time.Millisecond})
	run(t, d, testCell(t, "c", []int{2}), "sleep 1h")
	must(t, d.SetShutdownPolicy("c", PolicyDeny))
	if err := d.DestroyCell("c"); !errors.Is(err, unix.EPERM) {
		t.Errorf("destroy of a cell whose inmate denies shutdown: %v, want EPERM", err)
	}
	must(t, d.SetShutdownPolicy("c", PolicyIgnore))
	if err := d.LoadCell("c"); !errors.Is(err, ErrNoReply) {
		t.Errorf("shutdown of a cell whose inmate ignores it: %v, want ErrNoReply", err)
	}
	must(t, d.SetShutdownPolicy("c", PolicyApprove))
	must(t, d.DestroyCell("c"))
	if err := d.SetShutdownPolicy("c", PolicyDeny); !errors.Is(err, jailhouse.ErrCellNotFound) {
		t.Errorf("SetShutdownPolicy of a destroyed cell: %v, want ErrCellNotFound", err)
	}
	if err := d.SetShutdownPolicy("x", "maybe"); err == nil {
		t.Error("SetShutdownPolicy with an unknown policy succeeded")
	}
}

// The hypervisor never asks the inmate of a passive cell, so a policy that
// could only matter if it did is refused rather than silently kept.
func TestSetShutdownPolicyOfAPassiveCell(t *testing.T) {
	d := enabled(t, Options{ReplyTimeout: 100 * time.Millisecond})
	run(t, d, testCell(t, "p", []int{2}, passive), "sleep 1h")
	for _, policy := range []string{PolicyDeny, PolicyIgnore} {
		err := d.SetShutdownPolicy("p", policy)
		if !errors.Is(err, ErrPassiveCommRegion) || !strings.Contains(err.Error(), `cell "p"`) {
			t.Errorf("SetShutdownPolicy(%s) of a passive cell: %v, want ErrPassiveCommRegion naming the cell", policy, err)
		}
	}
	must(t, d.SetShutdownPolicy("p", PolicyApprove)) // what the hypervisor does anyway
	must(t, d.DestroyCell("p"))
}

// A request hanging in a delay is not listed once its process is gone, a
// zombie included: a killed shim is one until its parent reaps it.
func TestProcessGone(t *testing.T) {
	if processGone(os.Getpid()) {
		t.Error("this process counts as gone")
	}
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	pid := cmd.Process.Pid
	// Not waited for: it is a zombie once it exits.
	deadline := time.Now().Add(5 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d, exited and not reaped, still counts as running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	must(t, cmd.Wait())
	if !processGone(pid) {
		t.Errorf("pid %d, reaped, does not count as gone", pid)
	}
}
