package partition

import (
	"fmt"
	"os"
	"slices"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// An image may ship a prebuilt cell configuration (runPHI's older style),
// named by the boot description key "cell". It names addresses, so it is
// taken only when everything in it is something the allocator could have
// granted this partition, and is free now: partition CPUs, RAM inside the
// pools, the board's UARTs (a shared one only ROOTSHARED), interrupts from
// the board's SPIs (or the interrupt of the dedicated UART it maps), and
// ivshmem devices in the board's window slots. Anything else (root RAM,
// hypervisor memory, the GIC, another partition's resources, a CPU kept for
// Linux, cache or port regions, stream ids) is PermissionDenied naming the
// part. The partition then holds exactly what the cell names; the cell is
// renamed to the ledger's cell name.

// PrebuiltError is a prebuilt cell reaching outside what partitions may
// have. File is the image path of the .cell, Field the C name of the
// offending part ("memory_regions[2]", "cpus", "irqchips[0]",
// "pci_devices[1]"). It matches errdefs.ErrPermissionDenied, and its
// message ends in "permission denied": containerd 1.6 has no such class,
// so there the error arrives as FailedPrecondition and the text is all
// that says so.
type PrebuiltError struct {
	File  string
	Field string
	Err   error
}

func (e *PrebuiltError) Error() string {
	return fmt.Sprintf("prebuilt cell %s: %s: %v: %v", e.File, e.Field, e.Err, errdefs.ErrPermissionDenied)
}

// Unwrap returns errdefs.ErrPermissionDenied and the cause.
func (e *PrebuiltError) Unwrap() []error { return []error{errdefs.ErrPermissionDenied, e.Err} }

// exactRequest is what a prebuilt cell names.
type exactRequest struct {
	file  string
	cell  *jailhouse.Cell
	cpus  []int
	ram   []indexedRange
	pins  []uint32
	slots []int
	uart  string
	mode  UARTMode
}

type indexedRange struct {
	field string
	r     Range
	virt  uint64 // where the cell sees it
}

// maxPrebuiltSize bounds a .cell read from an image: the hypervisor takes
// no more than 64 KiB.
const maxPrebuiltSize = jailhouse.MaxConfigSize

// readPrebuilt reads and decodes the image's .cell through the rootfs.
func readPrebuilt(root *os.Root, d *BootDescription) (*jailhouse.Cell, error) {
	data, err := readImageFile(root, d.Cell, maxPrebuiltSize)
	if err != nil {
		return nil, &BootDescriptionError{File: d.File, Key: "cell", Err: fmt.Errorf("%s: %w", d.Cell, err)}
	}
	c, err := jailhouse.DecodeCell(data)
	if err != nil {
		return nil, &BootDescriptionError{File: d.File, Key: "cell", Err: fmt.Errorf("%s: %w", d.Cell, err)}
	}
	return c, nil
}

// checkPrebuiltShape holds a prebuilt cell to the rules of every board:
// partitions get no cache partitions, I/O ports or IOMMU stream ids; a cell
// has a CPU, RAM and a WRITE|LOADABLE RAM region for the payload; a comm
// region, if it has one, is one page; PCI devices are VETH ivshmem links
// with the root cell as peer 0, on bus 0, function 0, each on an INTx line
// of its own. examinePrebuilt checks these first, and `runphi image build`
// (through CheckPayload) checks them without a board.
func checkPrebuiltShape(c *jailhouse.Cell, file string) error {
	deny := func(field, format string, args ...any) error {
		return &PrebuiltError{File: file, Field: field, Err: fmt.Errorf(format, args...)}
	}
	for _, part := range []struct {
		field string
		n     int
	}{{"cache_regions", len(c.CacheRegions)}, {"pio_regions", len(c.PIORegions)}, {"stream_ids", len(c.StreamIDs)}} {
		if part.n > 0 {
			return deny(part.field, "%d entries; partitions get no cache partitions, I/O ports or IOMMU stream ids", part.n)
		}
	}
	if len(c.CPUs()) == 0 {
		return deny("cpus", "the cell has no CPU")
	}
	ram, loadable := false, false
	for i, m := range c.MemoryRegions {
		switch {
		case m.Size == 0:
		case m.Flags&jailhouse.MemCommRegion != 0:
			if m.Size != pageSize {
				return deny(fmt.Sprintf("memory_regions[%d]", i), "a comm region of %s; it is one 4 KiB page", formatSize(m.Size))
			}
		case m.Flags&(jailhouse.MemIO|jailhouse.MemRootShared) != 0:
		default:
			ram = true
			loadable = loadable || m.Flags&(jailhouse.MemLoadable|jailhouse.MemWrite) == jailhouse.MemLoadable|jailhouse.MemWrite
		}
	}
	if !ram {
		return deny("memory_regions", "the cell has no RAM")
	}
	if !loadable {
		return deny("memory_regions", "no RAM region is WRITE|LOADABLE; CELL_LOAD copies the payload into one")
	}
	lines := map[int]int{} // INTx line (d & 3) → device
	for i, p := range c.PCIDevices {
		field := fmt.Sprintf("pci_devices[%d]", i)
		if p.Type != jailhouse.PCITypeIVSHMEM {
			return deny(field, "a %s; partitions get no physical PCI devices", jailhouse.PCITypeName(p.Type))
		}
		if p.BDF>>8 != 0 || p.BDF&7 != 0 {
			return deny(field, "ivshmem device at bdf %#x (%s); partitions get devices of the ivshmem window, on bus 0, function 0",
				p.BDF, jailhouse.FormatBDF(p.BDF))
		}
		// One vpci_irq_base per cell puts device d's INTx on
		// 32 + base + (d & 3): a second device on that line leaves the
		// inmate unable to tell which one interrupted, and the allocator
		// never grants that.
		dev := int(p.BDF >> 3)
		if other, ok := lines[dev&3]; ok {
			return deny(field, "device 00:%02x.0 has the INTx line of device 00:%02x.0 (32 + vpci_irq_base + device mod 4); each device needs a line of its own",
				dev, other)
		}
		lines[dev&3] = dev
		if p.ShmemPeers != 2 || p.ShmemDevID != 1 || p.ShmemProtocol != jailhouse.ShmemProtoVETH {
			return deny(field, "device %s with %d peers, dev id %d, protocol %#x; the window's links are VETH links with the root cell as peer 0",
				jailhouse.FormatBDF(p.BDF), p.ShmemPeers, p.ShmemDevID, p.ShmemProtocol)
		}
	}
	return nil
}

// examinePrebuilt checks a prebuilt cell against the board: everything it
// names must be something partitions may have. It does not look at what
// other partitions hold (allocateExact does, under the ledger lock).
func (b *Board) examinePrebuilt(c *jailhouse.Cell, file string) (*exactRequest, error) {
	deny := func(field, format string, args ...any) error {
		return &PrebuiltError{File: file, Field: field, Err: fmt.Errorf(format, args...)}
	}
	// A cell of revision 12 or 13 names no architecture (the field came
	// with revision 14): it decodes as ArchUnknown and is taken for the
	// board's.
	archOK := c.Arch == b.Arch || (c.Revision != jailhouse.Revision14 && c.Arch == jailhouse.ArchUnknown)
	if !archOK || c.Revision != b.Revision {
		return nil, fmt.Errorf("prebuilt cell %s is %v revision %d, board %s runs %v revision %d: %w",
			file, c.Arch, c.Revision, b.Name, b.Arch, b.Revision, errdefs.ErrInvalidArgument)
	}
	if err := checkPrebuiltShape(c, file); err != nil {
		return nil, err
	}
	x := &exactRequest{file: file, cell: c, mode: UARTNone}
	x.cpus = c.CPUs()
	for _, cpu := range x.cpus {
		if !slices.Contains(b.PartitionCPUs, cpu) {
			return nil, deny("cpus", "CPU %d is not available to partitions on board %s (partitions may use %s; the others stay with root Linux)",
				cpu, b.Name, jailhouse.FormatCPUList(b.PartitionCPUs))
		}
	}

	// Which window slot each ivshmem region belongs to; the PCI devices
	// below must claim exactly these.
	regionSlot := map[int]int{}
	for i, m := range c.MemoryRegions {
		field := fmt.Sprintf("memory_regions[%d]", i)
		r := memRange(m)
		switch {
		case m.Size == 0, m.Flags&jailhouse.MemCommRegion != 0:
			// The empty R/W section of an ivshmem link; the comm region
			// (checkPrebuiltShape checked its size).
		case m.Flags&jailhouse.MemIO != 0:
			u := b.uartAt(m)
			if u == nil {
				return nil, deny(field, "I/O region %s (%v) %s; partitions may map only the board's UARTs", r, m.Flags, b.describe(r))
			}
			if u.Shared && m.Flags&jailhouse.MemRootShared == 0 {
				return nil, deny(field, "maps UART %s %s without ROOTSHARED; root Linux uses that port, it cannot leave the root cell", u.Name, r)
			}
			if x.uart != "" && x.uart != u.Name {
				return nil, deny(field, "maps a second UART (%s besides %s)", u.Name, x.uart)
			}
			x.uart = u.Name
			x.mode = UARTShared
			if !u.Shared {
				x.mode = UARTDedicated
			}
		case m.Flags&jailhouse.MemRootShared != 0:
			k, ok := b.slotOf(r)
			if !ok {
				return nil, deny(field, "shared memory %s %s; shared regions must be in an ivshmem window slot", r, b.describe(r))
			}
			regionSlot[i] = k
		default:
			if !slices.ContainsFunc(b.Pools, func(p Range) bool { return p.Contains(r) }) {
				return nil, deny(field, "RAM %s %s; partition RAM must lie inside one pool (%s)", r, b.describe(r), formatRanges(b.Pools))
			}
			x.ram = append(x.ram, indexedRange{field, r, m.VirtStart})
		}
	}

	var dedicatedSPI uint32
	if u := b.uart(x.uart); u != nil && !u.Shared {
		dedicatedSPI = u.SPI
	}
	for i, ic := range c.IRQChips {
		field := fmt.Sprintf("irqchips[%d]", i)
		if ic.Address != b.GICAddress {
			return nil, deny(field, "irqchip at %#x; partitions get interrupts of the GIC at %#x only", ic.Address, b.GICAddress)
		}
		for _, p := range Pins(&jailhouse.Cell{IRQChips: []jailhouse.IRQChip{ic}}, b.GICAddress) {
			if p == dedicatedSPI || slices.Contains(b.SPIs, p) {
				x.pins = append(x.pins, p)
				continue
			}
			if u := b.uartBySPI(p); u != nil {
				return nil, deny(field, "interrupt %d is UART %s's, which stays with root Linux", p, u.Name)
			}
			return nil, deny(field, "interrupt %d is not one partitions may receive on board %s (%s)", p, b.Name, formatPins(b.SPIs))
		}
	}
	slices.Sort(x.pins)

	claimed := map[int]bool{}
	for i, p := range c.PCIDevices {
		field := fmt.Sprintf("pci_devices[%d]", i)
		dev := int(p.BDF >> 3)
		k := dev - b.IVSHMEM.FirstDevice
		if p.BDF>>8 != 0 || p.BDF&7 != 0 || b.IVSHMEM.Slots == 0 || k < 0 || k >= b.IVSHMEM.Slots {
			return nil, deny(field, "ivshmem device at bdf %#x; partitions get the devices of the ivshmem window (00:%02x.0 to 00:%02x.0)",
				p.BDF, b.IVSHMEM.FirstDevice, b.IVSHMEM.FirstDevice+b.IVSHMEM.Slots-1)
		}
		for j := int(p.ShmemRegionsStart); j < int(p.ShmemRegionsStart)+4 && j < len(c.MemoryRegions); j++ {
			if c.MemoryRegions[j].Size == 0 {
				continue
			}
			if s, ok := regionSlot[j]; !ok || s != k {
				return nil, deny(field, "device 00:%02x.0 names memory_regions[%d], which is not in its slot %d", dev, j, k)
			}
			claimed[j] = true
		}
		x.slots = append(x.slots, k)
	}
	for j := range regionSlot {
		if !claimed[j] {
			return nil, deny(fmt.Sprintf("memory_regions[%d]", j), "shared memory of ivshmem slot %d without that slot's device", regionSlot[j])
		}
	}
	return x, nil
}

// allocateExact grants exactly what a prebuilt cell names, or nothing: a
// part another partition (or a cell the ledger does not know) holds is
// PermissionDenied, because the image asked for someone else's resources.
func (b *Board) allocateExact(h *holdings, owner string, x *exactRequest) (Allocation, error) {
	deny := func(field, format string, args ...any) (Allocation, error) {
		return Allocation{}, &PrebuiltError{File: x.file, Field: field, Err: fmt.Errorf(format, args...)}
	}
	for _, c := range x.cpus {
		if o, held := h.cpus[c]; held {
			return deny("cpus", "CPU %d is held by %s", c, o)
		}
	}
	a := Allocation{Owner: owner, CPUs: x.cpus, Pins: x.pins, Slots: x.slots, UART: x.uart,
		UARTDedicated: x.mode == UARTDedicated, Prebuilt: true}
	for _, m := range x.ram {
		if o, held := h.ramHolder(m.r); held {
			return deny(m.field, "RAM %s overlaps memory held by %s", m.r, o)
		}
		a.RAM = append(a.RAM, m.r)
	}
	for _, p := range x.pins {
		if o, held := h.pins[p]; held {
			return deny("irqchips", "interrupt %d is held by %s", p, o)
		}
	}
	for _, k := range x.slots {
		if o, held := h.slots[k]; held {
			return deny("pci_devices", "ivshmem slot %d (device 00:%02x.0) is held by %s", k, b.IVSHMEM.Device(k), o)
		}
	}
	if x.mode == UARTDedicated {
		if o, held := h.uarts[x.uart]; held {
			return deny("memory_regions", "UART %s is held by %s", x.uart, o)
		}
	}
	if len(x.slots) > 0 {
		a.VPCIIRQBase = x.cell.VPCIIRQBase
	}
	return a, nil
}

// uartAt returns the board UART an I/O region maps exactly, or nil.
func (b *Board) uartAt(m jailhouse.Memory) *UART {
	for i, u := range b.UARTs {
		if m.PhysStart == u.Region.PhysStart && m.VirtStart == u.Region.VirtStart && m.Size == u.Region.Size &&
			m.Flags&^(jailhouse.MemRootShared|jailhouse.MemExecute) == u.Region.Flags&^jailhouse.MemRootShared {
			return &b.UARTs[i]
		}
	}
	return nil
}

// uartBySPI returns the UART whose interrupt is spi, or nil.
func (b *Board) uartBySPI(spi uint32) *UART {
	for i := range b.UARTs {
		if b.UARTs[i].SPI == spi {
			return &b.UARTs[i]
		}
	}
	return nil
}

// slotOf returns the ivshmem window slot holding r.
func (b *Board) slotOf(r Range) (int, bool) {
	w := b.IVSHMEM
	if w.Slots == 0 || r.Start < w.Base || r.End > w.Base+w.Size {
		return 0, false
	}
	k := int((r.Start - w.Base) / w.SlotSize())
	slot := Range{w.Base + uint64(k)*w.SlotSize(), w.Base + uint64(k+1)*w.SlotSize()}
	return k, slot.Contains(r)
}

// describe says what a physical range hits besides the pools, for errors:
// the hypervisor's memory, the interrupt controller, root RAM or I/O.
func (b *Board) describe(r Range) string {
	sys := b.system
	if hv := memRange(sys.HypervisorMemory); r.Overlaps(hv) {
		return fmt.Sprintf("overlaps the hypervisor's memory %s", hv)
	}
	for _, f := range b.fixedCellRanges() {
		if f.what != "comm region" && r.Overlaps(f.r) {
			return fmt.Sprintf("overlaps the %s at %s", f.what, f.r)
		}
	}
	for _, p := range b.Pools {
		if r.Overlaps(p) {
			return fmt.Sprintf("crosses the edge of pool %s", p)
		}
	}
	for i, m := range sys.RootCell.MemoryRegions {
		if m.Size != 0 && r.Overlaps(memRange(m)) {
			kind := "memory"
			switch {
			case isRAM(m):
				kind = "RAM"
			case m.Flags&jailhouse.MemIO != 0:
				kind = "I/O memory"
			}
			return fmt.Sprintf("is root cell %s (its memory_regions[%d] %s)", kind, i, memRange(m))
		}
	}
	return "is not memory the board gives partitions"
}

// reconcilePrebuilt checks the spec's request against what the prebuilt
// cell takes: a cpuset must name the cell's CPUs, its RAM must fit the
// request's memory, and the options must not ask for what the cell does
// not have.
//
// The request's memory is the spec's limit, or the default a generated
// partition gets (DefaultMemory) when it sets none: an image takes no more
// RAM by shipping its own cell than by not shipping one. RAM beyond it is
// a *PrebuiltError (PermissionDenied) naming the region that crosses the
// line. A region at cell address 0 no larger than the board's loader area
// is the loader's RAM0, which a generated partition gets besides its
// memory too, and is not counted.
func reconcilePrebuilt(b *Board, req Request, x *exactRequest) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("prebuilt cell %s: "+format+": %w", append([]any{x.file}, append(args, errdefs.ErrInvalidArgument)...)...)
	}
	if req.CPUs != nil && !slices.Equal(req.CPUs, x.cpus) {
		return fail("the cell has CPUs %s, the spec asks for CPUs %s", jailhouse.FormatCPUList(x.cpus), jailhouse.FormatCPUList(req.CPUs))
	}
	var ram uint64
	for _, m := range x.ram {
		if m.virt == 0 && m.r.Size() <= b.LoaderArea {
			continue
		}
		ram += m.r.Size()
		if ram <= req.Memory {
			continue
		}
		limit := fmt.Sprintf("its memory limit of %s", formatSize(req.Memory))
		if !req.explicitMemory {
			limit = fmt.Sprintf("the %s a partition gets without a memory limit (set linux.resources.memory.limit to grant more)", formatSize(req.Memory))
		}
		return &PrebuiltError{File: x.file, Field: m.field, Err: fmt.Errorf("RAM %s brings the cell's RAM to %s, more than %s",
			m.r, formatSize(ram), limit)}
	}
	switch {
	case req.Network == NetworkOn && len(x.slots) == 0:
		return fail("%s=on, and the cell has no ivshmem device", AnnotationNetwork)
	case req.Network == NetworkOff && len(x.slots) > 0:
		return fail("%s=off, and the cell has %d ivshmem devices", AnnotationNetwork, len(x.slots))
	case len(req.Links) > 0:
		return fail("%s is not supported with a prebuilt cell", AnnotationShmemLink)
	case req.UART != UARTDefault && req.UART != x.mode:
		return fail("%s=%s, and the cell's UART is %s", AnnotationUART, req.UART, x.mode)
	case req.RPUs > 0:
		return fail("rpu_req is not supported with a prebuilt cell")
	}
	return nil
}

// prebuiltRequest reads the image's prebuilt cell, examines it against the
// board and turns the spec's request into the exact request of the cell.
func prebuiltRequest(root *os.Root, b *Board, d *BootDescription, req Request) (*jailhouse.Cell, Request, error) {
	c, err := readPrebuilt(root, d)
	if err != nil {
		return nil, Request{}, err
	}
	x, err := b.examinePrebuilt(c, d.Cell)
	if err != nil {
		return nil, Request{}, err
	}
	if err := reconcilePrebuilt(b, req, x); err != nil {
		return nil, Request{}, err
	}
	return c, Request{CPUs: x.cpus, NumCPUs: len(x.cpus), UART: x.mode, Net: len(x.slots) > 0, exact: x}, nil
}

// payloadLimit is the most a payload may weigh: the partition RAM, or the
// largest loadable region of a prebuilt cell.
func payloadLimit(req Request, prebuilt *jailhouse.Cell) loadRoom {
	if prebuilt == nil {
		return loadRoom{size: req.Memory}
	}
	room := loadRoom{prebuilt: true}
	for _, m := range prebuilt.MemoryRegions {
		if m.Flags&jailhouse.MemLoadable != 0 {
			room.size = max(room.size, m.Size)
		}
	}
	return room
}
