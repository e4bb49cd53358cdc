package sim

// Test hooks: faults and inmate behaviour injected from outside, for tests
// of everything above the driver. They act through the same state file, so
// a hook called in a test process reaches cells created by a shim process.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

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
	full, err := RequestName(req)
	if err != nil {
		return fmt.Errorf("inject error: %w", err)
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

// InjectDelay makes the next request req (named as for InjectError) wait
// for delay before it runs, holding the driver's global mutex the whole
// time, as an ioctl wedged in the hypervisor holds jailhouse_lock: every
// other request, from any process, waits behind it, while reads of the
// state (Cells, Cell, Enabled, consoles) go on. ClearFaults ends the wait
// early. The delay is real time, whatever Options.Now says. Injecting again
// replaces a pending delay of the same request.
func (d *Driver) InjectDelay(req string, delay time.Duration) error {
	full, err := RequestName(req)
	if err != nil {
		return fmt.Errorf("inject delay: %w", err)
	}
	if delay <= 0 {
		return fmt.Errorf("inject delay into %s: %v is not a delay", full, delay)
	}
	return d.update(func(t *tx) error {
		if t.s.Delays == nil {
			t.s.Delays = map[string]time.Duration{}
		}
		t.s.Delays[full] = delay
		return nil
	}, nil)
}

// ClearFaults drops every pending injected error and delay and releases
// the requests waiting in an injected delay now. Cell states and shutdown
// policies set by hooks stay as they are.
func (d *Driver) ClearFaults() error {
	_, err := d.ClearFaultsReport()
	return err
}

// ClearFaultsReport is ClearFaults, and returns what it dropped and
// released.
func (d *Driver) ClearFaultsReport() (Faults, error) {
	var f Faults
	err := d.update(func(t *tx) error {
		f = t.s.faults()
		t.s.Injected, t.s.Delays, t.s.Hanging = nil, nil, nil
		t.s.FaultGen++
		return nil
	}, nil)
	return f, err
}

// Faults are the injected errors and delays not yet used up, and the
// requests waiting in a delay they took.
type Faults struct {
	Errors  map[string]unix.Errno    // by jailhouse.Request… name
	Delays  map[string]time.Duration // by jailhouse.Request… name
	Hanging map[string]Hang          // by jailhouse.Request… name
}

// PendingFaults returns the injected errors and delays that no request
// has taken yet (a test reads it to tell whether a request reached the
// driver), and the requests hanging in a delay.
func (d *Driver) PendingFaults() (Faults, error) {
	s, _, err := d.readState()
	if err != nil {
		return Faults{}, err
	}
	return s.faults(), nil
}

// faults are the state's faults; a hanging request whose process is gone
// (killed while it waited) is left out.
func (s *hostState) faults() Faults {
	f := Faults{Errors: s.Injected, Delays: s.Delays}
	for req, h := range s.Hanging {
		if processGone(h.PID) || time.Now().After(h.Until) {
			continue
		}
		if f.Hanging == nil {
			f.Hanging = map[string]Hang{}
		}
		f.Hanging[req] = h
	}
	return f
}

// SetShutdownPolicy sets how the cell's inmate answers the hypervisor's
// shutdown requests from now on, as its script's on-shutdown command does:
// PolicyApprove, PolicyDeny (requests fail with EPERM) or PolicyIgnore (they
// wait for the reply timeout). A scripted inmate may change it again later;
// CELL_START resets it to approve. Shut down or failed cells approve whatever
// their policy. A cell with a passive comm region is never asked, so deny or
// ignore there fails with ErrPassiveCommRegion rather than do nothing
// (approve, what the hypervisor does anyway, succeeds).
func (d *Driver) SetShutdownPolicy(name, policy string) error {
	switch policy {
	case PolicyApprove, PolicyDeny, PolicyIgnore:
	default:
		return fmt.Errorf("set shutdown policy of cell %q: %q is not %s, %s or %s", name, policy, PolicyApprove, PolicyDeny, PolicyIgnore)
	}
	return d.update(func(t *tx) error {
		c, err := t.hookCell("set shutdown policy of", name)
		if err != nil {
			return err
		}
		if policy != PolicyApprove && c.Flags&jailhouse.CellPassiveCommRegion != 0 {
			return fmt.Errorf("set shutdown policy of cell %q to %s: %w", name, policy, ErrPassiveCommRegion)
		}
		c.Policy = policy
		return nil
	}, nil)
}

// RequestName returns the jailhouse.Request… name of a request given in
// either form InjectError takes.
func RequestName(req string) (string, error) {
	if full, ok := map[string]string{
		"enable": jailhouse.RequestEnable, "disable": jailhouse.RequestDisable,
		"create": jailhouse.RequestCellCreate, "load": jailhouse.RequestCellLoad,
		"start": jailhouse.RequestCellStart, "destroy": jailhouse.RequestCellDestroy,
	}[strings.ToLower(req)]; ok {
		return full, nil
	}
	switch req {
	case jailhouse.RequestEnable, jailhouse.RequestDisable, jailhouse.RequestCellCreate,
		jailhouse.RequestCellLoad, jailhouse.RequestCellStart, jailhouse.RequestCellDestroy:
		return req, nil
	}
	return "", fmt.Errorf("unknown request %q (want create, load, start, destroy, enable or disable)", req)
}

// processGone says pid has exited: it does not exist, or it is a zombie
// (a killed shim stays one until its parent reaps it).
func processGone(pid int) bool {
	if unix.Kill(pid, 0) == unix.ESRCH {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S …": the state follows the last ')', comm may hold any.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// delayPoll is how often a delayed request looks for ClearFaults.
const delayPoll = 50 * time.Millisecond

// serveDelay waits out a delay injected into req, if one is pending. The
// caller holds the request mutex. Most requests have none, and find that
// out from the raw state file without a transaction.
func (d *Driver) serveDelay(req string) error {
	raw, err := os.ReadFile(filepath.Join(d.dir, stateFile))
	if err != nil || !bytes.Contains(raw, []byte(`"delays"`)) {
		return nil // the transaction of the request itself reports a bad state file
	}
	var delay time.Duration
	var gen uint64
	var hang Hang
	err = d.update(func(t *tx) error {
		delay, gen = t.s.Delays[req], t.s.FaultGen
		delete(t.s.Delays, req)
		if len(t.s.Delays) == 0 {
			t.s.Delays = nil
		}
		if delay > 0 {
			hang = Hang{PID: os.Getpid(), Until: time.Now().Add(delay).UTC()}
			if t.s.Hanging == nil {
				t.s.Hanging = map[string]Hang{}
			}
			t.s.Hanging[req] = hang
		}
		return nil
	}, nil)
	if err != nil || delay <= 0 {
		return err
	}
	defer d.update(func(t *tx) error {
		if h, ok := t.s.Hanging[req]; ok && h.PID == hang.PID && h.Until.Equal(hang.Until) {
			delete(t.s.Hanging, req)
			if len(t.s.Hanging) == 0 {
				t.s.Hanging = nil
			}
		}
		return nil
	}, nil)
	end := hang.Until
	for {
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		time.Sleep(min(left, delayPoll))
		// Written by rename, so a read without the lock sees a whole state.
		if s, _, err := d.readState(); err == nil && s.FaultGen != gen {
			return nil
		}
	}
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
