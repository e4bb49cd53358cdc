package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/internal/abi"
)

// Options configure a Driver. The zero value gives the defaults.
type Options struct {
	// Arch is the architecture the simulated driver and hypervisor were
	// built for (JAILHOUSE_ARCHITECTURE). It is a property of the
	// simulated host, kept in the state directory: nil means ArchARM64
	// for a new directory and the directory's own arch otherwise; a
	// different explicit value fails Open. It is a pointer because
	// ArchX86 is the zero Arch (write new(jailhouse.ArchX86)).
	Arch *jailhouse.Arch
	// NrCPUIDs is Linux's nr_cpu_ids, the width of the cpus_assigned
	// masks. 0 means: the root cell's highest CPU + 1, taken at each
	// enable. Like Arch it belongs to the host.
	NrCPUIDs int
	// Now is the clock scripted inmates run on (time.Now if nil). Tests
	// use a fake clock to step through sleeps.
	Now func() time.Time
	// ReplyTimeout bounds how long a request waits for a cell that
	// ignores the shutdown request while its msg_reply_timeout is 0. The
	// real hypervisor waits forever with the root cell frozen; the
	// simulator then fails the request with EPERM and ErrNoReply. 0 means
	// 5 seconds. It is real time, whatever Now says.
	ReplyTimeout time.Duration
}

const (
	defaultReplyTimeout = 5 * time.Second
	// replyGrace is how long an ignored shutdown request of a cell with a
	// non-zero msg_reply_timeout waits before the hypervisor's timeout
	// loop runs out (it counts spin iterations, a short time in reality).
	replyGrace = 100 * time.Millisecond
	// requestPoll is how often a waiting request looks at the cell again.
	requestPoll = 20 * time.Millisecond
)

// Driver is a simulated jailhouse.ko with its hypervisor. All its state is
// on disk under one directory; a Driver holds the directory, its options,
// its mapping of the directory's generation file and the answers of its
// last polls (poll.go). It is safe for concurrent use, and several Drivers
// in several processes on one directory see one simulated host. A Driver
// needs no Close: the mapping is released when the Driver is garbage or the
// process exits.
type Driver struct {
	dir          string
	sysfs        string
	now          func() time.Time
	realClock    bool // now is time.Now: a wait for a time can sleep until it
	replyTimeout time.Duration

	// gen is the mapping of the generation file; nil when it could not
	// be mapped, and then every poll runs a transaction.
	gen   atomic.Pointer[genMap]
	polls pollCache
	// txs counts the transactions this Driver ran, for tests that check
	// that a poll did not run one.
	txs atomic.Uint64
}

var (
	_ jailhouse.Driver       = (*Driver)(nil)
	_ jailhouse.CellConsoler = (*Driver)(nil)
)

