package sim

// Test hooks: faults and inmate behaviour injected from outside, for tests
// of everything above the driver. They act through the same state file, so
// a hook called in a test process reaches cells created by a shim process.

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// SetCellState writes the cell's comm-region state as its inmate (or, for
// failed, the hypervisor) would: for example failed, running/locked or shut
// down. A terminal state stops a scripted inmate for good. The root cell's
// state cannot be set.
func (d *Driver) SetCellState(name string, state jailhouse.CellState) error {
	if _, ok := map[jailhouse.CellState]bool{
		jailhouse.StateRunning: true, jailhouse.StateRunningLocked: true, jailhouse.StateShutDown: true,
		jailhouse.StateFailed: true, jailhouse.StateFailedCommRev: true,
	}[state]; !ok {
		return fmt.Errorf("set state of cell %q: %d is not a cell state", name, int(state))
	}
	return d.update(func(t *tx) error {
		c, err := t.hookCell("set state of", name)
		if err != nil {
			return err
		}
		c.State = state
		if state.Terminal() {
			c.Program = nil
		}
		return nil
	}, nil)
}

// FailCPU parks one CPU of the cell after a simulated fault, as the
// hypervisor does after an access violation: the CPU shows in cpus_failed,
// the console says "Parking CPU n (Cell: …)", and once every CPU of the
// cell has failed the cell is failed and its inmate stops.
func (d *Driver) FailCPU(name string, cpu int) error {
	return d.update(func(t *tx) error {
		c, err := t.hookCell("fail CPU of", name)
		if err != nil {
			return err
		}
		if !slices.Contains(c.CPUs, cpu) {
			return fmt.Errorf("fail CPU %d of cell %q: the cell has CPUs %s", cpu, name, jailhouse.FormatCPUList(c.CPUs))
		}
		if slices.Contains(c.Failed, cpu) {
			return nil
		}
		c.Failed = append(c.Failed, cpu)
		slices.Sort(c.Failed)
		t.hvPrint(fmt.Sprintf("Parking CPU %d (Cell: \"%s\")\n", cpu, c.Name))
		if len(c.Failed) == len(c.CPUs) {
			c.State = jailhouse.StateFailed
			c.Program = nil
		}
		return nil
	}, nil)
}

// InjectError makes the next request req fail with errno before any of its
// checks. req is one of jailhouse.RequestEnable, RequestDisable,
// RequestCellCreate, RequestCellLoad, RequestCellStart, RequestCellDestroy,
// or its short form ("create", "load", "start", "destroy", "enable",
// "disable"). The error wraps ErrInjected. Injecting again replaces a
// pending injection of the same request.
func (d *Driver) InjectError(req string, errno unix.Errno) error {
	full, ok := map[string]string{
		"enable": jailhouse.RequestEnable, "disable": jailhouse.RequestDisable,
		"create": jailhouse.RequestCellCreate, "load": jailhouse.RequestCellLoad,
		"start": jailhouse.RequestCellStart, "destroy": jailhouse.RequestCellDestroy,
	}[strings.ToLower(req)]
	if !ok {
		switch req {
		case jailhouse.RequestEnable, jailhouse.RequestDisable, jailhouse.RequestCellCreate,
			jailhouse.RequestCellLoad, jailhouse.RequestCellStart, jailhouse.RequestCellDestroy:
			full = req
		default:
			return fmt.Errorf("inject error: unknown request %q", req)
		}
	}
	if errno == 0 {
		return fmt.Errorf("inject error into %s: errno 0 is not an error", full)
	}
	return d.update(func(t *tx) error {
		if t.s.Injected == nil {
			t.s.Injected = map[string]unix.Errno{}
		}
		t.s.Injected[full] = errno
		return nil
	}, nil)
}

func (t *tx) hookCell(what, name string) (*cellState, error) {
	if !t.s.Enabled {
		return nil, fmt.Errorf("%s cell %q: jailhouse is not enabled", what, name)
	}
	if name == t.s.System.RootName {
		return nil, fmt.Errorf("%s cell %q: it is the root cell", what, name)
	}
	c := t.s.cell(name)
	if c == nil {
		return nil, fmt.Errorf("%s cell %q: %w", what, name, jailhouse.ErrCellNotFound)
	}
	return c, nil
}
