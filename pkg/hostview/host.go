package hostview

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/partition"
)

// Errors returned by Host.
var (
	// ErrNoBackend means the configuration selects no backend: there is
	// no /dev/jailhouse and no backend key.
	ErrNoBackend = errors.New("no hypervisor backend selected")
	// ErrSimNotCreated means the simulator's directory does not exist yet:
	// no shim has used it.
	ErrSimNotCreated = errors.New("simulator not created yet")
)

// errNoSimulator is what reading backend "sim" fails with when
// Options.OpenSimulator is nil.
var errNoSimulator = errors.New("no simulator opener given (Options.OpenSimulator)")

// Options says where a Host reads the machine. The zero value means the
// real paths.
type Options struct {
	// ProcRoot replaces /proc.
	ProcRoot string
	// SysfsRoot replaces /sys/devices/jailhouse for the jailhouse backend.
	SysfsRoot string
	// TaskRoots are bundle roots (<root>/<namespace>/<id>) searched for
	// state files besides those found through the running shims and
	// containerd daemons.
	TaskRoots []string
	// Now replaces time.Now (uptimes).
	Now func() time.Time
	// OpenSimulator opens the simulator of backend = "sim" (the binary
	// passes cmd/internal/backend.OpenSimulator, so that this package
	// does not import it); nil makes reading that backend an error.
	OpenSimulator func(dir string) (jailhouse.Driver, error)
}

// Host is the read-only view of runphi under one configuration.
type Host struct {
	cfg  config.Config
	opts Options
}

// Open returns the view of the host cfg describes. It touches nothing.
func Open(cfg config.Config, opts Options) *Host {
	if opts.ProcRoot == "" {
		opts.ProcRoot = DefaultProcRoot
	}
	if opts.SysfsRoot == "" {
		opts.SysfsRoot = jailhouse.DefaultSysfsRoot
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Host{cfg: cfg, opts: opts}
}

// Config returns the configuration the host was opened with.
func (h *Host) Config() config.Config { return h.cfg }

// SysfsRoot is the Jailhouse sysfs directory of the backend: the real one,
// or the simulator's rendering of it.
func (h *Host) SysfsRoot() (string, error) {
	switch h.cfg.Backend {
	case config.BackendJailhouse:
		return h.opts.SysfsRoot, nil
	case config.BackendSim:
		return filepath.Join(h.cfg.SimDir, "sys", "devices", "jailhouse"), nil
	}
	return "", fmt.Errorf("%w: no %s on this host and no backend in %s; set backend = \"sim\" there to use the simulator",
		ErrNoBackend, config.DefaultDevicePath, h.cfg.Source)
}

// simulator opens the simulator without creating it: a missing sim_dir is
// ErrSimNotCreated rather than a new, empty simulated host.
func (h *Host) simulator() (jailhouse.Driver, error) {
	if _, err := os.Stat(filepath.Join(h.cfg.SimDir, "state.json")); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: sim_dir %s (from %s) holds no simulated host; the first partition's shim creates and enables it",
			ErrSimNotCreated, h.cfg.SimDir, h.cfg.Source)
	}
	if h.opts.OpenSimulator == nil {
		return nil, fmt.Errorf("open the simulator at sim_dir %s (from %s): %w", h.cfg.SimDir, h.cfg.Source, errNoSimulator)
	}
	d, err := h.opts.OpenSimulator(h.cfg.SimDir)
	if err != nil {
		return nil, fmt.Errorf("open the simulator at sim_dir %s (from %s): %w", h.cfg.SimDir, h.cfg.Source, err)
	}
	return d, nil
}

// Enabled reports whether the hypervisor is enabled. The simulator not
// created yet counts as loaded but disabled.
func (h *Host) Enabled() (bool, error) {
	if h.cfg.Backend == config.BackendSim {
		d, err := h.simulator()
		if errors.Is(err, ErrSimNotCreated) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return d.Enabled()
	}
	root, err := h.SysfsRoot()
	if err != nil {
		return false, err
	}
	return jailhouse.ReadEnabled(root)
}

// Cells lists the cells the hypervisor has, root cell first. For the
// simulator the list is current: reading it advances scripted inmates.
func (h *Host) Cells() ([]jailhouse.CellInfo, error) {
	if h.cfg.Backend == config.BackendSim {
		d, err := h.simulator()
		if errors.Is(err, ErrSimNotCreated) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return d.Cells()
	}
	root, err := h.SysfsRoot()
	if err != nil {
		return nil, err
	}
	return jailhouse.ReadCells(root)
}

