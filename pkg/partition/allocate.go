package partition

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// Allocation is what one partition holds.
type Allocation struct {
	// Owner is "<namespace>/<container id>".
	Owner string `json:"owner"`
	// Cell is the Jailhouse cell name (CellName, or its hashed form when
	// another owner already has that name).
	Cell string `json:"cell"`
	// CPUs are the partition's CPUs, ascending.
	CPUs []int `json:"cpus"`
	// RAM are the partition's own physical RAM blocks: the main block
	// first, then the loader area (RAM0) when it has one.
	RAM []Range `json:"ram"`
	// Loader is true when RAM[1] is the loader area.
	Loader bool `json:"loader,omitempty"`
	// UART is the name of the mapped serial port, "" for none;
	// UARTDedicated says the partition has it alone, with its interrupt.
	UART          string `json:"uart,omitempty"`
	UARTDedicated bool   `json:"uart_dedicated,omitempty"`
	// Pins are the interrupts (GIC INTIDs) the partition owns: its virtual
	// PCI INTx lines and a dedicated UART's interrupt, ascending.
	Pins []uint32 `json:"pins,omitempty"`
	// VPCIIRQBase puts the INTx line of device d on SPI
	// 32 + VPCIIRQBase + (d & 3); meaningful when the partition has
	// PCI devices.
	VPCIIRQBase uint32 `json:"vpci_irq_base,omitempty"`
	// Slots are the ivshmem window slots of the partition's link to the
	// root cell (networking), at most one today.
	Slots []int `json:"slots,omitempty"`
	// Links are its partition-to-partition shared-memory links.
	Links []Link `json:"links,omitempty"`
	// RPUs are its Cortex-R5 ids.
	RPUs []int `json:"rpus,omitempty"`
	// Prebuilt is set when the cell came from a .cell file in the image.
	Prebuilt bool `json:"prebuilt,omitempty"`
}

// Link is one end of a partition-to-partition ivshmem link.
type Link struct {
	// Peer is the owner of the other end.
	Peer string `json:"peer"`
	// Device is the PCI device number on bus 0 both ends use.
	Device int `json:"device"`
	// Mem is the link's shared memory, taken from a pool.
	Mem Range `json:"mem"`
	// ID is this end's shmem_dev_id: 0 for the end created first.
	ID int `json:"id"`
}

// ExhaustedError says which resource ran out and how much was asked versus
// free. It matches errdefs.ErrResourceExhausted.
type ExhaustedError struct {
	// Resource is "cpu", "memory", "interrupt", "ivshmem", "link", "uart"
	// or "rpu".
	Resource string
	// Detail says what was asked and what is free.
	Detail string
}

func (e *ExhaustedError) Error() string { return e.Resource + ": " + e.Detail }

// Unwrap returns errdefs.ErrResourceExhausted.
func (e *ExhaustedError) Unwrap() error { return errdefs.ErrResourceExhausted }

// holdings is everything taken on the node: by ledger entries and by cells
// the ledger does not know. Values name the holder for error messages.
type holdings struct {
	cpus    map[int]string
	ram     []heldRange
	pins    map[uint32]string
	slots   map[int]string
	devices map[int]string // link devices
	uarts   map[string]string
	rpus    map[int]string
}

type heldRange struct {
	r      Range
	holder string
}

func newHoldings() *holdings {
	return &holdings{
		cpus: map[int]string{}, pins: map[uint32]string{}, slots: map[int]string{},
		devices: map[int]string{}, uarts: map[string]string{}, rpus: map[int]string{},
	}
}

// add records what a ledger entry holds.
func (h *holdings) add(a *Allocation) {
	for _, c := range a.CPUs {
		h.cpus[c] = a.Owner
	}
	for _, r := range a.RAM {
		h.ram = append(h.ram, heldRange{r, a.Owner})
	}
	for _, p := range a.Pins {
		h.pins[p] = a.Owner
	}
	for _, s := range a.Slots {
		h.slots[s] = a.Owner
	}
	if a.UARTDedicated && a.UART != "" {
		h.uarts[a.UART] = a.Owner
	}
	for _, r := range a.RPUs {
		h.rpus[r] = a.Owner
	}
	for _, l := range a.Links {
		holder := "link " + linkName(a.Owner, l.Peer)
		h.devices[l.Device] = holder
		if !slices.ContainsFunc(h.ram, func(x heldRange) bool { return x.r == l.Mem }) {
			h.ram = append(h.ram, heldRange{l.Mem, holder})
		}
	}
}

