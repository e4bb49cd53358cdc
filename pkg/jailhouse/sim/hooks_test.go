package sim

import (
	"errors"
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
