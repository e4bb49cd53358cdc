package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/runphi/runphi/cmd/internal/backend"
	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/hostview"
	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/partition"
)

func init() {
	register(&command{
		name:    "doctor",
		summary: "check this host end to end and say what to fix",
		usage:   "doctor [--config FILE] [--address SOCKET] [--containerd-config FILE] [--system-config FILE.cell] [--json]",
		run:     runDoctor,
	})
}

// Check statuses. Only "fail" makes doctor exit 1.
const (
	statusOK   = "ok"
	statusWarn = "warn"
	statusFail = "fail"
	statusSkip = "skip"
)

// doctorCheck is one finding.
type doctorCheck struct {
	// Name is a stable id scripts can match: config, board, backend,
	// module, device, enabled, simulator, hypervisor, system-config,
	// reserved-memory, state, containerd, shim, cri.
	Name   string `json:"name"`
	Status string `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do; set for warn and fail.
	Fix string `json:"fix,omitempty"`
}

// doctorReport is `runphi doctor --json`.
type doctorReport struct {
	// OK is true when no check failed (warnings allowed); doctor exits 0
	// exactly then.
	OK       bool          `json:"ok"`
	Failures int           `json:"failures"`
	Warnings int           `json:"warnings"`
	Config   string        `json:"config"`
	Checks   []doctorCheck `json:"checks"`
}

// doctorOptions are the flags, plus the paths tests replace.
type doctorOptions struct {
	configPath       string // --config
	address          string // --address: the containerd to check
	containerdConfig string // --containerd-config, when no daemon runs
	systemConfig     string // --system-config

	procRoot          string // /proc
	sysfsRoot         string // /sys/devices/jailhouse
	devicePath        string // /dev/jailhouse
	iomemPath         string // /proc/iomem
	defaultConfigPath string // /etc/runphi/runphi.toml
	getenv            func(string) string
	// shimVersion runs `SHIM -v`; nil runs the binary.
	shimVersion func(path string) (string, error)
	// containerdVersion runs `BINARY --version`; nil runs the binary.
	containerdVersion func(binary string) (hostview.Version, error)
}

func runDoctor(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "doctor", commands["doctor"].usage)
	var o doctorOptions
	cf := addConfigFlag(fs)
	fs.StringVar(&o.address, "address", "", "the containerd to check, by its gRPC `socket` (default: the one at /run/containerd/containerd.sock, or the only one running)")
	fs.StringVar(&o.containerdConfig, "containerd-config", "", "containerd's config.toml: the daemon started with it is checked, or the file alone when none runs (default /etc/containerd/config.toml)")
	fs.StringVar(&o.systemConfig, "system-config", "", "the root cell `file` given to `jailhouse enable`, to compare with the board profile")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() != 0 {
		return usagef("doctor takes no arguments")
	}
	o.configPath = *cf.path
	rep := checkHost(o)
	if *asJSON {
		if err := emitJSON(env, rep); err != nil {
			return err
		}
	} else {
		printDoctor(env, rep)
	}
	if !rep.OK {
		return &codeError{code: 1, err: fmt.Errorf("%d check(s) failed", rep.Failures)}
	}
	return nil
}

func printDoctor(env *cmdEnv, rep doctorReport) {
	for _, c := range rep.Checks {
		status := c.Status
		if status == statusFail {
			status = "FAIL"
		}
		fmt.Fprintf(env.stdout, "%-5s %-16s %s\n", status, c.Name, c.Detail)
		if c.Fix != "" && c.Status != statusOK {
			fmt.Fprintf(env.stdout, "%-5s %-16s fix: %s\n", "", "", c.Fix)
		}
	}
	switch {
	case rep.Failures > 0:
		fmt.Fprintf(env.stdout, "\n%d problem(s) to fix, %d warning(s).\n", rep.Failures, rep.Warnings)
	case rep.Warnings > 0:
		fmt.Fprintf(env.stdout, "\nno problems, %d warning(s).\n", rep.Warnings)
	default:
		fmt.Fprintf(env.stdout, "\nall checks passed.\n")
	}
}

// doctor collects the checks of one run.
type doctor struct {
	o      doctorOptions
	checks []doctorCheck
}

func (d *doctor) add(name, status, detail, fix string) {
	d.checks = append(d.checks, doctorCheck{Name: name, Status: status, Detail: detail, Fix: fix})
}

// checkHost runs every check in the order a user would fix things: the
// configuration, the board, the hypervisor, runphi's state, containerd.
func checkHost(o doctorOptions) doctorReport {
	if o.procRoot == "" {
		o.procRoot = hostview.DefaultProcRoot
	}
	if o.sysfsRoot == "" {
		o.sysfsRoot = jailhouse.DefaultSysfsRoot
	}
	if o.devicePath == "" {
		o.devicePath = config.DefaultDevicePath
	}
	if o.iomemPath == "" {
		o.iomemPath = filepath.Join(o.procRoot, "iomem")
	}
	if o.getenv == nil {
		o.getenv = os.Getenv
	}
	if o.shimVersion == nil {
		o.shimVersion = runShimVersion
	}
	if o.containerdVersion == nil {
		o.containerdVersion = hostview.ContainerdVersion
	}
	d := &doctor{o: o}

	daemon, daemonNote := d.selectDaemon()
	cfg, cfgOK := d.checkConfig(daemon)
	var board *partition.Board
	if cfgOK {
		board = d.checkBoard(cfg)
		h := hostview.Open(cfg, hostview.Options{ProcRoot: o.procRoot, SysfsRoot: o.sysfsRoot, OpenSimulator: backend.OpenSimulator})
		if d.checkBackend(cfg) {
			if cfg.Backend == config.BackendSim {
				d.checkSimulator(h, cfg, board)
			} else {
				d.checkJailhouse(h, cfg, board)
			}
		}
		d.checkSystemConfig(board)
		d.checkState(h, cfg, board)
	}
	d.checkContainerd(daemon, daemonNote)
	d.checkShim(daemon)
	d.checkCRI(daemon, cfg, cfgOK)

	rep := doctorReport{Checks: d.checks, Config: cfg.Source}
	for _, c := range d.checks {
		switch c.Status {
		case statusFail:
			rep.Failures++
		case statusWarn:
			rep.Warnings++
		}
	}
	rep.OK = rep.Failures == 0
	return rep
}

// selectDaemon picks the containerd to check: the one at --address, else
// the one started with --containerd-config (or none), else the one at the
// default socket, else the only one running. The note says why none was
// picked.
func (d *doctor) selectDaemon() (*hostview.Daemon, string) {
	daemons, err := hostview.ContainerdDaemons(d.o.procRoot)
	if err != nil {
		return nil, err.Error()
	}
	var listed []string
	for _, dm := range daemons {
		listed = append(listed, fmt.Sprintf("pid %d at %s", dm.PID, dm.Address))
	}
	want := strings.TrimPrefix(d.o.address, "unix://")
	if want != "" {
		for i := range daemons {
			if filepath.Clean(daemons[i].Address) == filepath.Clean(want) {
				return &daemons[i], ""
			}
		}
		if len(listed) == 0 {
			return nil, fmt.Sprintf("no containerd listens on %s (none is running)", want)
		}
		return nil, fmt.Sprintf("no containerd listens on %s (running: %s)", want, strings.Join(listed, "; "))
	}
	if d.o.containerdConfig != "" {
		// The daemon started with that configuration; with none, the
		// file is checked alone, never some other daemon.
		for i := range daemons {
			if filepath.Clean(daemons[i].ConfigPath) == filepath.Clean(d.o.containerdConfig) {
				return &daemons[i], ""
			}
		}
		return nil, ""
	}
	for i := range daemons {
		if daemons[i].Address == hostview.DefaultContainerdAddress {
			return &daemons[i], ""
		}
	}
	switch len(daemons) {
	case 0:
		return nil, ""
	case 1:
		return &daemons[0], ""
	}
	return nil, fmt.Sprintf("%d containerd daemons run (%s) and none at %s", len(daemons), strings.Join(listed, "; "), hostview.DefaultContainerdAddress)
}

// checkConfig resolves the configuration as the shim of the checked
// containerd would: --config, else $RUNPHI_CONFIG here, else containerd's
// own RUNPHI_CONFIG, else /etc/runphi/runphi.toml.
func (d *doctor) checkConfig(daemon *hostview.Daemon) (config.Config, bool) {
	lo := config.LoadOptions{
		Path: d.o.configPath, Origin: "--config", Getenv: d.o.getenv,
		DefaultPath: d.o.defaultConfigPath, DevicePath: d.o.devicePath,
	}
	var daemonConfig string
	if daemon != nil {
		if env, err := hostview.Environ(d.o.procRoot, daemon.PID); err == nil {
			daemonConfig = env[config.Env]
		}
	}
	if lo.Path == "" && d.o.getenv(config.Env) == "" && daemonConfig != "" {
		lo.Path, lo.Origin = daemonConfig, fmt.Sprintf("RUNPHI_CONFIG of containerd pid %d", daemon.PID)
	}
	cfg, err := config.Load(lo)
	if err != nil {
		d.add("config", statusFail, err.Error(),
			"correct the file (keys: docs/configuration.md), or point --config / RUNPHI_CONFIG at the right one")
		return config.Config{Source: lo.Path}, false
	}
	detail := fmt.Sprintf("%s (%s): backend %q, state_dir %s, board %s", cfg.Source, cfg.Origin, cfg.Backend, cfg.StateDir, cfg.Board)
	if cfg.Backend == config.BackendSim {
		detail += ", sim_dir " + cfg.SimDir
	}
	if cfg.Missing {
		detail = fmt.Sprintf("%s does not exist: the defaults apply (board %s, state_dir %s)", cfg.Source, cfg.Board, cfg.StateDir)
	}
	d.add("config", statusOK, detail, "")
	if daemonConfig != "" && filepath.Clean(daemonConfig) != filepath.Clean(cfg.Source) {
		d.add("config", statusWarn,
			fmt.Sprintf("containerd (pid %d) gives its shims RUNPHI_CONFIG=%s, not the %s checked here", daemon.PID, daemonConfig, cfg.Source),
			fmt.Sprintf("run runphi doctor --config %s to check what partitions started by that containerd use", daemonConfig))
	}
	return cfg, true
}

func (d *doctor) checkBoard(cfg config.Config) *partition.Board {
	b, err := partition.LoadBoard(cfg.Board)
	if err != nil {
		d.add("board", statusFail, fmt.Sprintf("board %q (from %s): %v", cfg.Board, cfg.Source, err),
			fmt.Sprintf("set board in %s to a built-in profile (%s) or the path of a profile file (docs/boards.md)",
				cfg.Source, strings.Join(partition.BuiltinBoards(), ", ")))
		return nil
	}
	sys := b.SystemConfig()
	d.add("board", statusOK, fmt.Sprintf("%s (%s): root cell %q with CPUs %s, partitions get CPUs %s and RAM %s",
		b.Name, b.Source, sys.RootCell.Name, jailhouse.FormatCPUList(b.RootCPUs()),
		jailhouse.FormatCPUList(b.PartitionCPUs), b.Pool), "")
	return b
}

// checkBackend reports the selected backend; false means there is none
// and the hypervisor checks cannot run.
func (d *doctor) checkBackend(cfg config.Config) bool {
	switch cfg.Backend {
	case config.BackendSim:
		d.add("backend", statusOK, "the Jailhouse simulator (backend \"sim\"): partitions run on no real hypervisor", "")
	case config.BackendJailhouse:
		how := "backend = \"jailhouse\""
		if cfg.BackendDefaulted {
			how = d.o.devicePath + " exists and the file names no backend"
		}
		d.add("backend", statusOK, "the Jailhouse driver ("+how+")", "")
	default:
		d.add("backend", statusFail,
			fmt.Sprintf("no backend: %s does not exist and %s sets no backend, so every partition fails to start", d.o.devicePath, cfg.Source),
			fmt.Sprintf("on a Jailhouse board, load jailhouse.ko (docs/install.md); to use the simulator, set backend = \"sim\" in %s", cfg.Source))
		return false
	}
	return true
}

func (d *doctor) checkSimulator(h *hostview.Host, cfg config.Config, board *partition.Board) {
	if _, err := os.Stat(filepath.Join(cfg.SimDir, "state.json")); errors.Is(err, fs.ErrNotExist) {
		d.add("simulator", statusOK, fmt.Sprintf("%s holds no simulated host yet; the first partition creates it and enables it with board %s", cfg.SimDir, cfg.Board), "")
		return
	}
	on, err := h.Enabled()
	if err != nil {
		d.add("simulator", statusFail, err.Error(),
			fmt.Sprintf("if no partition runs, remove %s; the next partition recreates it", cfg.SimDir))
		return
	}
	if !on {
		d.add("simulator", statusOK, fmt.Sprintf("%s: disabled; the next partition enables it with board %s", cfg.SimDir, cfg.Board), "")
		return
	}
	d.add("simulator", statusOK, cfg.SimDir+": enabled", "")
	d.checkHypervisorMatchesBoard(h, cfg, board,
		fmt.Sprintf("or, once no partition runs, remove %s so that the next partition enables the simulator with board %s", cfg.SimDir, cfg.Board))
}

func (d *doctor) checkJailhouse(h *hostview.Host, cfg config.Config, board *partition.Board) {
	fi, err := os.Stat(d.o.sysfsRoot)
	if err != nil {
		d.add("module", statusFail, fmt.Sprintf("the jailhouse module is not loaded (%s: %v)", d.o.sysfsRoot, errors.Unwrap(err)),
			"modprobe jailhouse (or insmod driver/jailhouse.ko of your Jailhouse build); docs/install.md")
		return
	}
	_ = fi
	d.add("module", statusOK, "jailhouse.ko is loaded ("+d.o.sysfsRoot+")", "")
	d.checkDevice()
	on, err := jailhouse.ReadEnabled(d.o.sysfsRoot)
	switch {
	case err != nil:
		d.add("enabled", statusFail, err.Error(), "check that the jailhouse module matches the running kernel")
		return
	case !on:
		fix := "jailhouse enable <system config>.cell (the board's root cell; runphi never enables real hardware)"
		if board != nil {
			fix = fmt.Sprintf("jailhouse enable <the .cell of board %s>; runphi never enables real hardware", board.Name)
		}
		d.add("enabled", statusFail, "the hypervisor is not enabled: partitions cannot start", fix)
		return
	}
	d.add("enabled", statusOK, "the hypervisor is enabled", "")
	d.checkHypervisorMatchesBoard(h, cfg, board, "or disable the hypervisor when no partition runs and enable it with the board's system config")
	d.checkReservedMemory(board)
}

// checkDevice checks /dev/jailhouse: a character device only root may
// open, since whoever opens it can create cells and take CPUs from Linux.
func (d *doctor) checkDevice() {
	fi, err := os.Stat(d.o.devicePath)
	if err != nil {
		d.add("device", statusFail, fmt.Sprintf("%s: %v", d.o.devicePath, errors.Unwrap(err)),
			"the module creates it when loaded; without udev: mknod "+d.o.devicePath+" c 10 <minor from /sys/class/misc/jailhouse/dev>")
		return
	}
	mode := fi.Mode()
	if mode&fs.ModeCharDevice == 0 {
		d.add("device", statusFail, fmt.Sprintf("%s is not a character device (%v)", d.o.devicePath, mode),
			"remove it and reload the jailhouse module")
		return
	}
	if mode.Perm()&0o077 != 0 {
		d.add("device", statusWarn, fmt.Sprintf("%s is %v: users other than root can create cells and take CPUs from Linux", d.o.devicePath, mode),
			"chmod 0600 "+d.o.devicePath+" (the shim runs as root)")
		return
	}
	d.add("device", statusOK, fmt.Sprintf("%s %v", d.o.devicePath, mode), "")
}

// checkHypervisorMatchesBoard compares what the running hypervisor shows
// in sysfs (the root cell's name, and the CPUs of all cells together,
// which were the root cell's at enable) with the board profile.
func (d *doctor) checkHypervisorMatchesBoard(h *hostview.Host, cfg config.Config, board *partition.Board, otherFix string) {
	if board == nil {
		d.add("hypervisor", statusSkip, "no board profile to compare with", "")
		return
	}
	cells, err := h.Cells()
	if err != nil {
		d.add("hypervisor", statusFail, err.Error(), "check the backend")
		return
	}
	var root jailhouse.CellInfo
	var all []int
	for _, c := range cells {
		if c.ID == 0 {
			root = c
		}
		all = append(all, c.CPUs...)
		all = append(all, c.FailedCPUs...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	sys := board.SystemConfig()
	var diffs []string
	if root.Name != sys.RootCell.Name {
		diffs = append(diffs, fmt.Sprintf("root cell %q, the board's is %q", root.Name, sys.RootCell.Name))
	}
	if want := board.RootCPUs(); !slices.Equal(all, want) {
		diffs = append(diffs, fmt.Sprintf("CPUs %s, the board's root cell has %s", jailhouse.FormatCPUList(all), jailhouse.FormatCPUList(want)))
	}
	if len(diffs) > 0 {
		fix := fmt.Sprintf("set board in %s to the profile the hypervisor was enabled with, %s", cfg.Source, otherFix)
		d.add("hypervisor", statusFail,
			fmt.Sprintf("the running hypervisor does not match board %s: it has %s", board.Name, strings.Join(diffs, "; ")), fix)
		return
	}
	d.add("hypervisor", statusOK, fmt.Sprintf("runs root cell %q with CPUs %s, as board %s says", root.Name, jailhouse.FormatCPUList(all), board.Name), "")
}

// checkSystemConfig compares the file given to `jailhouse enable` with the
// system configuration the board profile generates.
func (d *doctor) checkSystemConfig(board *partition.Board) {
	if d.o.systemConfig == "" {
		return
	}
	data, err := os.ReadFile(d.o.systemConfig)
	if err != nil {
		d.add("system-config", statusFail, err.Error(), "pass the root cell .cell file that `jailhouse enable` was given")
		return
	}
	got, err := jailhouse.DecodeSystem(data)
	if err != nil {
		d.add("system-config", statusFail, fmt.Sprintf("%s: %v", d.o.systemConfig, err), "rebuild it from the board's sources (or use the board profile's, which runphi config inspect shows)")
		return
	}
	if board == nil {
		d.add("system-config", statusOK, fmt.Sprintf("%s decodes (root cell %q); no board profile to compare with", d.o.systemConfig, got.RootCell.Name), "")
		return
	}
	if got.Revision != jailhouse.Revision14 {
		// Revisions 12 and 13 name no architecture: the board's says how
		// to read the platform part, and the file is taken as the
		// board's architecture (its layout must still fit it).
		if got, err = jailhouse.DecodeSystemArch(data, board.Arch); err != nil {
			d.add("system-config", statusFail, fmt.Sprintf("%s: %v", d.o.systemConfig, err), "rebuild it from the board's sources (or use the board profile's, which runphi config inspect shows)")
			return
		}
	}
	want := board.SystemConfig()
	var diffs []string
	diff := func(field string, g, w any) {
		if fmt.Sprint(g) != fmt.Sprint(w) {
			diffs = append(diffs, fmt.Sprintf("%s %v, the board has %v", field, g, w))
		}
	}
	diff("revision", got.Revision, want.Revision)
	diff("architecture", got.Arch, want.Arch)
	diff("root cell name", fmt.Sprintf("%q", got.RootCell.Name), fmt.Sprintf("%q", want.RootCell.Name))
	diff("root CPUs", jailhouse.FormatCPUList(got.RootCell.CPUs()), jailhouse.FormatCPUList(want.RootCell.CPUs()))
	diff("hypervisor memory", memText(got.HypervisorMemory), memText(want.HypervisorMemory))
	diff("debug console", fmt.Sprintf("%#x", got.DebugConsole.Address), fmt.Sprintf("%#x", want.DebugConsole.Address))
	if len(diffs) > 0 {
		d.add("system-config", statusFail,
			fmt.Sprintf("%s does not match board %s: %s", d.o.systemConfig, board.Name, strings.Join(diffs, "; ")),
			"use the board profile that describes this file, or write one from it (docs/boards.md)")
		return
	}
	gotBytes, _ := got.MarshalBinary()
	wantBytes, _ := want.MarshalBinary()
	if string(gotBytes) != string(wantBytes) {
		d.add("system-config", statusWarn,
			fmt.Sprintf("%s agrees with board %s on revision, root cell, CPUs, hypervisor memory and console, but not byte for byte", d.o.systemConfig, board.Name),
			"compare both with runphi config inspect")
		return
	}
	d.add("system-config", statusOK, fmt.Sprintf("%s is byte for byte the system config of board %s", d.o.systemConfig, board.Name), "")
}

func memText(m jailhouse.Memory) string {
	return fmt.Sprintf("%#x+%#x", m.PhysStart, m.Size)
}

// checkReservedMemory checks that Linux does not use the RAM the board
// gives partitions and the hypervisor: root Linux must be booted with it
// outside its memory (mem=, memmap= or reserved-memory no-map).
func (d *doctor) checkReservedMemory(board *partition.Board) {
	if board == nil {
		return
	}
	ram, hidden, err := hostview.ReadSystemRAM(d.o.iomemPath)
	switch {
	case err != nil:
		d.add("reserved-memory", statusWarn, err.Error(), "run doctor as root on the board")
		return
	case hidden:
		d.add("reserved-memory", statusWarn, d.o.iomemPath+" shows no addresses to this user", "run doctor as root")
		return
	}
	hv := board.SystemConfig().HypervisorMemory
	reserved := []struct {
		what string
		r    partition.Range
	}{
		{"the partition pool", board.Pool},
		{"the hypervisor memory", partition.Range{Start: hv.PhysStart, End: hv.PhysStart + hv.Size}},
	}
	var used []string
	for _, res := range reserved {
		for _, sr := range ram {
			lr := partition.Range{Start: sr.Start, End: sr.End + 1}
			if lr.Overlaps(res.r) {
				used = append(used, fmt.Sprintf("%s %s overlaps System RAM %s", res.what, res.r, lr))
			}
		}
	}
	if len(used) > 0 {
		d.add("reserved-memory", statusFail, "Linux uses memory reserved for Jailhouse: "+strings.Join(used, "; "),
			fmt.Sprintf("boot Linux so that it leaves that RAM alone (mem= or memmap=, or a reserved-memory node with no-map; the comment at the top of board %s says which)", board.Name))
		return
	}
	d.add("reserved-memory", statusOK, fmt.Sprintf("Linux's System RAM leaves the pool %s and the hypervisor memory alone", board.Pool), "")
}

// checkState reads the ledger and cross-checks it with the cells, as
// runphi ps does.
func (d *doctor) checkState(h *hostview.Host, cfg config.Config, board *partition.Board) {
	if _, err := os.Stat(cfg.StateDir); errors.Is(err, fs.ErrNotExist) {
		d.add("state", statusOK, cfg.StateDir+" does not exist yet; the first partition creates it", "")
		return
	}
	parts, _, err := h.Partitions()
	if err != nil {
		d.add("state", statusFail, err.Error(), ledgerRepair(h, cfg, parts))
		return
	}
	var bad []string
	for _, p := range parts {
		if len(p.Problems) > 0 {
			bad = append(bad, p.Owner()+": "+p.Problems[0])
		}
		if board != nil && p.Board != "" && p.Board != board.Name {
			bad = append(bad, fmt.Sprintf("%s was allocated on board %s, the configuration names %s", p.Owner(), p.Board, board.Name))
		}
	}
	if len(bad) > 0 {
		d.add("state", statusWarn, fmt.Sprintf("%d partition(s), with problems: %s", len(parts), strings.Join(bad, "; ")),
			"runphi ps shows each partition and what to do")
		return
	}
	d.add("state", statusOK, fmt.Sprintf("ledger %s: %d partition(s), consistent with the hypervisor", cfg.LedgerPath(), len(parts)), "")
}

// ledgerRepair says how to get past a ledger file that cannot be read,
// given the partitions ps lists without it. Moving the file away is safe
// once no cell but the root cell is left. While partitions run it is not:
// without their entries the allocator knows their cells only as unknown
// cells, holding what their saved configurations name, and a cell without
// one (made by hand or by an older runphi) only its CPUs. So they are
// stopped first (their cells go, only the release of their entries
// fails), or the file is rebuilt. A delete that failed on the damaged file
// left its task behind; the next allocation sweeps its saved configuration.
func ledgerRepair(h *hostview.Host, cfg config.Config, parts []hostview.Partition) string {
	ledger := cfg.LedgerPath()
	l := partition.OpenLedger(ledger)
	moveAway := fmt.Sprintf("mv %s %s.corrupt (runphi then starts an empty ledger)", ledger, ledger)
	cells, err := h.Cells()
	if err != nil {
		return fmt.Sprintf("the hypervisor's cells cannot be read either, so whether partitions run is unknown; once `runphi cells` lists only the root cell, %s", moveAway)
	}
	var running, saved []string
	for _, c := range cells {
		if c.ID == 0 {
			continue
		}
		running = append(running, fmt.Sprintf("%q", c.Name))
		saved = appendSaved(saved, l, c.Name)
	}
	var stopped []string
	for _, p := range parts {
		if p.State == hostview.StateDestroyed {
			stopped = append(stopped, p.Owner())
			saved = appendSaved(saved, l, p.Cell)
		}
	}
	leftovers := ""
	if len(saved) > 0 {
		leftovers = ", and rm " + strings.Join(saved, " ")
	}
	if len(running) == 0 {
		fix := "no cell but the root cell exists, so no partition holds anything: " + moveAway
		if len(stopped) > 0 {
			fix += fmt.Sprintf(", then `ctr task rm` %s again (its cell is gone; its delete failed on the damaged file)%s", strings.Join(stopped, ", "), leftovers)
		}
		return fix
	}
	these := "cell " + running[0] + " still exists"
	if len(running) > 1 {
		these = "cells " + strings.Join(running, ", ") + " still exist"
	}
	return fmt.Sprintf("%s. Until the file is repaired no partition can be created, and deleting one fails at releasing its entry. "+
		"Either stop them: `ctr task kill -s SIGKILL` each (its cell is destroyed; the kill reports the failed release), then, once `runphi cells` lists only the root cell, %s, `ctr task rm` them again%s. "+
		"Or keep them and rebuild the file by hand (format: docs/allocation.md#the-ledger) from `runphi ps` (owners, cells, CPUs) and `runphi config inspect %s` (what each cell holds)",
		these, moveAway, leftovers, l.ConfigPath("<cell>"))
}

// appendSaved appends the saved configuration of cell, if there is one.
func appendSaved(saved []string, l *partition.Ledger, cell string) []string {
	p := l.ConfigPath(cell)
	if _, err := os.Stat(p); err != nil || slices.Contains(saved, p) {
		return saved
	}
	return append(saved, p)
}

// supported containerd versions: the shim speaks the 1.6 … 2.4 protocols
// and is tested on 1.6.20 and 2.4.2.
var (
	minContainerd = hostview.Version{Major: 1, Minor: 6}
	maxContainerd = hostview.Version{Major: 2, Minor: 4, Patch: 1 << 30}
)

func (d *doctor) checkContainerd(daemon *hostview.Daemon, note string) {
	var (
		binary string
		where  string
	)
	switch {
	case daemon != nil:
		binary = filepath.Join(d.o.procRoot, fmt.Sprint(daemon.PID), "exe")
		where = fmt.Sprintf("containerd pid %d at %s (config %s)", daemon.PID, daemon.Address, daemon.ConfigPath)
	case note != "" && d.o.address != "":
		d.add("containerd", statusFail, note, "start containerd, or pass --address with the socket it listens on")
		return
	case note != "":
		// Several daemons and none at the default socket: which one
		// matters is the user's to say.
		d.add("containerd", statusWarn, note+"; checked none of them", "pass --address with the socket of the containerd that runs partitions")
		return
	default:
		p, _ := hostview.LookPathIn(d.o.getenv("PATH"), "containerd")
		if p == "" {
			d.add("containerd", statusFail, "containerd is not installed (not on PATH) and none is running",
				"apt-get install containerd (Debian 12 ships 1.6.20), or make deps for 1.6.20 and 2.4.2")
			return
		}
		binary, where = p, p+" (not running)"
	}
	v, err := d.o.containerdVersion(binary)
	if err != nil {
		d.add("containerd", statusWarn, fmt.Sprintf("%s: version unknown: %v", where, err), "check that containerd runs")
		return
	}
	switch {
	case v.Less(minContainerd):
		d.add("containerd", statusFail, fmt.Sprintf("%s is %s; runphi needs 1.6 or later", where, v.Text),
			"install containerd 1.6 or later (Debian 12: apt-get install containerd)")
	case maxContainerd.Less(v):
		d.add("containerd", statusWarn, fmt.Sprintf("%s is %s, newer than runphi was tested with (1.6.20, 2.4.2)", where, v.Text),
			"report what fails; 2.4.2 is known to work")
	case daemon == nil:
		d.add("containerd", statusWarn, fmt.Sprintf("%s is %s; no containerd is running, so its PATH and environment were not checked", where, v.Text),
			"start containerd (systemctl start containerd) and run doctor again, with --address if it is not at "+hostview.DefaultContainerdAddress)
	default:
		d.add("containerd", statusOK, fmt.Sprintf("%s is %s", where, v.Text), "")
	}
}

// checkShim checks that containerd finds the shim the way it resolves
// io.containerd.runphi.v2, and that it is the same build as this CLI.
func (d *doctor) checkShim(daemon *hostview.Daemon) {
	var (
		path, who string
		searched  []string
	)
	if daemon != nil {
		l := hostview.FindShimFor(d.o.procRoot, *daemon)
		if l.EnvErr != nil {
			d.add("shim", statusWarn, fmt.Sprintf("cannot read containerd's environment: %v", l.EnvErr), "run doctor as root")
		}
		path, searched = l.Path, l.Searched
		who = fmt.Sprintf("containerd (pid %d)", daemon.PID)
	} else {
		path, searched = hostview.LookPathIn(d.o.getenv("PATH"), hostview.ShimBinary)
		who = "a containerd started with this PATH"
	}
	if path == "" {
		d.add("shim", statusFail,
			fmt.Sprintf("%s cannot find %s: it is in none of %s; ctr run fails with `binary not installed \"%s\"`",
				who, hostview.ShimBinary, strings.Join(slices.Compact(searched), ":"), hostview.ShimBinary),
			"make install PREFIX=/usr/local (installs it into /usr/local/bin), or add its directory to containerd's PATH and restart containerd")
		return
	}
	out, err := d.o.shimVersion(path)
	if err != nil {
		d.add("shim", statusFail, fmt.Sprintf("%s finds %s, but `%s -v` fails: %v", who, path, path, err),
			"reinstall it (make install) for this machine's architecture")
		return
	}
	shimVer := parseShimVersion(out)
	if shimVer != version && shimVer != "" && version != "dev" {
		d.add("shim", statusWarn, fmt.Sprintf("%s finds %s version %s, but this runphi is %s", who, path, shimVer, version),
			"install the shim and the CLI from one build (make install)")
		return
	}
	d.add("shim", statusOK, fmt.Sprintf("%s finds %s (version %s)", who, path, dash(shimVer)), "")
}