// Open opens the simulated host whose state lives under dir, creating it
// (mode 0700, Jailhouse loaded but not enabled) if needed. The sysfs tree
// is rendered under SysfsRoot. Opening a host that exists writes nothing
// unless the options change it, or the sysfs tree is missing or was left
// half rendered by a process that died.
func Open(dir string, opts Options) (*Driver, error) {
	if dir == "" {
		return nil, errors.New("open simulator: empty state directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open simulator: %w", err)
	}
	for _, sub := range []string{"", tmpDir, consoleDir} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o700); err != nil {
			return nil, fmt.Errorf("open simulator: %w", err)
		}
	}
	d := &Driver{
		dir:          abs,
		sysfs:        filepath.Join(abs, sysfsSubdir),
		now:          opts.Now,
		replyTimeout: opts.ReplyTimeout,
	}
	if d.now == nil {
		d.now, d.realClock = time.Now, true
	}
	if d.replyTimeout <= 0 {
		d.replyTimeout = defaultReplyTimeout
	}
	if opts.NrCPUIDs < 0 || opts.NrCPUIDs > jailhouse.MaxCPUs {
		return nil, fmt.Errorf("open simulator: NrCPUIDs %d is not in 0..%d", opts.NrCPUIDs, jailhouse.MaxCPUs)
	}
	if opts.Arch != nil && *opts.Arch > jailhouse.ArchARM64 {
		return nil, fmt.Errorf("open simulator: unknown architecture %v", *opts.Arch)
	}

	unlock, err := flock(filepath.Join(abs, lockFile))
	if err != nil {
		return nil, fmt.Errorf("open simulator: %w", err)
	}
	defer unlock()
	// Without a mapping the Driver still works, running a transaction
	// for every poll.
	g, genFresh, gerr := mapGen(abs, true)
	if gerr == nil {
		d.gen.Store(g)
	}
	s, _, err := d.readState()
	changed := false
	switch {
	case errors.Is(err, fs.ErrNotExist):
		s = &hostState{Version: stateVersion, Arch: jailhouse.ArchARM64}
		if opts.Arch != nil {
			s.Arch = *opts.Arch
		}
		if opts.NrCPUIDs > 0 {
			s.NrCPUIDs, s.NrCPUIDsFixed = opts.NrCPUIDs, true
		}
		changed = true
	case err != nil:
		return nil, fmt.Errorf("open simulator: %w", err)
	default:
		if opts.Arch != nil && *opts.Arch != s.Arch {
			return nil, fmt.Errorf("open simulator: %s simulates a %v host, not %v", abs, s.Arch, *opts.Arch)
		}
		if opts.NrCPUIDs > 0 && opts.NrCPUIDs != s.NrCPUIDs {
			if s.NrCPUIDsFixed || s.Enabled {
				return nil, fmt.Errorf("open simulator: %s has nr_cpu_ids %d, not %d", abs, s.NrCPUIDs, opts.NrCPUIDs)
			}
			s.NrCPUIDs = opts.NrCPUIDs
			changed = true
		}
		if opts.NrCPUIDs > 0 && !s.NrCPUIDsFixed {
			s.NrCPUIDsFixed = true
			changed = true
		}
	}
	// The tree needs rendering when the state changes, when it is gone,
	// or when nothing vouches for it: no mapping, a new generation file
	// (a directory of an older simulator), or a writer that died before
	// finishing it (rendered behind the generation).
	needRender := changed || g == nil || genFresh || g.rendered() != g.load() || !d.treeRendered(s)
	if !needRender {
		return d, nil
	}
	d.announce(g, nil, true) // all cells: what was before is unknown
	if changed {
		if _, err := d.writeState(s); err != nil {
			return nil, fmt.Errorf("open simulator: %w", err)
		}
	}
	if err := d.render(s); err != nil {
		return nil, fmt.Errorf("open simulator: %w", err)
	}
	if g != nil {
		g.setRendered()
	}
	return d, nil
}

// SysfsRoot is the simulated /sys/devices/jailhouse.
func (d *Driver) SysfsRoot() string { return d.sysfs }

// Dir is the simulator's state directory.
func (d *Driver) Dir() string { return d.dir }

// request runs one driver request under the driver's global mutex, which
// (as jailhouse_lock does) serialises requests across all processes. A
// delay planted with InjectDelay is served first, with the mutex held, as
// a wedged ioctl would hold jailhouse_lock.
func (d *Driver) request(req string, fn func() error) error {
	unlock, err := flock(filepath.Join(d.dir, requestLock))
	if err != nil {
		return err
	}
	defer unlock()
	if err := d.serveDelay(req); err != nil {
		return err
	}
	return fn()
}

// Enable is JAILHOUSE_ENABLE.
func (d *Driver) Enable(systemConfig []byte) error {
	return d.request(jailhouse.RequestEnable, func() error {
		return d.update(func(t *tx) error { return t.enable(systemConfig) }, nil)
	})
}

var le = binary.LittleEndian

// Offsets in a revision-14 system configuration (jailhouse-abi §2.7).
const (
	sysHeaderSize   = 488
	sysRootCell     = 356
	cellDescSize    = 132
	descCPUSetSize  = 48
	descFlags       = 44
	descName        = 8
	cellNameMaxLen  = 31
	sigSystem       = "JHSYS"
	sigCell         = "JHCLL"
	configRevision  = 14
	x86BootCPU      = 0
	armMaxCellID    = 255
	maxCPUSetSize   = pageSize
	irqchipMaxPins  = 1024
	ivshmemMaxPeers = 12
)