// FindCell finds a cell by name, or by decimal id as `jailhouse cell`
// does (a non-negative number is an id, anything else a name).
func (h *Host) FindCell(ref string) (jailhouse.CellInfo, error) {
	cells, err := h.Cells()
	if err != nil {
		return jailhouse.CellInfo{}, err
	}
	id, numErr := strconv.Atoi(ref)
	for _, c := range cells {
		if c.Name == ref || (numErr == nil && id >= 0 && c.ID == id) {
			return c, nil
		}
	}
	return jailhouse.CellInfo{}, fmt.Errorf("cell %q: %w", ref, jailhouse.ErrCellNotFound)
}

// Statistics reads the vmexit counters of the cell named (or numbered) ref.
func (h *Host) Statistics(ref string) (jailhouse.CellInfo, jailhouse.CellStatistics, error) {
	c, err := h.FindCell(ref)
	if err != nil {
		return jailhouse.CellInfo{}, jailhouse.CellStatistics{}, err
	}
	root, err := h.SysfsRoot()
	if err != nil {
		return c, jailhouse.CellStatistics{}, err
	}
	st, err := jailhouse.ReadStatistics(root, c.ID)
	return c, st, err
}

// Ledger returns the node-wide resource ledger's entries.
func (h *Host) Ledger() ([]partition.Entry, error) {
	return partition.OpenLedger(h.cfg.LedgerPath()).Entries()
}

// Tasks finds the shim state files of this configuration's partitions:
// in the bundles of running runphi shims (their working directory), in
// the bundle roots of running containerd daemons and of /run/containerd,
// and in Options.TaskRoots. A state file created under another
// configuration (another state_dir) is not this host's view and is left
// out. Unreadable state files come back as errors.
func (h *Host) Tasks() ([]Task, []error) {
	roots := slices.Clone(h.opts.TaskRoots)
	roots = append(roots, filepath.Join(DefaultContainerdState, taskDir))
	var bundles []string
	if shims, err := ShimProcesses(h.opts.ProcRoot); err == nil {
		for _, s := range shims {
			if s.Cwd == "" {
				continue
			}
			bundles = append(bundles, s.Cwd)
			// A bundle is <root>/<namespace>/<id>: the shim's siblings
			// (tasks of dead shims of the same daemon) are there too.
			roots = append(roots, filepath.Dir(filepath.Dir(s.Cwd)))
		}
	}
	if daemons, err := ContainerdDaemons(h.opts.ProcRoot); err == nil {
		for _, d := range daemons {
			roots = append(roots, d.TaskRoot())
		}
	}
	slices.Sort(roots)
	roots = slices.Compact(roots)
	all, errs := FindTasks(roots, bundles)
	var mine []Task
	for _, t := range all {
		if filepath.Clean(t.State.Config.StateDir) == filepath.Clean(h.cfg.StateDir) {
			mine = append(mine, t)
		}
	}
	return mine, errs
}

// Partition is one partition on this host: the ledger's entry, the
// hypervisor's cell and the shim's task state, joined on the owner
// "<namespace>/<container id>".
type Partition struct {
	Namespace   string `json:"namespace"`
	ContainerID string `json:"container_id"`
	// Pod is set for containers created through CRI.
	Pod *Pod `json:"pod,omitempty"`
	// Cell is the cell name; CellID is -1 when the hypervisor has no such
	// cell.
	Cell   string `json:"cell"`
	CellID int    `json:"cell_id"`
	// State is the cell state as sysfs says it ("running", "shut down",
	// "failed", …); empty when there is no cell.
	State string `json:"state"`
	// CPUs are the CPUs the ledger gave the partition.
	CPUs []int `json:"cpus"`
	// RAM are the physical RAM ranges the ledger gave it.
	RAM []partition.Range `json:"ram"`
	// RAMBytes is their total size.
	RAMBytes uint64 `json:"ram_bytes"`
	// Board is the board profile the allocation was made on.
	Board string `json:"board"`
	// Console is the partition's console kind: "ivshmem" (the default),
	// "virtual" (the hypervisor's console ring) or "none"; empty when the
	// task's rootfs could not be read.
	Console string `json:"console"`
	// Created is when the ledger allocation was made (cell creation);
	// zero when the ledger has no entry.
	Created time.Time `json:"created"`
	// UptimeSeconds counts from Created.
	UptimeSeconds int64 `json:"uptime_seconds"`
	// ShimPID is the shim serving the task (from the state file, else the
	// process that made the ledger entry); ShimAlive says it still runs.
	ShimPID   int  `json:"shim_pid"`
	ShimAlive bool `json:"shim_alive"`
	// Bundle is the containerd bundle, when its state file was found.
	Bundle string `json:"bundle,omitempty"`
	// Problems are inconsistencies between the three sources, each
	// saying what to do.
	Problems []string `json:"problems,omitempty"`
}

