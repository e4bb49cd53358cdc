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

	// ram is the physical block from the ledger; it appears in the cell at
	// ramVirt.
	ram     Range
	ramVirt uint64
	// entry is the cell's cpu_reset_address: where the payload is loaded
	// and where the first CPU starts.
	entry uint64
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
//     comm region, the UART or the GIC, which sit at fixed cell addresses;
//     otherwise the error (errdefs.ErrInvalidArgument) names
//     starting_vaddress.
//
// The cell also gets the board's UART (I/O, shared with the root cell) as
// its console with that UART's interrupt, the comm region (4 KiB), the
// board's vpci_irq_base, VIRTUAL_CONSOLE_PERMITTED, and PASSIVE_COMMREG
// unless the boot description says comm_region "active".
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
	if len(a.CPUs) == 0 || len(a.RAM) != 1 {
		return nil, fmt.Errorf("plan %s: allocation has %d CPUs and %d RAM blocks, want at least 1 and exactly 1: %w",
			a.Cell, len(a.CPUs), len(a.RAM), errdefs.ErrInvalidArgument)
	}
	if a.RAM[0].Size() < req.Memory {
		return nil, fmt.Errorf("plan %s: allocated RAM %s is smaller than the %s asked: %w",
			a.Cell, a.RAM[0], formatSize(req.Memory), errdefs.ErrInvalidArgument)
	}
	l := &layout{
		name:  a.Cell,
		cpus:  a.CPUs,
		flags: jailhouse.CellVirtualConsolePermitted,
		ram:   a.RAM[0],
		entry: LoadAddress(b, d),
	}
	if d == nil || d.CommRegion == CommRegionPassive {
		l.flags |= jailhouse.CellPassiveCommRegion
	}
	l.ramVirt = l.entry

	if err := checkAddressSpace(b, l.ram.Size(), d); err != nil {
		return nil, fmt.Errorf("plan %s: %w", a.Cell, err)
	}
	return l, nil
}

// checkAddressSpace checks that size bytes of partition RAM fit at the
// load address without covering the cell addresses the board reserves. The
// error names the key to change: starting_vaddress when the boot
// description set it, else the spec's memory limit.
func checkAddressSpace(b *Board, size uint64, d *BootDescription) error {
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
	for _, f := range b.fixedCellRanges() {
		if !virt.Overlaps(f.r) {
			continue
		}
		if f.r.Start > load {
			return fail(fmt.Errorf("%s of RAM at load address %#x would cover the %s at %s: at most %s fit there",
				formatSize(size), load, f.what, f.r, formatSize(b.roomAt(load))))
		}
		return fail(fmt.Errorf("load address %#x lies in the %s at %s", load, f.what, f.r))
	}
	return nil
}

// roomAt returns how many bytes of RAM fit at cell address load before the
// first reserved range above it, in whole granules.
func (b *Board) roomAt(load uint64) uint64 {
	room := ^uint64(0) - load
	for _, f := range b.fixedCellRanges() {
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
// taken by something other than its RAM, ascending.
func (b *Board) fixedCellRanges() []namedRange {
	rs := []namedRange{
		{"comm region", Range{b.CommRegion, b.CommRegion + pageSize}},
		{"console UART", Range{b.Console.Address, b.Console.Address + uint64(b.Console.Size)}},
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