func (t *tx) enable(b []byte) error {
	const req = jailhouse.RequestEnable
	if err := t.takeInjected(req, ""); err != nil {
		return err
	}
	// The driver copies the 488-byte header first.
	if len(b) < sysHeaderSize {
		return reqErr(req, "", unix.EFAULT, "the system configuration is %d bytes, shorter than struct jailhouse_system (%d)", len(b), sysHeaderSize)
	}
	if string(b[:5]) != sigSystem {
		return reqErr(req, "", unix.EINVAL, "not a system configuration: signature %q, want %q", b[:5], sigSystem)
	}
	if rev := le.Uint16(b[6:]); rev != configRevision {
		return reqErr(req, "", unix.EINVAL, "configuration revision %d, the driver reads %d", rev, configRevision)
	}
	if a := jailhouse.Arch(b[5]); a != t.s.Arch {
		return reqErr(req, "", unix.EINVAL, "configuration architecture %v, the driver was built for %v", a, t.s.Arch)
	}
	// get_max_cpus reads the root cpu set straight from user memory.
	setSize := int(le.Uint32(b[sysRootCell+descCPUSetSize:]))
	if setSize > len(b)-sysHeaderSize {
		return reqErr(req, "", unix.EFAULT, "the root cpu set (%d bytes at offset %d) runs past the %d-byte configuration", setSize, sysHeaderSize, len(b))
	}
	maxCPUs := 0
	for i := setSize - 1; i >= 0; i-- {
		if v := b[sysHeaderSize+i]; v != 0 {
			maxCPUs = i*8 + bits.Len8(v)
			break
		}
	}
	if maxCPUs == 0 {
		return reqErr(req, "", unix.EINVAL, "the root cell's cpu set is empty")
	}
	if t.s.Enabled {
		return reqErr(req, "", unix.EBUSY, "jailhouse is already enabled")
	}
	sys, err := jailhouse.DecodeSystem(b)
	if err != nil {
		// The real driver copies jailhouse_system_config_size() bytes
		// and the hypervisor reads them as they come; the simulator
		// refuses what it cannot decode.
		return reqErr(req, "", unix.EINVAL, "the simulator cannot decode the configuration: %v", err)
	}
	hvSize := sys.HypervisorMemory.Size
	coreAndPerCPU := uint64(hvCoreSize + maxCPUs*hvPerCPUSize)
	if coreAndPerCPU >= hvSize || uint64(len(b)) >= hvSize-coreAndPerCPU {
		return reqErr(req, "", unix.EINVAL, "hypervisor_memory.size 0x%x cannot hold the hypervisor core, %d per-CPU areas and the %d-byte configuration",
			hvSize, maxCPUs, len(b))
	}
	rootCPUs := sys.RootCell.CPUs()
	nr := maxCPUs
	if t.s.NrCPUIDsFixed {
		nr = t.s.NrCPUIDs
	}
	for _, c := range rootCPUs {
		if c >= nr {
			return reqErr(req, "", unix.EINVAL, "root cell CPU %d does not exist: nr_cpu_ids is %d", c, nr)
		}
	}

	// Every root CPU enters the hypervisor; its memory is fresh.
	t.s.NrCPUIDs = nr
	t.s.Ring = ring{}
	t.s.LastConsole.Valid = false
	t.s.ConsoleAvailable = sys.Flags&jailhouse.SysVirtualDebugConsole != 0
	t.s.Stats = nil
	memPages := int((hvSize - coreAndPerCPU - uint64(len(b))) / pageSize)
	remapUsed := 0
	if t.s.Arch == jailhouse.ArchX86 {
		remapUsed = 16392 // the x86 hypervisor maps the APIC and IOAPIC pages early
	}
	st := &systemState{
		Flags:     sys.Flags,
		RootName:  sys.RootCell.Name,
		RootCPUs:  rootCPUs,
		GICDBase:  sys.Platform.ARM.GICDBase,
		ConfigLen: len(b),
		RootPCI:   sys.RootCell.PCIDevices,
		Pool: pools{
			MemSize:   memPages,
			MemUsed:   min(memPages, 23+maxCPUs),
			RemapSize: remapPool,
			RemapUsed: remapUsed,
		},
	}
	t.s.System = st
	master := rootCPUs[0]
	t.hvPrint(jailhouse.MsgInitializing(Version, master))
	t.hvPrint(jailhouse.MsgCodeLocation(codeLocation(t.s.Arch)))
	t.hvPoolUsage(jailhouse.PoolAfterEarlySetup)
	t.hvPrint(jailhouse.MsgInitializingProcessors)
	for _, c := range rootCPUs {
		t.hvPrint(jailhouse.MsgCPUOK(c))
	}
	fail := func(errno unix.Errno, reason string) error {
		// An enable that fails after entry leaves its console as
		// last_console, so that readers see why.
		if t.s.ConsoleAvailable {
			t.snapshotConsole()
		}
		t.s.System = nil
		return reqErr(req, st.RootName, errno, "%s", reason)
	}
	for _, unit := range unitNames(t.s.Arch) {
		t.hvPrint(jailhouse.MsgInitializingUnit(unit))
		switch unit {
		case "irqchip":
			if errno, reason := t.irqchipCellInit(&sys.RootCell, st); errno != 0 {
				return fail(errno, reason)
			}
		case "PCI":
			links, errno, reason := t.pciCellInit(st.RootName, &sys.RootCell, st)
			if errno != 0 {
				return fail(errno, reason)
			}
			st.Links = links
		}
	}
	st.Pool.MemUsed = min(memPages, st.Pool.MemUsed+6+len(sys.RootCell.MemoryRegions)/4+2*len(sys.RootCell.PCIDevices))
	if t.s.Arch != jailhouse.ArchX86 {
		st.Pool.RemapUsed = 16 + 4*len(sys.RootCell.PCIDevices)
	}
	t.hvPoolUsage(jailhouse.PoolAfterLateSetup)
	t.hvPrint(jailhouse.MsgActivating)
	t.s.Enabled = true
	t.s.CoreWritten = true // the driver creates "core" on success and keeps it
	t.dmesg = append(t.dmesg, "The Jailhouse is opening.")
	return nil
}