func linkName(a, b string) string {
	if a > b {
		a, b = b, a
	}
	return a + "<->" + b
}

// ramHolder returns the holder of a byte of r, if any.
func (h *holdings) ramHolder(r Range) (string, bool) {
	for _, x := range h.ram {
		if x.r.Overlaps(r) {
			return x.holder, true
		}
	}
	return "", false
}

// freeRanges returns the parts of pool nothing holds, ascending.
func (h *holdings) freeRanges(pool Range) []Range {
	var held []Range
	for _, x := range h.ram {
		if x.r.Overlaps(pool) {
			held = append(held, x.r)
		}
	}
	slices.SortFunc(held, func(a, b Range) int { return cmp.Compare(a.Start, b.Start) })
	var free []Range
	at := pool.Start
	for _, r := range held {
		if r.Start > at {
			free = append(free, Range{at, min(r.Start, pool.End)})
		}
		at = max(at, r.End)
	}
	if at < pool.End {
		free = append(free, Range{at, pool.End})
	}
	return free
}

// allocate picks the resources of req for owner on b, given what is held,
// all or nothing. peers are the ledger entries, for joining links. It does
// no I/O: the ledger calls it under its lock, and tests call it directly.
//
// Whether the request can ever be granted on b is settled first (checkFits):
// a request that can never fit is InvalidArgument even on a full node, so
// ResourceExhausted, which kubelet and users retry, only ever means "not
// now".
func (b *Board) allocate(h *holdings, peers []Entry, owner string, req Request) (Allocation, error) {
	if req.exact != nil {
		return b.allocateExact(h, owner, req.exact)
	}
	if err := b.checkFits(peers, owner, req); err != nil {
		return Allocation{}, err
	}
	return b.take(h, peers, owner, req)
}

// take picks the resources of a request checkRequest accepted among what h
// leaves free. Every error it returns is an *ExhaustedError.
func (b *Board) take(h *holdings, peers []Entry, owner string, req Request) (Allocation, error) {
	a := Allocation{Owner: owner}
	var err error
	if a.CPUs, err = b.allocateCPUs(h, req); err != nil {
		return Allocation{}, err
	}
	if req.RPUs > 0 {
		if a.RPUs, err = b.allocateRPUs(h, req.RPUs); err != nil {
			return Allocation{}, err
		}
	}
	// RAM is placed on a copy of the holdings (its maps shared, read
	// only), so the loader area and link memory avoid the main block
	// without h changing when a later step fails.
	hh := *h
	hh.ram = slices.Clone(h.ram)
	main, err := b.firstFit(&hh, req.Memory)
	if err != nil {
		return Allocation{}, err
	}
	a.RAM = []Range{main}
	hh.ram = append(hh.ram, heldRange{main, owner})
	if req.Loader && b.LoaderArea > 0 {
		loader, err := b.bestFit(&hh, b.LoaderArea)
		if err != nil {
			return Allocation{}, err
		}
		a.RAM = append(a.RAM, loader)
		a.Loader = true
		hh.ram = append(hh.ram, heldRange{loader, owner})
	}

	if a.UART, a.UARTDedicated, err = b.allocateUART(h, req.UART); err != nil {
		return Allocation{}, err
	}
	if a.UARTDedicated {
		a.Pins = append(a.Pins, b.uart(a.UART).SPI)
	}

	if req.Net || len(req.Links) > 0 {
		pci, err := b.allocatePCI(&hh, peers, owner, req.Net, req.Links, a.Pins)
		if err != nil {
			return Allocation{}, err
		}
		a.Slots, a.Links, a.VPCIIRQBase = pci.slots, pci.links, pci.base
		a.Pins = append(a.Pins, pci.pins...)
	}
	slices.Sort(a.Pins)
	return a, nil
}

