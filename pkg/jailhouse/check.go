package jailhouse

import (
	"fmt"
	"math"
	"slices"
)

// Severity ranks a Finding.
type Severity int

const (
	// SeverityWarning: the configuration works but is likely not what was
	// meant, or may fail depending on the caller.
	SeverityWarning Severity = iota + 1
	// SeverityError: the driver or hypervisor rejects the configuration,
	// or accepts it and then misbehaves (a hang, a parked CPU, memory
	// shared by accident). `jailhouse config check` exits 1 on these.
	SeverityError
)

func (s Severity) String() string {
	switch s {
	case SeverityWarning:
		return "warning"
	case SeverityError:
		return "error"
	}
	return fmt.Sprintf("Severity(%d)", int(s))
}

// Finding is one problem Check found.
type Finding struct {
	Severity Severity
	Cell     string // the cell's name; the root cell's for system-level findings
	Field    string // C name of the offending part, e.g. "memory_regions[3]"
	Msg      string
}

func (f Finding) String() string {
	return fmt.Sprintf("%s: cell %q: %s: %s", f.Severity, f.Cell, f.Field, f.Msg)
}

// HasErrors reports whether any finding is an error.
func HasErrors(findings []Finding) bool {
	return slices.ContainsFunc(findings, func(f Finding) bool { return f.Severity == SeverityError })
}

// Page size the hypervisor maps memory regions with.
const pageSize = 0x1000

// Sizes of the interrupt-controller frames that must stay intercepted
// (tools/jailhouse-config-check; GICR is per CPU).
const (
	gicv2DistSize  = 0x1000
	gicv2CPUSize   = 0x2000 // GICC, GICH and GICV each
	gicv3DistSize  = 0x10000
	gicv3RedistCPU = 0x20000 // one RD_base + SGI_base pair per CPU
	xapicBase      = 0xfee00000
	ioapicSize     = 0x1000
)

// ivshmem limits of hypervisor/ivshmem.c (IVSHMEM_MAX_PEERS,
// IVSHMEM_MSIX_VECTORS).
const (
	ivshmemMaxPeers    = 12
	ivshmemMSIXVectors = 16
)

// Check runs the offline checks of `jailhouse config check` on a system
// configuration and the non-root cells meant to run on it, plus those the
// driver and hypervisor leave to the user (jailhouse-abi.md §5, §2.9, §8):
//
//   - per cell: overlapping regions (physical and virtual), RAM and
//     loadable regions that are not page-aligned, cpu sets that are empty
//     or not a multiple of 8 bytes, configurations over 64 KiB, PCI
//     capability and ivshmem region indexes out of range;
//   - against the system: architecture and revision mismatches, regions
//     overlapping hypervisor memory, PCI MMCONFIG, IOMMU units, GIC
//     frames, the xAPIC or IOAPICs, CPUs the root cell does not own, x86
//     CPU 0 in a non-root cell, a non-root cell with the root cell's name;
//   - across cells: CPUs or exclusive memory claimed by two non-root cells,
//     duplicate names, and non-root cells taking every root CPU.
//
// Overlap with the root cell's memory is not a finding: the hypervisor
// unmaps a cell's non-ROOTSHARED regions from the root on create, which is
// how a cell gets its memory. COMM_REGION regions are not backed by
// physical memory and take part only in virtual-overlap checks.
//
// sys may be nil; then only the per-cell and cross-cell checks run.
func Check(sys *System, cells ...*Cell) []Finding {
	var ck checker
	all := cells
	if sys != nil {
		all = append([]*Cell{&sys.RootCell}, cells...)
	}
	for _, c := range all {
		ck.cell(c, sys != nil && c == &sys.RootCell)
	}
	if sys != nil {
		for _, c := range all {
			ck.againstSystem(sys, c, c == &sys.RootCell)
		}
	}
	ck.crossCell(sys, cells)
	return ck.findings
}

// CheckCell runs the checks of Check that can find something wrong with
// cell itself: its own, against sys (which may be nil) and against each of
// others, the cells already created beside it. The findings are those
// Check(sys, append(others, cell)...) reports on cell, in the same order;
// sys and others are not checked themselves. A planner checks every
// new cell against the same board: comparing the root cell's regions
// pairwise (77 on qemu-arm64) was nine tenths of Check's time there, and
// nothing it finds is about the new cell.
func CheckCell(sys *System, cell *Cell, others ...*Cell) []Finding {
	var ck checker
	ck.cell(cell, false)
	if sys != nil {
		ck.againstSystem(sys, cell, false)
	}
	for _, a := range others {
		ck.pair(a, cell)
	}
	return ck.findings
}