func (t *tx) snapshotConsole() {
	t.s.LastConsole = lastConsole{
		Valid: true,
		ID:    t.s.LastConsole.ID + 1,
		Page:  ring{Content: slices.Clone(t.s.Ring.Content), Tail: t.s.Ring.Tail},
	}
}

// Disable is JAILHOUSE_DISABLE: it destroys every cell in creation order,
// stopping at the first that refuses, then shuts the hypervisor down.
func (d *Driver) Disable() error {
	const req = jailhouse.RequestDisable
	return d.request(req, func() error {
		var names []string
		err := d.update(func(t *tx) error {
			if err := t.takeInjected(req, ""); err != nil {
				return err
			}
			if !t.s.Enabled {
				return reqErr(req, "", unix.EINVAL, "jailhouse is not enabled")
			}
			for _, c := range t.s.Cells {
				names = append(names, c.Name)
			}
			return nil
		}, nil)
		if err != nil {
			return err
		}
		for _, name := range names {
			if err := d.manage(req, name, false, true, (*tx).destroyCell); err != nil {
				return err
			}
		}
		return d.update(func(t *tx) error {
			st := t.s.System
			t.rootHypercall()
			t.hvPrint(jailhouse.MsgShuttingDown)
			for _, c := range st.RootCPUs {
				t.hvPrint(jailhouse.MsgReleasingCPU(c))
			}
			if t.s.ConsoleAvailable {
				t.snapshotConsole()
			}
			t.s.Enabled = false
			t.s.System = nil
			t.s.Stats = nil
			t.dmesg = append(t.dmesg, "The Jailhouse was closed.")
			return nil
		}, nil)
	})
}