// allocateCPUs picks the request's CPUs among the board's partition CPUs
// nothing holds: exactly req.CPUs, or the lowest req.NumCPUs free.
func (b *Board) allocateCPUs(h *holdings, req Request) ([]int, error) {
	if req.CPUs != nil {
		for _, c := range req.CPUs {
			if o, held := h.cpus[c]; held {
				return nil, &ExhaustedError{Resource: "cpu", Detail: fmt.Sprintf("asked CPUs %s, CPU %d is held by %s",
					jailhouse.FormatCPUList(req.CPUs), c, o)}
			}
		}
		return slices.Clone(req.CPUs), nil
	}
	if req.NumCPUs < 1 {
		return nil, nil // an RPU partition needs no APU CPU
	}
	var free []int
	for _, c := range b.usableCPUs() {
		if _, held := h.cpus[c]; !held {
			free = append(free, c)
		}
	}
	if len(free) < req.NumCPUs {
		return nil, &ExhaustedError{Resource: "cpu", Detail: fmt.Sprintf("asked %s, %s of partition CPUs %s",
			count(req.NumCPUs, "CPU"), freeText(free), jailhouse.FormatCPUList(b.PartitionCPUs))}
	}
	return free[:req.NumCPUs], nil
}

// usableCPUs are the partition CPUs a cell may have: on x86 never CPU 0,
// which Jailhouse refuses to take from the root cell.
func (b *Board) usableCPUs() []int {
	if b.Arch != jailhouse.ArchX86 {
		return b.PartitionCPUs
	}
	return slices.DeleteFunc(slices.Clone(b.PartitionCPUs), func(c int) bool { return c == 0 })
}

// firstFit finds the lowest granule-aligned block of size bytes (rounded up
// to the granule, not 0) in the pools, in pool order, that nothing holds.
func (b *Board) firstFit(h *holdings, size uint64) (Range, error) {
	size = alignUp(size, b.Granule)
	var largest uint64
	for _, pool := range b.Pools {
		for _, gap := range h.freeRanges(pool) {
			start := alignUp(gap.Start, b.Granule)
			if start >= gap.End {
				continue
			}
			if start+size <= gap.End && start+size > start {
				return Range{start, start + size}, nil
			}
			largest = max(largest, (gap.End-start)&^(b.Granule-1))
		}
	}
	return Range{}, &ExhaustedError{Resource: "memory", Detail: fmt.Sprintf("asked %s, largest free block %s in pool %s",
		formatSize(size), formatSize(largest), formatRanges(b.Pools))}
}

// bestFit finds a page-aligned block of size bytes (aligned to its own
// size when that is a power of two) in the smallest free gap that holds
// it, so small areas fill leftovers instead of splitting granule-sized
// holes.
func (b *Board) bestFit(h *holdings, size uint64) (Range, error) {
	align := uint64(pageSize)
	if size&(size-1) == 0 {
		align = min(size, b.Granule)
	}
	var best Range
	found := false
	for _, pool := range b.Pools {
		for _, gap := range h.freeRanges(pool) {
			start := alignUp(gap.Start, align)
			if start >= gap.End || gap.End-start < size {
				continue
			}
			if !found || gap.End-start < best.End-best.Start {
				best, found = Range{start, gap.End}, true
			}
		}
	}
	if !found {
		return Range{}, &ExhaustedError{Resource: "memory", Detail: fmt.Sprintf("asked a %s loader area, no free gap holds it in pool %s",
			formatSize(size), formatRanges(b.Pools))}
	}
	return Range{best.Start, best.Start + size}, nil
}

// allocateUART picks the port of a UART mode: its name and whether the
// partition has it alone. checkRequest has made sure the board has a port
// of the mode.
func (b *Board) allocateUART(h *holdings, mode UARTMode) (string, bool, error) {
	switch mode {
	case UARTDefault, UARTShared:
		if u := b.sharedUART(); u != nil {
			return u.Name, false, nil
		}
	case UARTDedicated:
		var names []string
		for _, u := range b.UARTs {
			if u.Shared {
				continue
			}
			if _, held := h.uarts[u.Name]; !held {
				return u.Name, true, nil
			}
			names = append(names, fmt.Sprintf("%s (held by %s)", u.Name, h.uarts[u.Name]))
		}
		return "", false, &ExhaustedError{Resource: "uart", Detail: "asked a dedicated UART, all are held: " + strings.Join(names, ", ")}
	}
	return "", false, nil
}

// pciAllocation is what allocatePCI picked.
type pciAllocation struct {
	slots []int
	links []Link
	pins  []uint32 // the devices' INTx lines, ascending
	base  uint32   // vpci_irq_base
}

// pciNeed is one ivshmem device a partition needs, and the devices that
// may serve it: the lowest free one of each INTx line (d & 3), ascending.
type pciNeed struct {
	slot       bool   // the network link: a window slot
	peer       string // a partition link: the owner of the other end
	joined     bool   // the peer opened the link: its device is fixed
	link       Link   // the joined link
	candidates []int
}

