package jailhouse

import (
	"slices"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	io := MemRead | MemWrite | MemIO
	arm := func() *System { return qemuARM64System() }
	x86 := func() *System { return qemuX86System() }
	inmate := func(f func(*Cell)) *Cell { c := qemuARM64InmateDemo(); f(c); return c }
	linux := func(f func(*Cell)) *Cell { c := qemuARM64LinuxDemo(); f(c); return c }
	apic := func(f func(*Cell)) *Cell { c := x86APICDemo(); f(c); return c }
	addMem := func(m Memory) func(*Cell) {
		return func(c *Cell) { c.MemoryRegions = append(c.MemoryRegions, m) }
	}
	nop := func(*Cell) {}

	type want struct {
		sev   Severity
		cell  string
		field string
		msg   string // substring
	}
	tests := []struct {
		name  string
		sys   *System
		cells []*Cell
		want  []want // exactly these findings, in order
	}{
		{"upstream qemu-arm64 with its inmate and linux demos is clean", arm(),
			[]*Cell{inmate(nop), linux(nop)}, nil},
		{"upstream qemu-x86 with apic-demo is clean", x86(), []*Cell{apic(nop)}, nil},
		{"sub-page MMIO of a cell alone is fine", nil, []*Cell{bananapiInmateDemo()}, nil},
		{"regions overlapping physically", nil, []*Cell{inmate(addMem(Memory{
			PhysStart: 0x7fa08000, VirtStart: 0x100000, Size: 0x1000, Flags: MemRead}))},
			[]want{{SeverityError, "inmate-demo", "memory_regions[6]", "overlaps physically with memory_regions[8]"}}},
		{"regions overlapping virtually", nil, []*Cell{inmate(addMem(Memory{
			PhysStart: 0x7fb80000, VirtStart: 0x8000, Size: 0x1000, Flags: MemRead}))},
			[]want{{SeverityError, "inmate-demo", "memory_regions[6]", "overlaps virtually with memory_regions[8]"}}},
		{"comm regions at phys 0 do not overlap physical RAM at 0", nil, []*Cell{apic(addMem(Memory{
			PhysStart: 0, VirtStart: 0x200000, Size: 0x1000, Flags: MemRead | MemCommRegion}))}, nil},
		{"cell RAM over hypervisor memory", arm(), []*Cell{linux(func(c *Cell) { c.MemoryRegions[11].PhysStart = 0x7fc00000; c.MemoryRegions[11].Size = 0x100000 })},
			[]want{{SeverityError, "qemu-arm64-linux-demo", "memory_regions[11]", "overlaps hypervisor memory [0x7fc00000, 0x80000000)"}}},
		{"GICv3 distributor mapped into a cell", arm(), []*Cell{inmate(addMem(Memory{
			PhysStart: 0x08000000, VirtStart: 0x08000000, Size: 0x10000, Flags: io}))},
			[]want{{SeverityError, "inmate-demo", "memory_regions[8]", "overlaps GICD"}}},
		{"GICv3 redistributor of the last of 16 CPUs", arm(), []*Cell{inmate(addMem(Memory{
			PhysStart: 0x08280000, VirtStart: 0x08280000, Size: 0x1000, Flags: io}))},
			[]want{{SeverityError, "inmate-demo", "memory_regions[8]", "overlaps GICR (16 CPUs) [0x80a0000, 0x82a0000)"}}},
		{"GICv2 CPU interface second page", func() *System {
			s := arm()
			s.Platform.ARM = ARMPlatform{MaintenanceIRQ: 25, GICVersion: 2, GICDBase: 0x08000000,
				GICCBase: 0x08010000, GICHBase: 0x08030000, GICVBase: 0x08040000}
			return s
		}(), []*Cell{inmate(addMem(Memory{PhysStart: 0x08011000, VirtStart: 0x08011000, Size: 0x1000, Flags: io}))},
			[]want{{SeverityError, "inmate-demo", "memory_regions[8]", "overlaps GICC [0x8010000, 0x8012000)"}}},
		{"unknown GIC version", func() *System { s := arm(); s.Platform.ARM.GICVersion = 4; return s }(), nil,
			[]want{{SeverityError, "qemu-arm64", "platform_info.arm.gic_version", "GIC version 4"}}},
		{"PCI MMCONFIG mapped into a cell", arm(), []*Cell{inmate(addMem(Memory{
			PhysStart: 0x08e80000, VirtStart: 0x08e80000, Size: 0x1000, Flags: io}))},
			[]want{{SeverityError, "inmate-demo", "memory_regions[8]", "overlaps PCI MMCONFIG [0x8e00000, 0x8f00000)"}}},
		{"IOMMU mapped into an x86 cell", x86(), []*Cell{apic(addMem(Memory{
			PhysStart: 0xfed90000, VirtStart: 0xfed90000, Size: 0x1000, Flags: io}))},
			[]want{{SeverityError, "apic-demo", "memory_regions[2]", "overlaps IOMMU 0 (INTEL)"}}},
		{"xAPIC mapped into an x86 cell", x86(), []*Cell{apic(addMem(Memory{
			PhysStart: 0xfee00000, VirtStart: 0xfee00000, Size: 0x1000, Flags: io}))},
			[]want{{SeverityError, "apic-demo", "memory_regions[2]", "overlaps xAPIC"}}},
		{"IOAPIC mapped into an x86 cell", x86(), []*Cell{apic(addMem(Memory{
			PhysStart: 0xfec00000, VirtStart: 0xfec00000, Size: 0x1000, Flags: io}))},
			[]want{{SeverityError, "apic-demo", "memory_regions[2]", "overlaps IOAPIC"}}},
		{"32-bit arm cell on an arm64 system", arm(), []*Cell{func() *Cell {
			c := bananapiInmateDemo()
			c.CPUSet = cpus(4)
			return c
		}()}, []want{{SeverityError, "bananapi-inmate-demo", "architecture", "cell is arm, system is arm64"}}},
		{"revision 13 cell on a revision 14 system", arm(), []*Cell{inmate(func(c *Cell) {
			c.Revision, c.Arch = Revision13, ArchUnknown
		})}, []want{{SeverityError, "inmate-demo", "revision", "EINVAL"}}},
		{"RAM size not page-aligned", nil, []*Cell{inmate(func(c *Cell) { c.MemoryRegions[6].Size = 0x10800 })},
			[]want{{SeverityError, "inmate-demo", "memory_regions[6]", "not page-aligned"}}},
		{"loadable IO region with unaligned phys", nil, []*Cell{inmate(addMem(Memory{
			PhysStart: 0x7fb00800, VirtStart: 0x100000, Size: 0x1000, Flags: io | MemLoadable}))},
			[]want{{SeverityError, "inmate-demo", "memory_regions[8]", "not page-aligned"}}},
		{"LOADABLE without WRITE", nil, []*Cell{inmate(func(c *Cell) { c.MemoryRegions[6].Flags &^= MemWrite })},
			[]want{{SeverityWarning, "inmate-demo", "memory_regions[6]", "LOADABLE without WRITE"}}},
		{"cpu set of 4 bytes", nil, []*Cell{inmate(func(c *Cell) { c.CPUSet = []byte{2, 0, 0, 0} })},
			[]want{{SeverityError, "inmate-demo", "cpu_set_size", "not a multiple of 8"}}},
		{"no CPU", nil, []*Cell{inmate(func(c *Cell) { c.CPUSet = make([]byte, 8) })},
			[]want{{SeverityError, "inmate-demo", "cpus", "no CPU"}}},
		{"configuration over 64 KiB", nil, []*Cell{inmate(func(c *Cell) {
			for i := range 2100 {
				c.MemoryRegions = append(c.MemoryRegions, Memory{PhysStart: 0x100000000 + uint64(i)*0x1000,
					VirtStart: 0x100000000 + uint64(i)*0x1000, Size: 0x1000, Flags: io})
			}
		})}, []want{{SeverityError, "inmate-demo", "config size", "E2BIG above 65536"}}},
		{"configuration just under 64 KiB", nil, []*Cell{inmate(func(c *Cell) {
			for i := range 2020 {
				c.MemoryRegions = append(c.MemoryRegions, Memory{PhysStart: 0x100000000 + uint64(i)*0x1000,
					VirtStart: 0x100000000 + uint64(i)*0x1000, Size: 0x1000, Flags: io})
			}
		})}, []want{{SeverityWarning, "inmate-demo", "config size", "page boundary"}}},
		{"CPU the root cell does not own", arm(), []*Cell{inmate(func(c *Cell) { _ = c.SetCPUs([]int{16}) })},
			[]want{{SeverityError, "inmate-demo", "cpus", "CPU 16 is not owned by the root cell"}}},
		{"x86 CPU 0", x86(), []*Cell{apic(func(c *Cell) { c.CPUSet = cpus(0) })},
			[]want{{SeverityError, "apic-demo", "cpus", "CPU 0 cannot leave the root cell"}}},
		{"two cells on one CPU", arm(), []*Cell{inmate(nop), linux(func(c *Cell) { c.CPUSet = cpus(1, 2) })},
			[]want{{SeverityError, "qemu-arm64-linux-demo", "cpus", `CPU 1 is also assigned to cell "inmate-demo"`}}},
		{"a cell named like the root cell", arm(), []*Cell{inmate(func(c *Cell) { c.Name = "qemu-arm64" })},
			[]want{{SeverityError, "qemu-arm64", "name", "the root cell is named \"qemu-arm64\" too; CELL_CREATE fails with EEXIST"}}},
		{"two cells with one name", nil, []*Cell{inmate(nop), linux(func(c *Cell) { c.Name = "inmate-demo" })},
			[]want{{SeverityError, "inmate-demo", "name", "EEXIST"}}},
		{"RAM of one cell inside another's", arm(), []*Cell{inmate(nop), linux(func(c *Cell) {
			c.MemoryRegions[11].PhysStart = 0x7fa00000
			c.MemoryRegions[11].Size = 0x10000
		})}, []want{{SeverityError, "qemu-arm64-linux-demo", "memory_regions[11]",
			`overlaps memory_regions[6] of cell "inmate-demo"`}}},
		{"non-root cells take every root CPU", func() *System { s := arm(); s.RootCell.CPUSet = cpus(0, 1, 2, 3); return s }(),
			[]*Cell{inmate(func(c *Cell) { c.CPUSet = cpus(0, 1) }), linux(nop)},
			[]want{{SeverityError, "qemu-arm64", "cpus", "root cell would have none left"}}},
		{"pci capabilities beyond the array", nil, []*Cell{inmate(func(c *Cell) {
			c.PCIDevices[0].CapsStart, c.PCIDevices[0].NumCaps = 0, 2
		})}, []want{{SeverityError, "inmate-demo", "pci_devices[0]", "beyond the 0 pci_caps"}}},
		{"ivshmem regions beyond the memory regions", nil, []*Cell{inmate(func(c *Cell) { c.PCIDevices[0].ShmemRegionsStart = 4 })},
			[]want{{SeverityError, "inmate-demo", "pci_devices[0]", "needs memory regions 4..8"}}},
		{"ivshmem device id of 12", nil, []*Cell{inmate(func(c *Cell) { c.PCIDevices[0].ShmemDevID = 12 })},
			[]want{{SeverityError, "inmate-demo", "pci_devices[0]", "at most 12 peers"}}},
		{"irqchip that is not the GICD", arm(), []*Cell{inmate(func(c *Cell) { c.IRQChips[0].Address = 0x08010000 })},
			[]want{{SeverityWarning, "inmate-demo", "irqchips[0]", "the hypervisor ignores this entry"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Check(tt.sys, tt.cells...)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d findings, want %d:\n%s", len(got), len(tt.want), findingsText(got))
			}
			for i, w := range tt.want {
				f := got[i]
				if f.Severity != w.sev || f.Cell != w.cell || f.Field != w.field || !strings.Contains(f.Msg, w.msg) {
					t.Errorf("finding %d = %v\nwant %v: cell %q: %s: …%s…", i, f, w.sev, w.cell, w.field, w.msg)
				}
			}
			if wantErr := len(tt.want) > 0 && tt.want[0].sev == SeverityError; HasErrors(got) != wantErr {
				t.Errorf("HasErrors = %v", HasErrors(got))
			}
			// CheckCell of the last cell beside the others finds what
			// Check finds about that cell, in the same order.
			if n := len(tt.cells); n > 0 {
				last := tt.cells[n-1]
				var want []Finding
				for _, f := range got {
					if f.Cell == last.Name {
						want = append(want, f)
					}
				}
				if cc := CheckCell(tt.sys, last, tt.cells[:n-1]...); !slices.Equal(cc, want) {
					t.Errorf("CheckCell:\n%swant\n%s", findingsText(cc), findingsText(want))
				}
			}
		})
	}
}

func findingsText(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  " + f.String() + "\n")
	}
	return b.String()
}

func TestFindingString(t *testing.T) {
	f := Finding{Severity: SeverityError, Cell: "c", Field: "memory_regions[1]", Msg: "overlaps GICD"}
	if got, want := f.String(), `error: cell "c": memory_regions[1]: overlaps GICD`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if SeverityWarning.String() != "warning" || Severity(0).String() != "Severity(0)" {
		t.Error("Severity names")
	}
}