// CreateCell is JAILHOUSE_CELL_CREATE.
func (d *Driver) CreateCell(config []byte) error {
	return d.request(jailhouse.RequestCellCreate, func() error {
		return d.update(func(t *tx) error { return t.createCell(config) }, nil)
	})
}

func (t *tx) createCell(b []byte) error {
	const req = jailhouse.RequestCellCreate
	name := ""
	if len(b) >= descName+32 {
		name = string(cString(b[descName : descName+cellNameMaxLen]))
	}
	if err := t.takeInjected(req, name); err != nil {
		return err
	}
	if len(b) < cellDescSize || string(b[:5]) != sigCell {
		return reqErr(req, name, unix.EINVAL, "not a cell configuration: %d bytes, signature %q (want at least %d bytes and %q)",
			len(b), b[:min(5, len(b))], cellDescSize, sigCell)
	}
	if rev := le.Uint16(b[6:]); rev != configRevision {
		return reqErr(req, name, unix.EINVAL, "configuration revision %d, the driver reads %d", rev, configRevision)
	}
	if a := jailhouse.Arch(b[5]); a != t.s.Arch {
		// The driver at e57d1eff logs this and returns 0 without
		// creating the cell (jailhouse-abi §1.3 step 5).
		t.dmesg = append(t.dmesg, "jailhouse: Configuration architecture mismatch")
		return nil
	}
	flags := jailhouse.CellFlags(le.Uint32(b[descFlags:]))
	if flags&jailhouse.CellVirtualConsoleActive != 0 {
		flags |= jailhouse.CellVirtualConsolePermitted
	}
	if !t.s.Enabled {
		return reqErr(req, name, unix.EINVAL, "jailhouse is not enabled")
	}
	st := t.s.System
	if name == st.RootName {
		return reqErr(req, name, unix.EEXIST, "the root cell has that name")
	}
	if c := t.s.cell(name); c != nil {
		return reqErr(req, name, unix.EEXIST, "cell %d has that name", c.ID)
	}
	cfg, err := jailhouse.DecodeCell(b)
	if err != nil {
		return reqErr(req, name, unix.EINVAL, "the simulator cannot decode the configuration: %v", err)
	}
	id := t.s.lowestFreeID()
	cpus := cfg.CPUs()
	for _, cpu := range cpus {
		if slices.Contains(st.RootCPUs, cpu) {
			continue
		}
		if owner := t.cpuOwner(cpu); owner != nil {
			return reqErr(req, name, unix.EBUSY, "CPU %d belongs to cell %q", cpu, owner.Name)
		}
		return reqErr(req, name, unix.EBUSY, "CPU %d is not in the root cell's cpu set", cpu)
	}
	if t.s.Arch == jailhouse.ArchX86 && slices.Contains(cpus, x86BootCPU) {
		return reqErr(req, name, unix.EINVAL, "cannot assign CPU 0 to other cells (x86)")
	}

	// The CELL_CREATE hypercall.
	t.rootHypercall()
	for _, other := range t.s.Cells {
		if other.State == jailhouse.StateRunningLocked {
			return reqErr(req, name, unix.EPERM, "cell %q is running/locked", other.Name)
		}
	}
	if len(b) > jailhouse.MaxConfigSize {
		return reqErr(req, name, unix.E2BIG, "the configuration is %d bytes, more than the %d (16 pages) the hypervisor maps", len(b), jailhouse.MaxConfigSize)
	}
	pages := cellPages(len(b), cfg)
	if st.Pool.MemUsed+pages > st.Pool.MemSize {
		return reqErr(req, name, unix.ENOMEM, "the hypervisor page pool is exhausted: %d of %d pages used, the cell needs %d",
			st.Pool.MemUsed, st.Pool.MemSize, pages)
	}
	if len(cfg.CPUSet) > maxCPUSetSize {
		return reqErr(req, name, unix.EINVAL, "cpu_set_size %d is more than a page", len(cfg.CPUSet))
	}
	if t.s.Arch != jailhouse.ArchX86 && id > armMaxCellID {
		return reqErr(req, name, unix.E2BIG, "cell id %d is above %d", id, armMaxCellID)
	}
	if errno, reason := t.irqchipCellInit(cfg, st); errno != 0 {
		return reqErr(req, name, errno, "%s", reason)
	}
	links, errno, reason := t.pciCellInit(name, cfg, st)
	if errno != 0 {
		return reqErr(req, name, errno, "%s", reason)
	}

	t.s.NextSerial++
	c := &cellState{
		Serial:          t.s.NextSerial,
		ID:              id,
		Name:            name,
		Flags:           flags,
		CPUs:            cpus,
		State:           jailhouse.StateShutDown,
		CPUResetAddress: cfg.CPUResetAddress,
		MsgReplyTimeout: cfg.MsgReplyTimeout,
		Regions:         cfg.MemoryRegions,
		PCI:             cfg.PCIDevices,
		PoolPages:       pages,
		Policy:          PolicyApprove,
	}
	st.RootCPUs = slices.DeleteFunc(st.RootCPUs, func(cpu int) bool { return slices.Contains(cpus, cpu) })
	t.resetStats(cpus)
	st.Links = links
	st.Pool.MemUsed += pages
	t.s.Cells = append(t.s.Cells, c)
	t.created = append(t.created, c.Serial)
	t.hvPrint(jailhouse.MsgCreatedCell(name))
	t.hvPoolUsage(jailhouse.PoolAfterCellCreation)
	t.dmesg = append(t.dmesg, fmt.Sprintf("Created Jailhouse cell %q", name))
	return nil
}

