package partition

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// layout is the plan of one partition: which resources it gets and where
// they appear in the cell's address space. generate turns it into a cell
// configuration; nothing in it depends on anything but its inputs.
type layout struct {
	name  string
	cpus  []int
	flags jailhouse.CellFlags

	// ram is the main physical block from the ledger; it appears in the
	// cell at ramVirt.
	ram     Range
	ramVirt uint64
	// loader is the loader area (RAM0), mapped at cell address 0; nil
	// when the partition has none.
	loader *Range
	// entry is the cell's cpu_reset_address: where the payload is loaded
	// and where the first CPU starts.
	entry uint64
	// uart is the mapped serial port, nil for none; uartIRQ says whether
	// the partition owns its interrupt.
	uart    *UART
	uartIRQ bool
	// pins are every interrupt the cell owns, ascending.
	pins []uint32
	// vpciBase is the cell's vpci_irq_base.
	vpciBase uint32
	// msgReplyTimeout is the cell's msg_reply_timeout (0 for passive cells).
	msgReplyTimeout uint64
	// devices are the ivshmem devices, in PCI device order.
	devices []deviceLayout
}

// deviceLayout is one ivshmem device of a cell and its four regions.
type deviceLayout struct {
	dev      int
	id       int
	protocol uint16
	regions  slotRegions
}

// LoadAddress returns the cell address a raw-binary payload is loaded at and
// started from: the boot description's starting_vaddress when given, else
// the board's cpu_reset_address.
func LoadAddress(b *Board, d *BootDescription) uint64 {
	if d != nil && d.HasStartingVAddress {
		return d.StartingVAddress
	}
	return b.CPUResetAddress
}

// Plan computes the cell configuration of one partition, a pure function of
// the board, the request, the boot description and the allocation made for
// the request. The load-address rules:
//
//   - The partition RAM is one region, RWX|LOADABLE, whose cell address is
//     the load address (LoadAddress): the payload lands on its first byte,
//     and cpu_reset_address is that same address. A raw binary linked at 0
//     (the board default) therefore sees RAM from 0 up; a Zephyr image with
//     "starting_vaddress": "0x70000000" sees it from 0x70000000 up, whatever
//     physical block the ledger gave.
//   - The load address must be 4 KiB aligned, and the RAM must not cover the
//     comm region, the UARTs or the GIC, which sit at fixed cell addresses
//     (nor the ivshmem window of a networked cell, nor the loader area);
//     otherwise the error (errdefs.ErrInvalidArgument) names
//     starting_vaddress.
//   - With a loader area (the board has one and the RAM does not start at
//     0), a second RWX|LOADABLE region maps it at cell address 0.
//
// The cell also gets the UART of its UART mode as its console (a shared
// one ROOTSHARED and without its interrupt, a dedicated one with it), the
// comm region (4 KiB), for each ivshmem link its four regions and a PCI
// device (a VETH device towards the root cell in its window slot; an
// UNDEFINED-protocol device per partition link, its memory placed above
// the comm region), an irqchip bitmap of exactly the allocated interrupts,
// the allocated vpci_irq_base (the board's when there is no PCI device),
// VIRTUAL_CONSOLE_PERMITTED, and PASSIVE_COMMREG unless the boot
// description says comm_region "active". Networking off means no ivshmem
// regions and no PCI device at all.
func Plan(b *Board, req Request, d *BootDescription, a Allocation) (*jailhouse.Cell, error) {
	l, err := planLayout(b, req, d, a)
	if err != nil {
		return nil, err
	}
	return generate(b, l)
}

