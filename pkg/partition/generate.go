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
// UART, the RAM (and the loader area), the comm region, then four regions
// per ivshmem device.
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
		VPCIIRQBase:     l.vpciBase,
		CPUResetAddress: l.entry,
		MsgReplyTimeout: l.msgReplyTimeout,
		CPUSet:          set,
		IRQChips:        gicChips(b.GICAddress, l.pins),
	}
	if l.uart != nil {
		c.Console = l.uart.Console
		c.MemoryRegions = append(c.MemoryRegions, l.uart.Region)
	}
	const ram = jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemLoadable
	c.MemoryRegions = append(c.MemoryRegions, jailhouse.Memory{
		PhysStart: l.ram.Start, VirtStart: l.ramVirt, Size: l.ram.Size(), Flags: ram,
	})
	if l.loader != nil {
		c.MemoryRegions = append(c.MemoryRegions, jailhouse.Memory{
			PhysStart: l.loader.Start, VirtStart: 0, Size: l.loader.Size(), Flags: ram,
		})
	}
	c.MemoryRegions = append(c.MemoryRegions, jailhouse.Memory{
		VirtStart: b.CommRegion,
		Size:      pageSize,
		Flags:     jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemCommRegion,
	})
	domain := b.system.Platform.PCIDomain
	for _, d := range l.devices {
		dev := vethDevice(domain, d.dev, d.id, len(c.MemoryRegions))
		dev.ShmemProtocol = d.protocol
		c.PCIDevices = append(c.PCIDevices, dev)
		c.MemoryRegions = append(c.MemoryRegions, d.regions[:]...)
	}
	if n := jailhouse.CellConfigSize(c); n > maxCellConfig {
		return nil, fmt.Errorf("generate cell %s: configuration is %d bytes, more than the %d the hypervisor takes: %w",
			l.name, n, maxCellConfig, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// gicChips returns the irqchip entries giving a cell exactly pins: one entry
// per 128-interrupt block that holds any, with pin_base 32 plus a multiple of
// 128 as upstream configs write it (SPI 33 is bit 1 of word 0 at pin_base
// 32). No pins, no entry.
func gicChips(gic uint64, pins []uint32) []jailhouse.IRQChip {
	var chips []jailhouse.IRQChip
	for _, p := range pins {
		base := 32 + (p-32)/128*128
		i := slices.IndexFunc(chips, func(c jailhouse.IRQChip) bool { return c.PinBase == base })
		if i < 0 {
			chips = append(chips, jailhouse.IRQChip{Address: gic, PinBase: base})
			i = len(chips) - 1
		}
		off := p - base
		chips[i].PinBitmap[off/32] |= 1 << (off % 32)
	}
	slices.SortFunc(chips, func(a, b jailhouse.IRQChip) int { return int(a.PinBase) - int(b.PinBase) })
	return chips
}

// Pins lists the interrupts a cell's irqchip entries for the GIC at gic give
// it, ascending.
func Pins(c *jailhouse.Cell, gic uint64) []uint32 {
	var pins []uint32
	for _, ic := range c.IRQChips {
		if ic.Address != gic {
			continue
		}
		for w, bits := range ic.PinBitmap {
			for i := range uint32(32) {
				if bits&(1<<i) != 0 {
					pins = append(pins, ic.PinBase+uint32(w)*32+i)
				}
			}
		}
	}
	slices.Sort(pins)
	return pins
}