func (t *tx) cpuOwner(cpu int) *cellState {
	for _, c := range t.s.Cells {
		if slices.Contains(c.CPUs, cpu) {
			return c
		}
	}
	return nil
}

// LoadCell is JAILHOUSE_CELL_LOAD; with no images it is "cell shutdown".
func (d *Driver) LoadCell(name string, images ...jailhouse.Image) error {
	return d.request(jailhouse.RequestCellLoad, func() error {
		return d.manage(jailhouse.RequestCellLoad, name, true, false, func(t *tx, c *cellState) error {
			return t.loadCell(c, images)
		})
	})
}

// StartCell is JAILHOUSE_CELL_START.
func (d *Driver) StartCell(name string) error {
	return d.request(jailhouse.RequestCellStart, func() error {
		return d.manage(jailhouse.RequestCellStart, name, true, false, (*tx).startCell)
	})
}

// DestroyCell is JAILHOUSE_CELL_DESTROY.
func (d *Driver) DestroyCell(name string) error {
	return d.request(jailhouse.RequestCellDestroy, func() error {
		return d.manage(jailhouse.RequestCellDestroy, name, true, true, (*tx).destroyCell)
	})
}

// manage runs a cell management request in the driver's and hypervisor's
// order: enabled (EINVAL), lookup (ENOENT), root cell (EINVAL), for destroy
// no other cell running/locked (EPERM), then the cell's approval of the
// shutdown request, then effect. A cell that ignores the request makes the
// call wait, polling, as the real hypervisor does.
func (d *Driver) manage(req, name string, inject, destroy bool, effect func(*tx, *cellState) error) error {
	if err := abi.CheckCellName(name); err != nil {
		return reqErr(req, name, unix.EINVAL, "%v", err)
	}
	began := time.Now()
	for first := true; ; first = false {
		var v verdict
		err := d.update(func(t *tx) error {
			if first && inject {
				if err := t.takeInjected(req, name); err != nil {
					return err
				}
			}
			if !t.s.Enabled {
				return reqErr(req, name, unix.EINVAL, "jailhouse is not enabled")
			}
			c := t.s.cell(name)
			root := name == t.s.System.RootName
			if c == nil && !root {
				return reqErr(req, name, unix.ENOENT, "no cell has that name")
			}
			if first {
				t.rootHypercall()
			}
			if root {
				return reqErr(req, name, unix.EINVAL, "the root cell cannot be loaded, started or destroyed")
			}
			if destroy {
				for _, other := range t.s.Cells {
					if other != c && other.State == jailhouse.StateRunningLocked {
						return reqErr(req, name, unix.EPERM, "cell %q is running/locked", other.Name)
					}
				}
			}
			v = shutdownVerdict(c)
			switch v {
			case denied:
				return reqErr(req, name, unix.EPERM, "the cell denied the shutdown request")
			case pending:
				waited := time.Since(began)
				if c.MsgReplyTimeout == 0 {
					if waited < d.replyTimeout {
						return nil
					}
					e := reqErr(req, name, unix.EPERM, "no answer to the shutdown request after %s", d.replyTimeout)
					e.Err = ErrNoReply
					return e
				}
				if waited < replyGrace {
					return nil
				}
				// The hypervisor's timeout loop ran out: it stops
				// the cell, marks it failed and goes ahead.
				t.hvPrint("Timeout expired while waiting for reply from target cell\n")
				c.State = jailhouse.StateFailed
				c.Program = nil
				v = approved
			}
			return effect(t, c)
		}, nil)
		if err != nil || v != pending {
			return err
		}
		time.Sleep(requestPoll)
	}
}