type checker struct {
	findings []Finding
}

func (ck *checker) add(sev Severity, c *Cell, field, format string, args ...any) {
	ck.findings = append(ck.findings, Finding{Severity: sev, Cell: c.Name, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// lastAddr is the last byte of [start, start+size), saturating instead of
// wrapping around the top of the address space.
func lastAddr(start, size uint64) uint64 {
	if size > math.MaxUint64-start {
		return math.MaxUint64
	}
	return start + size - 1
}

func rangesOverlap(a, as, b, bs uint64) bool {
	if as == 0 || bs == 0 {
		return false
	}
	return a <= lastAddr(b, bs) && b <= lastAddr(a, as)
}

func isComm(m *Memory) bool { return m.Flags&MemCommRegion != 0 }

// isRAMLike: memory the cell runs from or is loaded into, as opposed to
// device MMIO and the comm page.
func isRAMLike(m *Memory) bool {
	return m.Flags&(MemIO|MemCommRegion) == 0 && m.Size != 0
}

func memField(i int) string { return fmt.Sprintf("memory_regions[%d]", i) }

func describe(m *Memory) string {
	return fmt.Sprintf("phys %#x virt %#x size %#x (%v)", m.PhysStart, m.VirtStart, m.Size, m.Flags)
}

// cell runs the checks that need nothing but the cell itself.
func (ck *checker) cell(c *Cell, root bool) {
	if len(c.CPUSet)%8 != 0 {
		ck.add(SeverityError, c, "cpu_set_size",
			"%d bytes is not a multiple of 8; the hypervisor reads the set as 64-bit words", len(c.CPUSet))
	}
	if len(c.CPUs()) == 0 {
		ck.add(SeverityError, c, "cpus", "the cell has no CPU")
	}
	if !root {
		// The hypervisor maps the configuration into NUM_TEMPORARY_PAGES
		// (16) pages, counting the page offset of the caller's buffer.
		switch size := CellConfigSize(c); {
		case size > MaxConfigSize:
			ck.add(SeverityError, c, "config size",
				"%d bytes; CELL_CREATE fails with E2BIG above %d", size, MaxConfigSize)
		case size > MaxConfigSize-pageSize:
			ck.add(SeverityWarning, c, "config size",
				"%d bytes; CELL_CREATE fails with E2BIG unless the buffer starts within %d bytes of a page boundary",
				size, MaxConfigSize-size)
		}
	}

	for i := range c.MemoryRegions {
		m := &c.MemoryRegions[i]
		if isRAMLike(m) || m.Flags&MemLoadable != 0 {
			if m.PhysStart%pageSize != 0 || m.VirtStart%pageSize != 0 || m.Size%pageSize != 0 {
				ck.add(SeverityError, c, memField(i),
					"RAM/loadable region %s is not page-aligned; the hypervisor would trap it as sub-page MMIO", describe(m))
			}
		}
		if m.Flags&MemLoadable != 0 && m.Flags&MemWrite == 0 {
			ck.add(SeverityWarning, c, memField(i), "LOADABLE without WRITE: CELL_LOAD cannot copy an image into it")
		}
		for j := i + 1; j < len(c.MemoryRegions); j++ {
			n := &c.MemoryRegions[j]
			var how []string
			if !isComm(m) && !isComm(n) && rangesOverlap(m.PhysStart, m.Size, n.PhysStart, n.Size) {
				how = append(how, "physically")
			}
			if rangesOverlap(m.VirtStart, m.Size, n.VirtStart, n.Size) {
				how = append(how, "virtually")
			}
			if how != nil {
				ck.add(SeverityError, c, memField(i), "%s overlaps %s with %s: %s",
					describe(m), joinAnd(how), memField(j), describe(n))
			}
		}
	}

	for i, p := range c.PCIDevices {
		field := fmt.Sprintf("pci_devices[%d]", i)
		if p.NumCaps > 0 && int(p.CapsStart)+int(p.NumCaps) > len(c.PCICaps) {
			ck.add(SeverityError, c, field, "capabilities %d..%d are beyond the %d pci_caps",
				p.CapsStart, int(p.CapsStart)+int(p.NumCaps)-1, len(c.PCICaps))
		}
		if p.Type == PCITypeIVSHMEM {
			// State table, R/W section, then one output section per peer.
			n := 2 + int(p.ShmemPeers)
			if int(p.ShmemRegionsStart)+n > len(c.MemoryRegions) {
				ck.add(SeverityError, c, field, "ivshmem needs memory regions %d..%d (2 + %d peers), the cell has %d",
					p.ShmemRegionsStart, int(p.ShmemRegionsStart)+n-1, p.ShmemPeers, len(c.MemoryRegions))
			}
			// hypervisor/ivshmem.c rejects these with EINVAL on create.
			if p.ShmemDevID >= ivshmemMaxPeers {
				ck.add(SeverityError, c, field, "shmem_dev_id %d; the hypervisor allows at most %d peers", p.ShmemDevID, ivshmemMaxPeers)
			} else if p.ShmemDevID >= p.ShmemPeers {
				ck.add(SeverityWarning, c, field, "shmem_dev_id %d is not below shmem_peers %d; the peer has no output section",
					p.ShmemDevID, p.ShmemPeers)
			}
			if p.NumMSIXVectors > ivshmemMSIXVectors {
				ck.add(SeverityError, c, field, "%d MSI-X vectors; ivshmem devices have at most %d", p.NumMSIXVectors, ivshmemMSIXVectors)
			}
		}
	}
}

func joinAnd(s []string) string {
	if len(s) == 2 {
		return s[0] + " and " + s[1]
	}
	return s[0]
}

// resource is a physical range that no cell may map.
type resource struct {
	name        string
	start, size uint64
}

// interceptions lists what the hypervisor must keep trapping: hypervisor
// memory, MMCONFIG, IOMMU units and the interrupt controller.
func interceptions(sys *System) []resource {
	res := []resource{{"hypervisor memory", sys.HypervisorMemory.PhysStart, sys.HypervisorMemory.Size}}
	if p := &sys.Platform; p.PCIMMConfigBase != 0 {
		res = append(res, resource{"PCI MMCONFIG", p.PCIMMConfigBase, (uint64(p.PCIMMConfigEndBus) + 1) << 20})
	}
	for i, u := range sys.Platform.IOMMUUnits {
		if u.Type != IOMMUUnused {
			res = append(res, resource{fmt.Sprintf("IOMMU %d (%s)", i, IOMMUTypeName(u.Type)), u.Base, uint64(u.Size)})
		}
	}
	if isARMFamily(sys.Arch) {
		a := &sys.Platform.ARM
		switch a.GICVersion {
		case 2:
			res = append(res,
				resource{"GICD", a.GICDBase, gicv2DistSize},
				resource{"GICC", a.GICCBase, gicv2CPUSize},
				resource{"GICH", a.GICHBase, gicv2CPUSize},
				resource{"GICV", a.GICVBase, gicv2CPUSize})
		case 3:
			ncpu := 1
			if cpus := sys.RootCell.CPUs(); len(cpus) > 0 {
				ncpu = cpus[len(cpus)-1] + 1
			}
			res = append(res,
				resource{"GICD", a.GICDBase, gicv3DistSize},
				resource{fmt.Sprintf("GICR (%d CPUs)", ncpu), a.GICRBase, uint64(ncpu) * gicv3RedistCPU})
		}
	} else {
		res = append(res, resource{"xAPIC", xapicBase, pageSize})
		for _, ic := range sys.RootCell.IRQChips {
			res = append(res, resource{"IOAPIC", ic.Address, ioapicSize})
		}
	}
	return res
}

func (ck *checker) againstSystem(sys *System, c *Cell, root bool) {
	if !root {
		if c.Arch != ArchUnknown && sys.Arch != ArchUnknown && c.Arch != sys.Arch {
			ck.add(SeverityError, c, "architecture",
				"cell is %v, system is %v; the driver returns success without creating the cell", c.Arch, sys.Arch)
		} else if c.Arch == ArchX86 && sys.Arch == ArchUnknown {
			ck.add(SeverityError, c, "architecture", "cell is x86, the system's platform_info is arm")
		}
		if rev, want := orDefault(c.Revision), orDefault(sys.Revision); rev != want {
			ck.add(SeverityError, c, "revision",
				"cell is revision %d, system is revision %d; the driver rejects it with EINVAL", rev, want)
		}
		if c.Name == sys.RootCell.Name {
			ck.add(SeverityError, c, "name", "the root cell is named %q too; CELL_CREATE fails with EEXIST", c.Name)
		}
		rootCPUs := sys.RootCell.CPUs()
		for _, cpu := range c.CPUs() {
			if !slices.Contains(rootCPUs, cpu) {
				ck.add(SeverityError, c, "cpus", "CPU %d is not owned by the root cell; CELL_CREATE fails with EBUSY", cpu)
			}
			if cpu == 0 && sys.Arch == ArchX86 {
				ck.add(SeverityError, c, "cpus", "CPU 0 cannot leave the root cell on x86; CELL_CREATE fails with EINVAL")
			}
		}
		if isARMFamily(sys.Arch) {
			for i, ic := range c.IRQChips {
				if ic.Address != sys.Platform.ARM.GICDBase {
					ck.add(SeverityWarning, c, fmt.Sprintf("irqchips[%d]", i),
						"address %#x is not the GICD base %#x; the hypervisor ignores this entry", ic.Address, sys.Platform.ARM.GICDBase)
				}
				if ic.PinBase%32 != 0 {
					ck.add(SeverityWarning, c, fmt.Sprintf("irqchips[%d]", i), "pin_base %d is not a multiple of 32", ic.PinBase)
				}
			}
		}
	} else if isARMFamily(sys.Arch) && sys.Platform.ARM.GICVersion != 2 && sys.Platform.ARM.GICVersion != 3 {
		ck.add(SeverityError, c, "platform_info.arm.gic_version", "GIC version %d; want 2 or 3", sys.Platform.ARM.GICVersion)
	}

	for _, r := range interceptions(sys) {
		for i := range c.MemoryRegions {
			m := &c.MemoryRegions[i]
			if !isComm(m) && rangesOverlap(m.PhysStart, m.Size, r.start, r.size) {
				ck.add(SeverityError, c, memField(i), "%s overlaps %s [%#x, %#x)",
					describe(m), r.name, r.start, r.start+r.size)
			}
		}
	}
}

func orDefault(r Revision) Revision {
	if r == 0 {
		return Revision14
	}
	return r
}

func (ck *checker) crossCell(sys *System, cells []*Cell) {
	var rootCPUs []int
	if sys != nil {
		rootCPUs = sys.RootCell.CPUs()
	}
	taken := map[int]bool{}
	for i, a := range cells {
		for _, b := range cells[i+1:] {
			ck.pair(a, b)
		}
		for _, cpu := range a.CPUs() {
			taken[cpu] = true
		}
	}
	if sys != nil && len(rootCPUs) > 0 {
		left := slices.DeleteFunc(slices.Clone(rootCPUs), func(cpu int) bool { return taken[cpu] })
		if len(left) == 0 {
			ck.add(SeverityError, &sys.RootCell, "cpus",
				"the non-root cells take every root CPU; the root cell would have none left")
		}
	}
}

// pair checks two non-root cells against each other, reporting on b, the
// one created second: a name both use, a CPU both claim, memory both map.
func (ck *checker) pair(a, b *Cell) {
	if a.Name == b.Name {
		ck.add(SeverityError, b, "name", "two cells are named %q; the second CELL_CREATE fails with EEXIST", a.Name)
	}
	aCPUs := a.CPUs()
	for _, cpu := range b.CPUs() {
		if slices.Contains(aCPUs, cpu) {
			ck.add(SeverityError, b, "cpus", "CPU %d is also assigned to cell %q; creating both fails with EBUSY", cpu, a.Name)
		}
	}
	ck.sharedMemory(a, b)
}

// sharedMemory reports physical overlap between two non-root cells unless
// both regions are ROOTSHARED (ivshmem and shared devices): anything else
// is memory one cell believes it owns.
func (ck *checker) sharedMemory(a, b *Cell) {
	for i := range a.MemoryRegions {
		m := &a.MemoryRegions[i]
		if isComm(m) {
			continue
		}
		for j := range b.MemoryRegions {
			n := &b.MemoryRegions[j]
			if isComm(n) || m.Flags&n.Flags&MemRootShared != 0 {
				continue
			}
			if rangesOverlap(m.PhysStart, m.Size, n.PhysStart, n.Size) {
				ck.add(SeverityError, b, memField(j), "%s overlaps %s of cell %q: %s, and they are not both ROOTSHARED",
					describe(n), memField(i), a.Name, describe(m))
			}
		}
	}
}