// Owner is "<namespace>/<container id>"; empty for a runphi cell whose
// container nothing names (a row Partitions adds when the ledger cannot be
// read).
func (p Partition) Owner() string {
	if p.Namespace == "" && p.ContainerID == "" {
		return ""
	}
	return p.Namespace + "/" + p.ContainerID
}

// Partitions joins the ledger, the cells and the task states. Every ledger
// entry is a row; so is a state file that names a partition the ledger
// does not know. Rows come in ledger order, then the others by owner.
// Sources that fail (the hypervisor, a state file) are returned as
// warnings and the rows say what they lack.
//
// The error is set only when the ledger cannot be read, and the rows are
// still returned: those the task state files give, joined with the cells,
// with the ledger's columns (RAM, created, uptime) empty, and one row
// without an owner for each cell that no state file names but whose
// configuration runphi saved (so runphi created it). A damaged ledger is
// when the operator most needs to see what runs.
func (h *Host) Partitions() ([]Partition, []error, error) {
	var warnings []error
	entries, ledgerErr := h.Ledger()
	ledgerKnown := ledgerErr == nil
	cells, cellsErr := h.Cells()
	if cellsErr != nil {
		// Still list what the ledger holds; each row then says the
		// hypervisor could not be read.
		warnings = append(warnings, cellsErr)
	}
	cellsKnown := cellsErr == nil
	cellByName := map[string]jailhouse.CellInfo{}
	for _, c := range cells {
		cellByName[c.Name] = c
	}
	tasks, errs := h.Tasks()
	warnings = append(warnings, errs...)
	taskByOwner := map[string]Task{}
	for _, t := range tasks {
		taskByOwner[t.State.Owner()] = t
	}
	var rows []Partition
	inLedger := map[string]bool{}
	for _, e := range entries {
		inLedger[e.Owner] = true
		ns, id, _ := strings.Cut(e.Owner, "/")
		p := Partition{
			Namespace: ns, ContainerID: id, Cell: e.Cell, CellID: -1,
			CPUs: e.CPUs, RAM: e.RAM, Board: e.Board, Created: e.Created, ShimPID: e.PID,
		}
		for _, r := range e.RAM {
			p.RAMBytes += r.Size()
		}
		if !e.Created.IsZero() {
			p.UptimeSeconds = int64(h.opts.Now().Sub(e.Created) / time.Second)
		}
		if !e.Orphaned.IsZero() {
			// Its container is gone, with its state file and shim: the
			// advice for a live entry would send the user after a task
			// that does not exist.
			p.Problems = append(p.Problems, fmt.Sprintf("the entry is orphaned since %s: its container gave the cell up because it could not be destroyed (%s); every allocation tries to destroy it again and frees the entry once that works",
				e.Orphaned.Format(time.RFC3339), e.OrphanReason))
			if c, ok := cellByName[p.Cell]; ok {
				p.CellID, p.State = c.ID, c.State.String()
			}
			rows = append(rows, p)
			continue
		}
		creating := false
		if t, ok := taskByOwner[e.Owner]; ok {
			p.Bundle, p.Pod = t.Bundle, t.Pod
			p.Console = console(t.Bundle)
			if t.State.ShimPid != 0 {
				p.ShimPID = t.State.ShimPid
			}
			// The shim records the partition in its state file once the
			// cell exists; until then its Create is allocating, or waiting
			// for CELL_CREATE.
			creating = t.State.Partition == nil
		} else {
			p.Problems = append(p.Problems, "no task state file found for it (looked in the bundles of running shims and containerd daemons)")
		}
		h.checkShim(&p)
		if creating && cellsKnown && p.ShimAlive {
			if _, ok := cellByName[p.Cell]; !ok {
				p.State = StateCreating
				rows = append(rows, p)
				continue
			}
		}
		h.joinCell(&p, cellsKnown, cellByName)
		rows = append(rows, p)
	}
	var extra []Partition
	for _, t := range tasks {
		if inLedger[t.State.Owner()] {
			continue
		}
		p := Partition{
			Namespace: t.State.Namespace, ContainerID: t.State.ID, CellID: -1,
			Board: t.State.Config.Board, ShimPID: t.State.ShimPid, Bundle: t.Bundle, Pod: t.Pod,
		}
		p.Console = console(t.Bundle)
		h.checkShim(&p)
		switch {
		case t.State.Partition == nil && p.ShimAlive:
			p.State = StateCreating
		case t.State.Partition == nil:
			p.Problems = append(p.Problems, "the shim has not created a cell for it (Create in progress, or it failed and the shim died)")
		default:
			p.Cell = t.State.Partition.Cell
			if _, ok := cellByName[p.Cell]; cellsKnown && !ok {
				// Killed, or its cell was destroyed: the resources are back
				// in the pool and the task waits for its Delete.
				p.State = StateDestroyed
				break
			}
			if ledgerKnown {
				p.Problems = append(p.Problems, fmt.Sprintf("the ledger %s has no entry for it", h.cfg.LedgerPath()))
			}
			h.joinCell(&p, cellsKnown, cellByName)
		}
		extra = append(extra, p)
	}
	slices.SortFunc(extra, func(a, b Partition) int { return strings.Compare(a.Owner(), b.Owner()) })
	rows = append(rows, extra...)
	if !ledgerKnown {
		rows = append(rows, h.unnamedCells(cells, tasks)...)
	}
	return rows, warnings, ledgerErr
}