func planLayout(b *Board, req Request, d *BootDescription, a Allocation) (*layout, error) {
	if a.Cell == "" || len(a.Cell) > maxCellName {
		return nil, fmt.Errorf("plan: cell name %q is not 1 to %d bytes: %w", a.Cell, maxCellName, errdefs.ErrInvalidArgument)
	}
	want := 1
	if a.Loader {
		want = 2
	}
	if len(a.CPUs) == 0 || len(a.RAM) != want {
		return nil, fmt.Errorf("plan %s: allocation has %d CPUs and %d RAM blocks, want at least 1 and exactly %d: %w",
			a.Cell, len(a.CPUs), len(a.RAM), want, errdefs.ErrInvalidArgument)
	}
	if a.RAM[0].Size() < req.Memory {
		return nil, fmt.Errorf("plan %s: allocated RAM %s is smaller than the %s asked: %w",
			a.Cell, a.RAM[0], formatSize(req.Memory), errdefs.ErrInvalidArgument)
	}
	l := &layout{
		name:     a.Cell,
		cpus:     a.CPUs,
		flags:    jailhouse.CellVirtualConsolePermitted,
		ram:      a.RAM[0],
		entry:    LoadAddress(b, d),
		pins:     a.Pins,
		vpciBase: b.VPCIIRQBase,
	}
	if d == nil || d.CommRegion == CommRegionPassive {
		l.flags |= jailhouse.CellPassiveCommRegion
	} else {
		// An inmate that stops answering must not make its cell
		// impossible to stop: after this many polls the hypervisor
		// fails the cell and the shutdown goes ahead.
		l.msgReplyTimeout = b.MsgReplyTimeout
	}
	l.ramVirt = l.entry
	if a.Loader {
		l.loader = &a.RAM[1]
	}
	if a.UART != "" {
		if l.uart = b.uart(a.UART); l.uart == nil {
			return nil, fmt.Errorf("plan %s: board %s has no UART %q: %w", a.Cell, b.Name, a.UART, errdefs.ErrInvalidArgument)
		}
		l.uartIRQ = a.UARTDedicated
	}
	for _, k := range a.Slots {
		if k < 0 || k >= len(b.slots) {
			return nil, fmt.Errorf("plan %s: ivshmem slot %d is not one of board %s's %d: %w", a.Cell, k, b.Name, len(b.slots), errdefs.ErrInvalidArgument)
		}
		l.devices = append(l.devices, deviceLayout{
			dev: b.IVSHMEM.Device(k), id: 1, protocol: jailhouse.ShmemProtoVETH, regions: partitionEnd(b.slots[k]),
		})
	}
	virt := l.linkVirtBase(b, len(a.Links))
	for i, lk := range a.Links {
		l.devices = append(l.devices, deviceLayout{
			dev: lk.Device, id: lk.ID, protocol: jailhouse.ShmemProtoUndefined,
			regions: linkRegions(lk.Mem, virt+uint64(i)*b.Granule, lk.ID),
		})
	}
	slices.SortFunc(l.devices, func(x, y deviceLayout) int { return cmp.Compare(x.dev, y.dev) })
	if len(l.devices) > 0 {
		l.vpciBase = a.VPCIIRQBase
	}

	if err := checkAddressSpace(b, l.ram.Size(), d, len(a.Slots) > 0, l.loader != nil); err != nil {
		return nil, fmt.Errorf("plan %s: %w", a.Cell, err)
	}
	return l, nil
}

// partitionEnd turns the root cell's end of a link into the partition's:
// the same memory, ROOTSHARED, with the partition (peer 1) writing the
// second output section instead of the first.
func partitionEnd(root slotRegions) slotRegions {
	var r slotRegions
	for i, m := range root {
		if m.Size == 0 {
			continue
		}
		m.VirtStart = m.PhysStart
		m.Flags = jailhouse.MemRead | jailhouse.MemRootShared
		if i == 1 || i == 3 {
			m.Flags |= jailhouse.MemWrite
		}
		r[i] = m
	}
	return r
}

// linkRegions lays out a partition-to-partition link in mem, seen by the
// cell at virt: a 4 KiB state table, a R/W section of half the rest, and
// two output sections; end id writes output section id. Both ends mark
// every region ROOTSHARED: the memory belongs to neither alone.
func linkRegions(mem Range, virt uint64, id int) slotRegions {
	rest := mem.Size() - pageSize
	rw := (rest / 2) &^ (pageSize - 1)
	out := ((rest - rw) / 2) &^ (pageSize - 1)
	const ro = jailhouse.MemRead | jailhouse.MemRootShared
	r := slotRegions{
		{PhysStart: mem.Start, VirtStart: virt, Size: pageSize, Flags: ro},
		{PhysStart: mem.Start + pageSize, VirtStart: virt + pageSize, Size: rw, Flags: ro | jailhouse.MemWrite},
		{PhysStart: mem.Start + pageSize + rw, VirtStart: virt + pageSize + rw, Size: out, Flags: ro},
		{PhysStart: mem.Start + pageSize + rw + out, VirtStart: virt + pageSize + rw + out, Size: out, Flags: ro},
	}
	r[2+id].Flags |= jailhouse.MemWrite
	return r
}