// allocatePCI picks the partition's ivshmem devices and their interrupts:
// a window slot for the network link (net), and for each partition link
// (ids) the link its peer opened towards owner, or a new one on a free link
// device with a granule of pool memory taken from h.
//
// Jailhouse raises the INTx of device d on SPI 32 + vpci_irq_base + (d & 3),
// with one vpci_irq_base per cell: two devices of a cell with the same
// d & 3 share a line, and the inmate cannot tell which one interrupted. So
// the devices of a cell differ in d & 3, at most 4 of them. Devices are
// tried lowest first, and the first choice whose lines fit free SPIs at
// some base wins, with the lowest such base. A new link also keeps off the
// lines of every other link opened towards the same peer (and to lines the
// board's SPIs can hold together), because the peer joins them all as they
// are.
func (b *Board) allocatePCI(h *holdings, peers []Entry, owner string, net bool, ids []string, own []uint32) (pciAllocation, error) {
	var needs []pciNeed
	if net {
		var free []int
		for k := range b.IVSHMEM.Slots {
			if _, held := h.slots[k]; !held {
				free = append(free, b.IVSHMEM.Device(k))
			}
		}
		if len(free) == 0 {
			return pciAllocation{}, &ExhaustedError{Resource: "ivshmem", Detail: fmt.Sprintf(
				"asked a network link, all %d slots of the ivshmem window are held", b.IVSHMEM.Slots)}
		}
		needs = append(needs, pciNeed{slot: true, candidates: lowestPerLine(free)})
	}
	ns, _, _ := strings.Cut(owner, "/")
	for _, id := range ids {
		n := pciNeed{peer: ns + "/" + id}
		if l, ok := joinableLink(peers, n.peer, owner); ok {
			n.joined, n.link, n.candidates = true, l, []int{l.Device}
			needs = append(needs, n)
			continue
		}
		waiting := linesTowards(peers, n.peer)
		var free, fitting []int
		for _, d := range b.LinkDevices {
			if _, held := h.devices[d]; held {
				continue
			}
			free = append(free, d)
			if line := uint32(d & 3); !slices.Contains(waiting, line) && b.linesFit(append(slices.Clone(waiting), line)) {
				fitting = append(fitting, d)
			}
		}
		switch {
		case len(free) == 0:
			return pciAllocation{}, &ExhaustedError{Resource: "link", Detail: fmt.Sprintf(
				"asked a link to %s, all %d link devices are held", n.peer, len(b.LinkDevices))}
		case len(fitting) == 0:
			return pciAllocation{}, &ExhaustedError{Resource: "link", Detail: fmt.Sprintf(
				"asked a link to %s, the free link devices %s would share an INTx line with the %s already waiting for %s to join",
				n.peer, jailhouse.FormatCPUList(free), count(len(waiting), "link"), n.peer)}
		}
		n.candidates = lowestPerLine(fitting)
		needs = append(needs, n)
	}

	devs := make([]int, len(needs))
	var pins []uint32
	var base uint32
	var choose func(i int, used []uint32) bool
	choose = func(i int, used []uint32) bool {
		if i == len(needs) {
			var ok bool
			pins, base, ok = b.intxLines(h, used, own)
			return ok
		}
		for _, d := range needs[i].candidates {
			line := uint32(d & 3)
			if slices.Contains(used, line) {
				continue
			}
			devs[i] = d
			if choose(i+1, append(used, line)) {
				return true
			}
		}
		return false
	}
	if !choose(0, nil) {
		var free []int
		for _, p := range b.SPIs {
			if _, held := h.pins[p]; !held && !slices.Contains(own, p) {
				free = append(free, int(p))
			}
		}
		var what []string
		for _, n := range needs {
			if n.slot {
				what = append(what, "the network link")
			} else {
				what = append(what, "the link to "+n.peer)
			}
		}
		asked := "an INTx line for " + strings.Join(what, ", ")
		if len(needs) > 1 {
			asked = "an INTx line each for " + strings.Join(what, ", ")
		}
		detail := fmt.Sprintf("asked %s: none free of interrupts %s", asked, formatPins(b.SPIs))
		if len(free) > 0 {
			detail = fmt.Sprintf("asked %s: the free interrupts %s of %s do not fit them (device d's line is 32 + vpci_irq_base + (d & 3))",
				asked, jailhouse.FormatCPUList(free), formatPins(b.SPIs))
		}
		return pciAllocation{}, &ExhaustedError{Resource: "interrupt", Detail: detail}
	}

	pci := pciAllocation{pins: pins, base: base}
	for i, n := range needs {
		switch {
		case n.slot:
			pci.slots = append(pci.slots, devs[i]-b.IVSHMEM.FirstDevice)
		case n.joined:
			pci.links = append(pci.links, n.link)
		default:
			mem, err := b.firstFit(h, b.Granule)
			if err != nil {
				return pciAllocation{}, fmt.Errorf("link to %s: %w", n.peer, err)
			}
			h.ram = append(h.ram, heldRange{mem, "link " + linkName(owner, n.peer)})
			pci.links = append(pci.links, Link{Peer: n.peer, Device: devs[i], Mem: mem})
		}
	}
	return pci, nil
}