// unnamedCells are the rows of the cells runphi created (their saved
// configuration says so) that no task state file names, for when the
// ledger, which would name their owners, cannot be read.
func (h *Host) unnamedCells(cells []jailhouse.CellInfo, tasks []Task) []Partition {
	named := map[string]bool{}
	for _, t := range tasks {
		if t.State.Partition != nil {
			named[t.State.Partition.Cell] = true
		}
	}
	var rows []Partition
	for _, c := range cells {
		if c.ID == 0 || named[c.Name] || !h.savedConfig(c.Name) {
			continue
		}
		rows = append(rows, Partition{
			Cell: c.Name, CellID: c.ID, State: c.State.String(), CPUs: c.CPUs,
			Problems: []string{fmt.Sprintf("runphi created this cell (its configuration is saved in %s), but no task state file names its container (looked in the bundles of running shims and containerd daemons) and the ledger cannot be read",
				h.configPath(c.Name))},
		})
	}
	return rows
}

// The State of a row that has no cell: a Create that has not made it yet,
// and a task whose cell was destroyed (killed, or from outside) and whose
// resources are back in the pool, until `ctr task rm`.
const (
	StateCreating  = "creating"
	StateDestroyed = "destroyed"
)

func (h *Host) joinCell(p *Partition, cellsKnown bool, cellByName map[string]jailhouse.CellInfo) {
	if !cellsKnown {
		p.Problems = append(p.Problems, "the hypervisor's cells could not be read")
		return
	}
	c, ok := cellByName[p.Cell]
	if !ok {
		p.Problems = append(p.Problems, fmt.Sprintf("the hypervisor has no cell %q; the entry is stale: `ctr task rm` the container (or run `%s delete` in its bundle) to free it", p.Cell, ShimBinary))
		return
	}
	p.CellID, p.State = c.ID, c.State.String()
	if p.CPUs != nil && !slices.Equal(c.CPUs, p.CPUs) {
		p.Problems = append(p.Problems, fmt.Sprintf("cell %q has CPUs %q but the ledger gave it %q",
			p.Cell, jailhouse.FormatCPUList(c.CPUs), jailhouse.FormatCPUList(p.CPUs)))
	}
	if p.CPUs == nil {
		p.CPUs = c.CPUs
	}
}

func (h *Host) checkShim(p *Partition) {
	if p.ShimPID == 0 {
		return
	}
	proc, ok := ReadProcess(h.opts.ProcRoot, p.ShimPID)
	p.ShimAlive = ok && IsShim(proc)
	if !p.ShimAlive {
		p.Problems = append(p.Problems, fmt.Sprintf("its shim (pid %d) is gone; containerd cleans up with `%s delete` when it notices (or at its next start)", p.ShimPID, ShimBinary))
	}
}

// console says where the partition's console comes from: the boot
// description's "console" key ("ivshmem" when absent, docs/console.md),
// read from the task's rootfs, which is mounted while the task exists.
// Empty when the bundle is unknown or the rootfs cannot be read.
func console(bundle string) string {
	if bundle == "" {
		return ""
	}
	d, err := partition.ReadBootDescription(filepath.Join(bundle, "rootfs"))
	if err != nil {
		return ""
	}
	if d.HasConsole {
		return d.Console.String()
	}
	return partition.ConsoleIVSHMEM.String()
}
