package partition

import (
	"fmt"
	"slices"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// maxCellConfig is the largest configuration the hypervisor copies: 16
// pages, counting the buffer's page offset (jailhouse-abi §2.9). Staying a
// page below keeps any offset safe.
const maxCellConfig = 15 * pageSize

// generate turns a layout into the cell configuration, with the revision and
// architecture of the board. Regions follow upstream's inmate configs: the
// UART, the RAM, then the comm region.
func generate(b *Board, l *layout) (*jailhouse.Cell, error) {
	// The hypervisor reads the cpu set as 64-bit words: a multiple of 8
	// bytes that holds the highest CPU.
	setSize := (slices.Max(l.cpus)/64 + 1) * 8
	set, err := jailhouse.CPUSetFromList(l.cpus, setSize)
	if err != nil {
		return nil, fmt.Errorf("generate cell %s: %w: %w", l.name, err, errdefs.ErrInvalidArgument)
	}
	c := &jailhouse.Cell{
		Revision:        b.Revision,
		Arch:            b.Arch,
		Name:            l.name,
		Flags:           l.flags,
		VPCIIRQBase:     b.VPCIIRQBase,
		CPUResetAddress: l.entry,
		Console:         b.Console,
		CPUSet:          set,
		MemoryRegions: []jailhouse.Memory{
			{
				PhysStart: b.Console.Address,
				VirtStart: b.Console.Address,
				Size:      uint64(b.Console.Size),
				Flags:     jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemIO | jailhouse.MemRootShared,
			},
			{
				PhysStart: l.ram.Start,
				VirtStart: l.ramVirt,
				Size:      l.ram.Size(),
				Flags:     jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemLoadable,
			},
			{
				VirtStart: b.CommRegion,
				Size:      pageSize,
				Flags:     jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemCommRegion,
			},
		},
		IRQChips: []jailhouse.IRQChip{gicChip(b.GICAddress, b.ConsoleSPI)},
	}
	if n := jailhouse.CellConfigSize(c); n > maxCellConfig {
		return nil, fmt.Errorf("generate cell %s: configuration is %d bytes, more than the %d the hypervisor takes: %w",
			l.name, n, maxCellConfig, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// gicChip returns an irqchip entry giving the cell exactly one interrupt.
// pin_base is 32 plus a multiple of 128, as upstream configs write it, so
// SPI 33 is bit 1 of word 0 at pin_base 32.
func gicChip(gic uint64, spi uint32) jailhouse.IRQChip {
	base := 32 + (spi-32)/128*128
	off := spi - base
	ic := jailhouse.IRQChip{Address: gic, PinBase: base}
	ic.PinBitmap[off/32] = 1 << (off % 32)
	return ic
}