// lowestPerLine keeps the lowest device of each INTx line (d & 3) of the
// ascending devs: a higher device on the same line serves no better.
func lowestPerLine(devs []int) []int {
	var out []int
	for _, d := range devs {
		if !slices.ContainsFunc(out, func(o int) bool { return o&3 == d&3 }) {
			out = append(out, d)
		}
	}
	return out
}

// joinableLink returns the link peer opened towards owner, as owner's end.
func joinableLink(peers []Entry, peer, owner string) (Link, bool) {
	for _, e := range peers {
		if e.Owner != peer {
			continue
		}
		for _, l := range e.Links {
			if l.Peer == owner {
				return Link{Peer: peer, Device: l.Device, Mem: l.Mem, ID: 1 - l.ID}, true
			}
		}
	}
	return Link{}, false
}

// linesTowards returns the INTx lines (d & 3) of the links entries hold
// towards peer, which peer joins as they are when it comes.
func linesTowards(entries []Entry, peer string) []uint32 {
	var lines []uint32
	for _, e := range entries {
		for _, l := range e.Links {
			if l.Peer == peer && !slices.Contains(lines, uint32(l.Device&3)) {
				lines = append(lines, uint32(l.Device&3))
			}
		}
	}
	return lines
}

// intxLines picks the lowest vpci_irq_base for which the INTx line of each
// of a cell's devices (lines: their d & 3, distinct) lands on a SPI of the
// board that nothing, and no pin in own, holds: line l is SPI x + l with
// x = 32 + base. It returns the SPIs, ascending, and the base.
func (b *Board) intxLines(h *holdings, lines []uint32, own []uint32) ([]uint32, uint32, bool) {
	if len(b.SPIs) == 0 {
		return nil, 0, false
	}
	lines = slices.Sorted(slices.Values(lines))
	lo := b.SPIs[0]
	for x := max(32, lo-min(lo, 3)); x <= b.SPIs[len(b.SPIs)-1]; x++ {
		pins := make([]uint32, 0, len(lines))
		for _, l := range lines {
			p := x + l
			if _, held := h.pins[p]; held || !slices.Contains(b.SPIs, p) || slices.Contains(own, p) {
				break
			}
			pins = append(pins, p)
		}
		if len(pins) == len(lines) {
			return pins, x - 32, true
		}
	}
	return nil, 0, false
}

// linesFit reports whether devices on these distinct INTx lines (d & 3)
// could ever be one cell's: at some base, all on the board's SPIs.
func (b *Board) linesFit(lines []uint32) bool {
	_, _, ok := b.intxLines(newHoldings(), lines, nil)
	return ok
}

// allocateRPUs picks the lowest n free RPU ids.
func (b *Board) allocateRPUs(h *holdings, n int) ([]int, error) {
	var free []int
	for _, r := range b.RPUs {
		if _, held := h.rpus[r]; !held {
			free = append(free, r)
		}
	}
	if len(free) < n {
		return nil, &ExhaustedError{Resource: "rpu", Detail: fmt.Sprintf("asked %s, %s of RPUs %s",
			count(n, "RPU"), freeText(free), jailhouse.FormatCPUList(b.RPUs))}
	}
	return free[:n], nil
}

func formatPins(pins []uint32) string {
	ns := make([]int, len(pins))
	for i, p := range pins {
		ns[i] = int(p)
	}
	return jailhouse.FormatCPUList(ns)
}

// count spells n things: "1 CPU", "3 CPUs".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// freeText says what of a list is free: "none free", "2 free (14-15)".
func freeText(free []int) string {
	if len(free) == 0 {
		return "none free"
	}
	return fmt.Sprintf("%d free (%s)", len(free), jailhouse.FormatCPUList(free))
}