// linkVirtBase is where n links of one granule each appear in the cell:
// the lowest granule-aligned address above the comm region whose range
// covers nothing else of the cell. Inmates find it through the ivshmem
// device (its capability holds the state table's address).
func (l *layout) linkVirtBase(b *Board, n int) uint64 {
	if n == 0 {
		return 0
	}
	taken := []Range{{l.ramVirt, l.ramVirt + l.ram.Size()}}
	if l.loader != nil {
		taken = append(taken, Range{0, l.loader.Size()})
	}
	for _, f := range b.fixedCellRanges() {
		taken = append(taken, f.r)
	}
	if w := b.IVSHMEM; w.Slots > 0 {
		taken = append(taken, Range{w.Base, w.Base + w.Size})
	}
	size := uint64(n) * b.Granule
	for v := alignUp(b.CommRegion+pageSize, b.Granule); v+size > v; v += b.Granule {
		r := Range{v, v + size}
		if !slices.ContainsFunc(taken, r.Overlaps) {
			return v
		}
	}
	return 0
}

// checkAddressSpace checks that size bytes of partition RAM fit at the
// load address without covering the cell addresses the board reserves (and
// the ivshmem window when the cell has networking, the loader area when it
// has one). The error names the key to change: starting_vaddress when the
// boot description set it, else the spec's memory limit.
func checkAddressSpace(b *Board, size uint64, d *BootDescription, net, loader bool) error {
	load := LoadAddress(b, d)
	explicit := d != nil && d.HasStartingVAddress
	fail := func(err error) error {
		if explicit {
			return &BootDescriptionError{File: d.File, Key: "starting_vaddress", Err: err}
		}
		return fmt.Errorf("spec linux.resources.memory.limit: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if load%pageSize != 0 {
		return fail(fmt.Errorf("load address %#x is not 4 KiB aligned (the partition RAM starts at the load address)", load))
	}
	virt := Range{load, load + size}
	if virt.End < virt.Start {
		return fail(fmt.Errorf("%s of RAM at %#x wraps around the address space", formatSize(size), load))
	}
	reserved := b.fixedCellRanges()
	if net && b.IVSHMEM.Slots > 0 {
		reserved = append(reserved, namedRange{"ivshmem window", Range{b.IVSHMEM.Base, b.IVSHMEM.Base + b.IVSHMEM.Size}})
	}
	if loader {
		reserved = append(reserved, namedRange{"loader area", Range{0, b.LoaderArea}})
	}
	slices.SortFunc(reserved, func(a, b namedRange) int { return cmp.Compare(a.r.Start, b.r.Start) })
	for _, f := range reserved {
		if !virt.Overlaps(f.r) {
			continue
		}
		if f.r.Start > load {
			return fail(fmt.Errorf("%s of RAM at load address %#x would cover the %s at %s: at most %s fit there",
				formatSize(size), load, f.what, f.r, formatSize(roomAt(b, reserved, load))))
		}
		return fail(fmt.Errorf("load address %#x lies in the %s at %s", load, f.what, f.r))
	}
	return nil
}

// roomAt returns how many bytes of RAM fit at cell address load before the
// first reserved range above it, in whole granules.
func roomAt(b *Board, reserved []namedRange, load uint64) uint64 {
	room := ^uint64(0) - load
	for _, f := range reserved {
		if f.r.Start >= load {
			room = min(room, f.r.Start-load)
		}
	}
	return room &^ (b.Granule - 1)
}

type namedRange struct {
	what string
	r    Range
}

// fixedCellRanges are the cell addresses every partition of the board has
// taken by something other than its RAM, ascending: the comm region, the
// UARTs and the interrupt controller's frames.
func (b *Board) fixedCellRanges() []namedRange {
	rs := []namedRange{{"comm region", Range{b.CommRegion, b.CommRegion + pageSize}}}
	for _, u := range b.UARTs {
		start := u.Region.PhysStart &^ (pageSize - 1)
		rs = append(rs, namedRange{"UART " + u.Name, Range{start, alignUp(u.Region.PhysStart+u.Region.Size, pageSize)}})
	}
	arm := b.system.Platform.ARM
	switch arm.GICVersion {
	case 3:
		rs = append(rs, namedRange{"GIC distributor", Range{arm.GICDBase, arm.GICDBase + 0x10000}})
		if arm.GICRBase != 0 {
			// One 128 KiB redistributor frame per CPU.
			n := uint64(len(b.RootCPUs()))
			rs = append(rs, namedRange{"GIC redistributors", Range{arm.GICRBase, arm.GICRBase + n*0x20000}})
		}
	case 2:
		rs = append(rs, namedRange{"GIC distributor", Range{arm.GICDBase, arm.GICDBase + 0x1000}})
		if arm.GICCBase != 0 {
			rs = append(rs, namedRange{"GIC CPU interface", Range{arm.GICCBase, arm.GICCBase + 0x2000}})
		}
	}
	slices.SortFunc(rs, func(a, b namedRange) int { return cmp.Compare(a.r.Start, b.r.Start) })
	return rs
}