func parseShimVersion(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func runShimVersion(path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-v").Output()
	return string(out), err
}

// checkCRI checks containerd's CRI runtime entries for runphi: what
// Kubernetes needs (ctr and nerdctl name the runtime themselves).
func (d *doctor) checkCRI(daemon *hostview.Daemon, cfg config.Config, cfgOK bool) {
	var cc hostview.ContainerdConfig
	switch {
	case daemon != nil:
		cc = daemon.Config
	case d.o.containerdConfig != "":
		cc = hostview.ReadContainerdConfig(d.o.containerdConfig)
		if !cc.Exists {
			d.add("cri", statusFail, d.o.containerdConfig+" does not exist", "pass the config.toml containerd is started with")
			return
		}
	default:
		cc = hostview.ReadContainerdConfig(hostview.DefaultContainerdConfig)
	}
	if cc.Err != nil {
		d.add("cri", statusFail, cc.Err.Error(), "fix the file; containerd refuses to start with it")
		return
	}
	file := cc.Path
	if !cc.Exists {
		file = cc.Path + " (missing: containerd's defaults)"
	}
	if !cc.CRIEnabled() {
		d.add("cri", statusOK, fmt.Sprintf("CRI is disabled in %s: ctr and nerdctl select runphi with --runtime %s (Kubernetes needs CRI)", file, hostview.RuntimeType), "")
		return
	}
	rts := cc.RunphiRuntimes()
	if len(rts) == 0 {
		detail := fmt.Sprintf("CRI is enabled in %s but has no runtime of type %s: Kubernetes cannot run partitions", file, hostview.RuntimeType)
		if len(cc.Imports) > 0 {
			detail += fmt.Sprintf(" (doctor does not read its imports %s)", strings.Join(cc.Imports, ", "))
		}
		d.add("cri", statusWarn, detail, criSnippet(cc))
		return
	}
	for _, r := range rts {
		if r.ConfigPath == "" {
			d.add("cri", statusOK, fmt.Sprintf("CRI runtime %q (%s) has no ConfigPath: its shims read $RUNPHI_CONFIG or %s", r.Name, file, config.DefaultPath), "")
			continue
		}
		got, err := config.Load(config.LoadOptions{Path: r.ConfigPath, Origin: "ConfigPath", DevicePath: d.o.devicePath})
		if err != nil {
			d.add("cri", statusFail, fmt.Sprintf("CRI runtime %q: ConfigPath: %v; every pod with this runtime fails to start", r.Name, err),
				fmt.Sprintf("create %s (docs/configuration.md) or correct ConfigPath in %s", r.ConfigPath, file))
			continue
		}
		if cfgOK && filepath.Clean(got.Source) != filepath.Clean(cfg.Source) {
			d.add("cri", statusWarn, fmt.Sprintf("CRI runtime %q reads ConfigPath %s, not the %s checked here", r.Name, r.ConfigPath, cfg.Source),
				"run runphi doctor --config "+r.ConfigPath+" to check what Kubernetes partitions use")
			continue
		}
		d.add("cri", statusOK, fmt.Sprintf("CRI runtime %q reads ConfigPath %s", r.Name, r.ConfigPath), "")
	}
}

// criSnippet is the runtime entry to add, in the file's own format.
func criSnippet(cc hostview.ContainerdConfig) string {
	if cc.Version >= 3 {
		return "add to " + cc.Path + ": [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runphi] runtime_type = '" + hostview.RuntimeType +
			"' with options ConfigPath = '" + config.DefaultPath + "' (docs/install.md), then restart containerd"
	}
	return "add to " + cc.Path + ": [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runphi] runtime_type = \"" + hostview.RuntimeType +
		"\" with options ConfigPath = \"" + config.DefaultPath + "\" (docs/install.md), then restart containerd"
}
