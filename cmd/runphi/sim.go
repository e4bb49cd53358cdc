package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
)

func init() {
	register(&command{
		name:    "sim",
		summary: "inject faults into the simulated hypervisor (testing; backend = \"sim\" only)",
		usage: "sim [--config FILE] ACTION ...\n" +
			"  inject error REQUEST ERRNO      the next REQUEST (create, load, start, destroy, enable, disable) fails with ERRNO (EBUSY or 16)\n" +
			"  inject delay REQUEST DURATION   the next REQUEST hangs for DURATION (1m) holding the driver's lock: a wedged driver\n" +
			"  clear                           drop pending injections and release a hanging request\n" +
			"  faults                          list pending injections and requests hanging in a delay\n" +
			"  state CELL STATE                set a cell's state (failed, running/locked, running, shut down)\n" +
			"  fail-cpu CELL CPU               park one CPU of a cell\n" +
			"  policy CELL approve|deny|ignore how the cell's inmate answers shutdown requests (deny and ignore need an active comm region)",
		run: runSim,
	})
}

// printFaults lists injected faults one per line, pending ones behind
// pending and hanging requests behind hanging.
func printFaults(env *cmdEnv, f sim.Faults, pending, hanging string) {
	for _, req := range slices.Sorted(maps.Keys(f.Errors)) {
		fmt.Fprintf(env.stdout, "%s%s\terror %s (%d)\n", pending, req, unix.ErrnoName(f.Errors[req]), int(f.Errors[req]))
	}
	for _, req := range slices.Sorted(maps.Keys(f.Delays)) {
		fmt.Fprintf(env.stdout, "%s%s\tdelay %s\n", pending, req, f.Delays[req])
	}
	for _, req := range slices.Sorted(maps.Keys(f.Hanging)) {
		h := f.Hanging[req]
		fmt.Fprintf(env.stdout, "%s%s\thanging in pid %d until %s\n", hanging, req, h.PID, h.Until.Local().Format(time.TimeOnly))
	}
}

// runSim drives the simulator's test hooks (docs/reliability.md) on the
// sim_dir of the configuration, so that faults reach shims running in
// other processes.
func runSim(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "sim", commands["sim"].usage)
	cf := addConfigFlag(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagError(err)
	}
	if len(pos) == 0 {
		return usagef("sim needs an action")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	if cfg.Backend != config.BackendSim {
		return fmt.Errorf("%s selects backend %q: fault injection works on the simulator only (backend = \"sim\")", cfg.Source, cfg.Backend)
	}
	d, err := sim.Open(cfg.SimDir, sim.Options{})
	if err != nil {
		return err
	}
	action, rest := pos[0], pos[1:]
	need := func(n int) error {
		if len(rest) != n {
			return usagef("sim %s takes %d arguments, got %d", action, n, len(rest))
		}
		return nil
	}
	switch action {
	case "inject":
		if len(rest) != 3 {
			return usagef("sim inject error|delay REQUEST VALUE")
		}
		switch rest[0] {
		case "error":
			errno, err := parseErrno(rest[2])
			if err != nil {
				return usagef("%v", err)
			}
			return d.InjectError(rest[1], errno)
		case "delay":
			delay, err := time.ParseDuration(rest[2])
			if err != nil {
				return usagef("delay %q: %v", rest[2], err)
			}
			return d.InjectDelay(rest[1], delay)
		}
		return usagef("sim inject %q: want error or delay", rest[0])
	case "clear":
		if err := need(0); err != nil {
			return err
		}
		f, err := d.ClearFaultsReport()
		if err != nil {
			return err
		}
		if len(f.Errors)+len(f.Delays)+len(f.Hanging) == 0 {
			fmt.Fprintln(env.stdout, "nothing to clear")
		}
		printFaults(env, f, "dropped ", "released ")
		return nil
	case "faults":
		if err := need(0); err != nil {
			return err
		}
		f, err := d.PendingFaults()
		if err != nil {
			return err
		}
		printFaults(env, f, "", "")
		return nil
	case "state":
		if err := need(2); err != nil {
			return err
		}
		st, err := jailhouse.ParseCellState(rest[1])
		if err != nil {
			return usagef("%v", err)
		}
		return d.SetCellState(rest[0], st)
	case "fail-cpu":
		if err := need(2); err != nil {
			return err
		}
		cpu, err := strconv.Atoi(rest[1])
		if err != nil {
			return usagef("CPU %q is not a number", rest[1])
		}
		return d.FailCPU(rest[0], cpu)
	case "policy":
		if err := need(2); err != nil {
			return err
		}
		err := d.SetShutdownPolicy(rest[0], rest[1])
		if errors.Is(err, sim.ErrPassiveCommRegion) {
			return fmt.Errorf("%w; only an inmate with an active comm region is asked, and can deny or ignore the request "+
				"(the image's /boot/config.json \"comm_region\": \"active\", docs/boot-description.md)", err)
		}
		return err
	}
	return usagef("unknown action %q", action)
}

// parseErrno reads an errno by name (EBUSY) or number (16).
func parseErrno(s string) (unix.Errno, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return unix.Errno(n), nil
	}
	name := strings.ToUpper(s)
	for e := unix.Errno(1); e < 256; e++ {
		if unix.ErrnoName(e) == name {
			return e, nil
		}
	}
	return 0, errors.New("errno " + strconv.Quote(s) + ": want a name such as EBUSY or a positive number")
}
