package sim

// The hypervisor side of the model: console printk, page pools, per-CPU
// statistics, the units that check a cell at creation (irqchip, PCI and
// ivshmem), and the inmates, advanced to "now" by every transaction.

import (
	"fmt"
	"math"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// Version is the hypervisor version the simulated console reports, shaped
// like the real `git describe` string.
const Version = "v0.12 (0-ge57d1eff)"

// Simulated hypervisor image sizes, used for the enable-time memory check
// and the page pool size (the real accounting depends on the build).
const (
	hvCoreSize   = 0x30000
	hvPerCPUSize = 0x4000
	pageSize     = 4096
	remapPool    = 131072 // pages, as the real hypervisor's remap pool
)

// Statistic codes of CPU_GET_INFO (jailhouse-abi §3.2).
const (
	statTotal      = 0
	statMMIO       = 1
	statManagement = 2
	statHypercall  = 3
	// arm/arm64
	statARMMaintenance = 4
	statARMVirtIRQ     = 5
	statARMVirtSGI     = 6
	statARMPSCI        = 7
	statARMSMCCC       = 8
	statARMCP15        = 9
	// x86
	statX86PIO          = 4
	statX86XAPIC        = 5
	statX86CR           = 6
	statX86CPUID        = 7
	statX86XSETBV       = 8
	statX86Exception    = 9
	statX86MSROther     = 10
	statX86MSRX2APICICR = 11

	numStats = 12
)

type statName struct {
	name string
	code int
}

// statNames lists the statistics files the driver creates for arch, in the
// driver's order.
func statNames(arch jailhouse.Arch) []statName {
	names := []statName{
		{"vmexits_total", statTotal},
		{"vmexits_mmio", statMMIO},
		{"vmexits_management", statManagement},
		{"vmexits_hypercall", statHypercall},
	}
	if arch == jailhouse.ArchX86 {
		return append(names,
			statName{"vmexits_pio", statX86PIO},
			statName{"vmexits_xapic", statX86XAPIC},
			statName{"vmexits_cr", statX86CR},
			statName{"vmexits_cpuid", statX86CPUID},
			statName{"vmexits_xsetbv", statX86XSETBV},
			statName{"vmexits_exception", statX86Exception},
			statName{"vmexits_msr_other", statX86MSROther},
			statName{"vmexits_msr_x2apic_icr", statX86MSRX2APICICR},
		)
	}
	names = append(names,
		statName{"vmexits_maintenance", statARMMaintenance},
		statName{"vmexits_virt_irq", statARMVirtIRQ},
		statName{"vmexits_virt_sgi", statARMVirtSGI},
		statName{"vmexits_psci", statARMPSCI},
		statName{"vmexits_smccc", statARMSMCCC},
	)
	if arch == jailhouse.ArchARM {
		names = append(names, statName{"vmexits_cp15", statARMCP15})
	}
	return names
}

// unitNames are the hypervisor units of arch in link order, as "Initializing
// unit" names them.
func unitNames(arch jailhouse.Arch) []string {
	switch arch {
	case jailhouse.ArchX86:
		return []string{"VT-d", "IOAPIC", "Cache Allocation Technology", "PCI"}
	case jailhouse.ArchARM:
		return []string{"irqchip", "PCI"}
	}
	return []string{"irqchip", "ARM SMMU v3", "PVU IOMMU", "ARM SMMU", "PCI"}
}

// codeLocation is what "Code location: %p" prints per arch.
func codeLocation(arch jailhouse.Arch) uint64 {
	switch arch {
	case jailhouse.ArchX86:
		return 0xfffffffff0000000
	case jailhouse.ArchARM:
		return 0xf0000000
	}
	return 0x0000ffffc0200000
}

// hvPrint writes hypervisor console text into the ring.
func (t *tx) hvPrint(text string) { t.s.Ring.write(text) }

func (t *tx) hvPoolUsage(when string) {
	p := t.s.System.Pool
	t.hvPrint(jailhouse.MsgPagePoolUsage(when, int64(p.MemUsed), int64(p.MemSize), int64(p.RemapUsed), int64(p.RemapSize)))
}

// stat adds n to a per-CPU counter and to that CPU's total.
func (t *tx) stat(cpu, code int, n uint32) {
	if t.s.Stats == nil {
		t.s.Stats = map[int]*cpuStats{}
	}
	st := t.s.Stats[cpu]
	if st == nil {
		st = &cpuStats{}
		t.s.Stats[cpu] = st
	}
	st[code] += n
	if code != statTotal {
		st[statTotal] += n
	}
}

// resetStats clears the counters of CPUs that change cells, as the
// hypervisor does.
func (t *tx) resetStats(cpus []int) {
	for _, c := range cpus {
		delete(t.s.Stats, c)
	}
}

// rootHypercall counts a management hypercall issued by the root cell.
func (t *tx) rootHypercall() {
	if t.s.System != nil && len(t.s.System.RootCPUs) > 0 {
		t.stat(t.s.System.RootCPUs[0], statHypercall, 1)
	}
}

// cellPages is the simulated page pool cost of a cell: its struct and
// config copy, a root page table, one page-table page per memory region and
// one page per PCI device.
func cellPages(cfgLen int, cfg *jailhouse.Cell) int {
	return (2048+cfgLen+pageSize-1)/pageSize + 1 + len(cfg.MemoryRegions) + len(cfg.PCIDevices)
}

// irqchipCellInit is the ARM irqchip unit's check of a cell's irqchips
// (the root cell's at enable): entries for the system's GICD must cover 128
// pins from a multiple of 32 within the 1024-interrupt bitmap. Entries for
// another address are silently ignored, as in the hypervisor.
func (t *tx) irqchipCellInit(cfg *jailhouse.Cell, sys *systemState) (unix.Errno, string) {
	if t.s.Arch == jailhouse.ArchX86 {
		return 0, ""
	}
	for i, chip := range cfg.IRQChips {
		if chip.Address != sys.GICDBase {
			continue
		}
		if chip.PinBase%32 != 0 || chip.PinBase+128 > irqchipMaxPins {
			return unix.EINVAL, fmt.Sprintf("irqchip %d: pin_base %d is not a multiple of 32, or its 128 pins pass interrupt %d",
				i, chip.PinBase, irqchipMaxPins-1)
		}
	}
	return 0, ""
}

// pciCellInit is the PCI unit's cell_init for the cell named name (the root
// cell at enable), printing what it prints. It returns the ivshmem links as
// they are once the cell exists; the caller commits them only if the whole
// creation succeeds.
func (t *tx) pciCellInit(name string, cfg *jailhouse.Cell, sys *systemState) ([]ivshmemLink, unix.Errno, string) {
	links := cloneLinks(sys.Links)
	for i, dev := range cfg.PCIDevices {
		if dev.Type != jailhouse.PCITypeIVSHMEM {
			// A physical device moves from the root cell to the new one.
			if name != sys.RootName && slices.ContainsFunc(sys.RootPCI, func(r jailhouse.PCIDevice) bool { return r.BDF == dev.BDF && r.Domain == dev.Domain }) {
				t.hvPrint(fmt.Sprintf("Removing PCI device %s from cell \"%s\"\n", jailhouse.FormatBDF(dev.BDF), sys.RootName))
			}
			t.hvPrint(fmt.Sprintf("Adding PCI device %s to cell \"%s\"\n", jailhouse.FormatBDF(dev.BDF), name))
			continue
		}
		t.hvPrint(jailhouse.MsgAddingVirtualPCIDevice(dev.BDF, name))
		if int(dev.ShmemRegionsStart)+2+int(dev.ShmemPeers) > len(cfg.MemoryRegions) || dev.NumMSIXVectors > 16 {
			return nil, unix.EINVAL, fmt.Sprintf("ivshmem device %d: shmem_regions_start %d + 2 + %d peers passes the %d memory regions, or more than 16 MSI-X vectors",
				i, dev.ShmemRegionsStart, dev.ShmemPeers, len(cfg.MemoryRegions))
		}
		if dev.ShmemDevID >= ivshmemMaxPeers {
			return nil, unix.EINVAL, fmt.Sprintf("ivshmem device %d: shmem_dev_id %d is not below %d", i, dev.ShmemDevID, ivshmemMaxPeers)
		}
		li := slices.IndexFunc(links, func(l ivshmemLink) bool { return l.BDF == dev.BDF })
		if li < 0 {
			links = append(links, ivshmemLink{BDF: dev.BDF, Peers: make([]string, ivshmemMaxPeers)})
			li = len(links) - 1
		} else {
			if holder := links[li].Peers[dev.ShmemDevID]; holder != "" {
				return nil, unix.EBUSY, fmt.Sprintf("ivshmem device %d: %s dev-id %d is already linked by cell %q",
					i, jailhouse.FormatBDF(dev.BDF), dev.ShmemDevID, holder)
			}
			var peers []string
			for _, p := range links[li].Peers {
				if p != "" {
					peers = append(peers, p)
				}
			}
			t.hvPrint(jailhouse.MsgSharedMemoryEstablished(peers...))
		}
		links[li].Peers[dev.ShmemDevID] = name
	}
	return links, 0, ""
}

// unitsCellExit undoes pciCellInit for a destroyed cell.
func (t *tx) unitsCellExit(c *cellState) {
	sys := t.s.System
	for _, dev := range c.PCI {
		if dev.Type == jailhouse.PCITypeIVSHMEM {
			for li := range sys.Links {
				if sys.Links[li].BDF == dev.BDF && int(dev.ShmemDevID) < len(sys.Links[li].Peers) && sys.Links[li].Peers[dev.ShmemDevID] == c.Name {
					sys.Links[li].Peers[dev.ShmemDevID] = ""
				}
			}
			continue
		}
		t.hvPrint(fmt.Sprintf("Removing PCI device %s from cell \"%s\"\n", jailhouse.FormatBDF(dev.BDF), c.Name))
		if slices.ContainsFunc(sys.RootPCI, func(r jailhouse.PCIDevice) bool { return r.BDF == dev.BDF && r.Domain == dev.Domain }) {
			t.hvPrint(fmt.Sprintf("Adding PCI device %s to cell \"%s\"\n", jailhouse.FormatBDF(dev.BDF), sys.RootName))
		}
	}
	sys.Links = slices.DeleteFunc(sys.Links, func(l ivshmemLink) bool {
		return !slices.ContainsFunc(l.Peers, func(p string) bool { return p != "" })
	})
}

func cloneLinks(links []ivshmemLink) []ivshmemLink {
	out := make([]ivshmemLink, len(links))
	for i, l := range links {
		out[i] = ivshmemLink{BDF: l.BDF, Peers: slices.Clone(l.Peers)}
	}
	return out
}

// cellPrint is one line of hypervisor-side text about a cell written to
// its console (the crash notice of a script that does not parse). It never
// waits: what the console does not take is dropped.
func (t *tx) cellPrint(c *cellState, text string) {
	t.cellWrite(c, text+"\n")
}

// cellWrite is inmate console output: it returns how many bytes the
// console took. An inmate whose cell has VIRTUAL_CONSOLE_ACTIVE prints
// through the debug putc hypercall into the hypervisor ring, as Jailhouse's
// inmate library does; any other inmate writes its ivshmem console ring,
// which may be full (the rest waits for the reader, see conWrite).
func (t *tx) cellWrite(c *cellState, s string) int {
	first := -1
	if len(c.CPUs) > 0 {
		first = c.CPUs[0]
	}
	if c.Flags&jailhouse.CellVirtualConsoleActive != 0 {
		t.hvPrint(s)
		if first >= 0 {
			t.stat(first, statHypercall, uint32(len(s)))
		}
		return len(s)
	}
	return t.conWrite(c, s)
}

// advance runs every scripted inmate up to now.
func (t *tx) advance() {
	if !t.s.Enabled {
		return
	}
	for _, c := range t.s.Cells {
		if c.Program == nil {
			continue
		}
		if c.State != jailhouse.StateRunning && c.State != jailhouse.StateRunningLocked {
			c.Program = nil // stopped from outside
			continue
		}
		c.Program.run(t.now, &cellInmate{t: t, c: c})
		if c.Program.done() {
			c.Program = nil
		}
	}
}

// quietUntil reports until when advance would do nothing: given that the
// inmates were last advanced to now, an advance at any time before until
// (Unix nanoseconds) leaves the state as it is. timed is false when some
// inmate may act sooner than a clock can say (it is due, or waits for its
// console) or advance would change the state anyway; until is
// math.MaxInt64 when no inmate will ever run again by itself.
func (s *hostState) quietUntil(now time.Time) (until int64, timed bool) {
	until = math.MaxInt64
	if !s.Enabled {
		return until, true // advance runs nothing
	}
	for _, c := range s.Cells {
		at, ok := c.quietUntil(now)
		if !ok {
			return 0, false
		}
		until = min(until, at)
	}
	return until, true
}

// cellQuietUntil is quietUntil for the inmate of the cell called name
// only: what a poll about that cell needs, since other inmates acting do
// not change its answer.
func (s *hostState) cellQuietUntil(name string, now time.Time) (until int64, timed bool) {
	c := s.cell(name)
	if !s.Enabled || c == nil {
		return math.MaxInt64, true
	}
	return c.quietUntil(now)
}

// quietUntil is quietUntil for one cell's inmate, on an enabled host.
func (c *cellState) quietUntil(now time.Time) (until int64, timed bool) {
	if c.Program == nil {
		return math.MaxInt64, true
	}
	if c.State != jailhouse.StateRunning && c.State != jailhouse.StateRunningLocked {
		return 0, false // advance would drop the program
	}
	return c.Program.wake(now)
}

// cellInmate lets a program act on its cell.
type cellInmate struct {
	t *tx
	c *cellState
}

func (in *cellInmate) write(s string) int { return in.t.cellWrite(in.c, s) }

func (in *cellInmate) readLine(p *program) (string, bool) { return in.t.cellInput(in.c, p) }

func (in *cellInmate) setPolicy(p string) { in.c.Policy = p }

func (in *cellInmate) state(k opKind) {
	c := in.c
	switch k {
	case opExit:
		c.State = jailhouse.StateShutDown
	case opFail:
		c.State = jailhouse.StateFailed
	case opLock:
		if c.State == jailhouse.StateRunning {
			c.State = jailhouse.StateRunningLocked
		}
	case opUnlock:
		if c.State == jailhouse.StateRunningLocked {
			c.State = jailhouse.StateRunning
		}
	}
	if len(c.CPUs) > 0 {
		// Writing the comm region traps as an MMIO exit on no CPU, but
		// halting (exit, fail) ends in a management exit.
		if k == opExit || k == opFail {
			in.t.stat(c.CPUs[0], statManagement, 1)
		}
	}
}

// sleep accounts the timer interrupt that ends a sleep.
func (in *cellInmate) sleep() {
	if len(in.c.CPUs) == 0 {
		return
	}
	code := statARMVirtIRQ
	if in.t.s.Arch == jailhouse.ArchX86 {
		code = statX86XAPIC
	}
	in.t.stat(in.c.CPUs[0], code, 1)
}

// verdict is the outcome of the hypervisor's cell_shutdown_ok.
type verdict int

const (
	approved verdict = iota
	denied
	pending
)

// shutdownVerdict is cell_exchange_message(SHUTDOWN_REQUEST) at one moment:
// passive cells and cells that are shut down or failed approve at once; an
// inmate answers according to its on-shutdown policy (approve when it set
// none); a cell in "Comm ABI mismatch" never answers.
func shutdownVerdict(c *cellState) verdict {
	if c.Flags&jailhouse.CellPassiveCommRegion != 0 {
		return approved
	}
	switch c.State {
	case jailhouse.StateShutDown, jailhouse.StateFailed:
		return approved
	case jailhouse.StateFailedCommRev:
		return pending
	}
	switch c.Policy {
	case PolicyDeny:
		return denied
	case PolicyIgnore:
		return pending
	}
	return approved
}