// loadCell is the effect of CELL_LOAD after approval: CELL_SET_LOADABLE,
// then the driver's load_image for each image.
func (t *tx) loadCell(c *cellState, images []jailhouse.Image) error {
	const req = jailhouse.RequestCellLoad
	// The cell's CPUs are parked: whatever ran there stops.
	c.Failed = nil
	c.Program = nil
	for _, cpu := range c.CPUs {
		t.stat(cpu, statManagement, 1)
	}
	if !c.Loadable {
		c.State = jailhouse.StateShutDown
		c.Loadable = true
		t.hvPrint(jailhouse.MsgCellLoadable(c.Name))
	}
	for i, img := range images {
		size := uint64(len(img.Data))
		if size == 0 {
			continue
		}
		ri := slices.IndexFunc(c.Regions, func(r jailhouse.Memory) bool {
			return img.Target >= r.VirtStart && img.Target-r.VirtStart < r.Size
		})
		if ri < 0 {
			return reqErr(req, c.Name, unix.EINVAL, "image %d: target 0x%x lies in no memory region of the cell", i, img.Target)
		}
		r := c.Regions[ri]
		if size > r.Size-(img.Target-r.VirtStart) {
			return reqErr(req, c.Name, unix.EINVAL, "image %d: %d bytes at 0x%x run past the end of memory region %d (0x%x-0x%x)",
				i, size, img.Target, ri, r.VirtStart, r.VirtStart+r.Size-1)
		}
		const need = jailhouse.MemWrite | jailhouse.MemLoadable
		if r.Flags&need != need {
			return reqErr(req, c.Name, unix.EINVAL, "image %d: memory region %d (flags %v) lacks WRITE|LOADABLE", i, ri, r.Flags)
		}
		end := img.Target + size
		// What the new image overwrites is gone.
		c.Images = slices.DeleteFunc(c.Images, func(old image) bool {
			return old.Target < end && img.Target < old.Target+old.Size
		})
		im := image{Target: img.Target, Size: size}
		if isScript(img.Data) {
			text := cString(img.Data)
			im.Script = slices.Clone(text[:min(len(text), maxScriptSize+1)])
		}
		c.Images = append(c.Images, im)
	}
	return nil
}

// startCell is the effect of CELL_START after approval.
func (t *tx) startCell(c *cellState) error {
	c.Loadable = false
	c.State = jailhouse.StateRunning
	c.Failed = nil
	c.Policy = PolicyApprove
	c.Program = nil
	c.Starts++
	for i, cpu := range c.CPUs {
		t.stat(cpu, statManagement, 1)
		if i > 0 { // woken by PSCI CPU_ON or INIT/SIPI
			code := statARMPSCI
			if t.s.Arch == jailhouse.ArchX86 {
				code = statX86XAPIC
			}
			t.stat(c.CPUs[0], code, 1)
		}
	}
	t.hvPrint(jailhouse.MsgStartedCell(c.Name))
	script := entryScript(c)
	if script == nil {
		return nil // an opaque payload: runs silently until stopped
	}
	ops, err := parseScript(script)
	if err != nil {
		// The hypervisor cannot know what the payload means: the
		// inmate crashes, it does not fail the request.
		t.cellPrint(c, "runphi-sim: inmate crashed: "+err.Error())
		c.State = jailhouse.StateFailed
		return nil
	}
	c.Program = &program{Ops: ops, At: t.now.UnixNano()}
	return nil
}

// entryScript picks the script the cell runs: the image the first CPU
// starts in (the last one loaded over cpu_reset_address) if it is a script,
// else the first script image loaded; nil for an opaque payload.
func entryScript(c *cellState) []byte {
	for i := len(c.Images) - 1; i >= 0; i-- {
		im := c.Images[i]
		if c.CPUResetAddress >= im.Target && c.CPUResetAddress-im.Target < im.Size {
			if im.Script != nil {
				return im.Script
			}
			break
		}
	}
	for _, im := range c.Images {
		if im.Script != nil {
			return im.Script
		}
	}
	return nil
}

// destroyCell is the effect of CELL_DESTROY after approval.
func (t *tx) destroyCell(c *cellState) error {
	st := t.s.System
	t.hvPrint(jailhouse.MsgClosingCell(c.Name))
	t.unitsCellExit(c)
	t.resetStats(c.CPUs)
	st.RootCPUs = append(st.RootCPUs, c.CPUs...)
	slices.Sort(st.RootCPUs)
	st.Pool.MemUsed -= c.PoolPages
	t.hvPoolUsage(jailhouse.PoolAfterCellDestruction)
	t.s.Cells = slices.DeleteFunc(t.s.Cells, func(x *cellState) bool { return x == c })
	t.gone = append(t.gone, c.Serial)
	t.dmesg = append(t.dmesg, fmt.Sprintf("Destroyed Jailhouse cell %q", c.Name))
	return nil
}

// takeInjected fails the request with an error planted by InjectError.
func (t *tx) takeInjected(req, cell string) error {
	errno, ok := t.s.Injected[req]
	if !ok {
		return nil
	}
	delete(t.s.Injected, req)
	if len(t.s.Injected) == 0 {
		t.s.Injected = nil
	}
	e := reqErr(req, cell, errno, "")
	e.Err = ErrInjected
	return e
}

// Enabled reports the simulated /sys/devices/jailhouse/enabled.
func (d *Driver) Enabled() (bool, error) {
	if a := d.polls.getEnabled(); d.quiet(a.mark) {
		return a.enabled, nil
	}
	var enabled bool
	mark, err := d.updateMark(nil, func() error {
		var err error
		enabled, err = jailhouse.ReadEnabled(d.sysfs)
		return err
	})
	if err == nil {
		d.polls.putEnabled(enabledAnswer{mark: mark, enabled: enabled})
	}
	return enabled, err
}

// Cells lists the cells in the simulated sysfs, root cell included.
func (d *Driver) Cells() ([]jailhouse.CellInfo, error) {
	if a := d.polls.getList(); d.quiet(a.mark) {
		return cloneInfos(a.cells), nil
	}
	var cells []jailhouse.CellInfo
	mark, err := d.updateMark(nil, func() error {
		var err error
		cells, err = jailhouse.ReadCells(d.sysfs)
		return err
	})
	if err == nil {
		d.polls.putList(listAnswer{mark: mark, cells: cloneInfos(cells)})
	}
	return cells, err
}

// Cell returns the simulated sysfs view of one cell.
func (d *Driver) Cell(name string) (jailhouse.CellInfo, error) {
	if a, ok := d.polls.cell(name); ok && d.quiet(a.mark) {
		return cloneInfo(a.info), a.err
	}
	var info jailhouse.CellInfo
	mark, err := d.updateCellMark(name, nil, func() error {
		var err error
		info, err = jailhouse.ReadCell(d.sysfs, name)
		return err
	})
	if err == nil || errors.Is(err, jailhouse.ErrCellNotFound) {
		d.polls.putCell(name, cellAnswer{mark: mark, info: cloneInfo(info), err: err})
	}
	return info, err
}
