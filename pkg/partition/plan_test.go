package partition

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// planAndDecode plans a cell, encodes it and decodes the bytes back, so the
// assertions see what the hypervisor would see.
func planAndDecode(t *testing.T, b *Board, req Request, d *BootDescription, a Allocation) *jailhouse.Cell {
	t.Helper()
	c, err := Plan(b, req, d, a)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	data, err := c.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	if len(data) >= 64<<10 {
		t.Errorf("config is %d bytes, not below 64 KiB", len(data))
	}
	got, err := jailhouse.DecodeCell(data)
	if err != nil {
		t.Fatalf("DecodeCell: %v", err)
	}
	return got
}

func region(c *jailhouse.Cell, flag jailhouse.MemFlags) (jailhouse.Memory, bool) {
	for _, m := range c.MemoryRegions {
		if m.Flags&flag != 0 {
			return m, true
		}
	}
	return jailhouse.Memory{}, false
}

func TestPlanDefaultCell(t *testing.T) {
	b := mustBoard(t)
	a := Allocation{Owner: "default/demo", Cell: "demo", CPUs: []int{2, 3}, RAM: []Range{{0x72000000, 0x76000000}}}
	c := planAndDecode(t, b, Request{NumCPUs: 2, Memory: 64 * mib}, &BootDescription{File: "/boot/config.json"}, a)

	if c.Name != "demo" || c.Arch != jailhouse.ArchARM64 || c.Revision != jailhouse.Revision14 {
		t.Errorf("name %q arch %v rev %v", c.Name, c.Arch, c.Revision)
	}
	if c.Flags != jailhouse.CellPassiveCommRegion|jailhouse.CellVirtualConsolePermitted {
		t.Errorf("flags %#x, want PASSIVE_COMMREG|VIRTUAL_CONSOLE_PERMITTED", uint32(c.Flags))
	}
	if len(c.CPUSet) != 8 || !slices.Equal(c.CPUs(), []int{2, 3}) {
		t.Errorf("cpu set % x (%v), want CPUs 2-3 in 8 bytes", c.CPUSet, c.CPUs())
	}
	if c.CPUResetAddress != 0 || c.VPCIIRQBase != 108 {
		t.Errorf("cpu_reset_address %#x vpci_irq_base %d", c.CPUResetAddress, c.VPCIIRQBase)
	}
	if c.Console != b.Console {
		t.Errorf("console %+v, want the board UART %+v", c.Console, b.Console)
	}
	want := []jailhouse.Memory{
		{PhysStart: 0x09000000, VirtStart: 0x09000000, Size: 0x1000,
			Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemIO | jailhouse.MemRootShared},
		{PhysStart: 0x72000000, VirtStart: 0, Size: 64 * mib,
			Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemLoadable},
		{PhysStart: 0, VirtStart: 0x80000000, Size: 0x1000,
			Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemCommRegion},
	}
	if !slices.Equal(c.MemoryRegions, want) {
		t.Errorf("regions\n got %+v\nwant %+v", c.MemoryRegions, want)
	}
	wantChip := jailhouse.IRQChip{Address: 0x08000000, PinBase: 32, PinBitmap: [4]uint32{1 << 1, 0, 0, 0}}
	if len(c.IRQChips) != 1 || c.IRQChips[0] != wantChip {
		t.Errorf("irqchips %+v, want %+v", c.IRQChips, wantChip)
	}
	if len(c.PCIDevices) != 0 {
		t.Errorf("%d PCI devices, want none", len(c.PCIDevices))
	}
}

func TestPlanOptions(t *testing.T) {
	b := mustBoard(t)
	a := Allocation{Owner: "default/z", Cell: "z", CPUs: []int{5}, RAM: []Range{{0x70000000, 0x74000000}}}
	req := Request{NumCPUs: 1, Memory: 64 * mib}

	t.Run("starting_vaddress moves RAM and entry", func(t *testing.T) {
		d := &BootDescription{File: "/boot/config.json", StartingVAddress: 0x70000000, HasStartingVAddress: true}
		c := planAndDecode(t, b, req, d, a)
		ram, _ := region(c, jailhouse.MemLoadable)
		if ram.VirtStart != 0x70000000 || ram.PhysStart != 0x70000000 || c.CPUResetAddress != 0x70000000 {
			t.Errorf("RAM %+v reset %#x, want both at 0x70000000", ram, c.CPUResetAddress)
		}
	})
	t.Run("comm_region active clears PASSIVE_COMMREG", func(t *testing.T) {
		d := &BootDescription{File: "/boot/config.json", CommRegion: CommRegionActive}
		c := planAndDecode(t, b, req, d, a)
		if c.Flags&jailhouse.CellPassiveCommRegion != 0 || c.Flags&jailhouse.CellVirtualConsolePermitted == 0 {
			t.Errorf("flags %#x", uint32(c.Flags))
		}
	})
	t.Run("a CPU above 63 widens the set to 16 bytes", func(t *testing.T) {
		a := a
		a.CPUs = []int{70}
		c, err := Plan(b, req, nil, a)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.CPUSet) != 16 || !slices.Equal(c.CPUs(), []int{70}) {
			t.Errorf("cpu set % x", c.CPUSet)
		}
	})
	t.Run("an SPI above 159 gets its own pin_base", func(t *testing.T) {
		if got := gicChips(0x08000000, []uint32{170})[0]; got.PinBase != 160 || got.PinBitmap != [4]uint32{1 << 10, 0, 0, 0} {
			t.Errorf("gicChip(170) = %+v", got)
		}
	})
}

func TestPlanErrors(t *testing.T) {
	b := mustBoard(t)
	good := Allocation{Owner: "default/x", Cell: "x", CPUs: []int{2}, RAM: []Range{{0x70000000, 0x74000000}}}
	at := func(addr uint64) *BootDescription {
		return &BootDescription{File: "/boot/config.json", StartingVAddress: addr, HasStartingVAddress: true}
	}
	tests := []struct {
		name string
		req  Request
		d    *BootDescription
		a    Allocation
		key  string // BootDescriptionError key, or "" for other InvalidArgument
		text string
	}{
		{"unaligned starting_vaddress", Request{NumCPUs: 1, Memory: 64 * mib}, at(0x70000100), good,
			"starting_vaddress", "not 4 KiB aligned"},
		{"RAM over the comm region", Request{NumCPUs: 1, Memory: 64 * mib}, at(0x7e000000), good,
			"starting_vaddress", "comm region"},
		{"load address on the UART", Request{NumCPUs: 1, Memory: 64 * mib}, at(0x09000000), good,
			"starting_vaddress", "lies in the console UART"},
		{"too much RAM at address 0 covers the GIC", Request{NumCPUs: 1, Memory: 192 * mib}, &BootDescription{File: "/boot/config.json"},
			Allocation{Owner: "default/x", Cell: "x", CPUs: []int{2}, RAM: []Range{{0x70000000, 0x7c000000}}},
			"", "would cover the GIC distributor at 0x8000000-0x8010000: at most 128 MiB fit there"},
		{"allocation smaller than the request", Request{NumCPUs: 1, Memory: 128 * mib}, nil, good, "", "smaller"},
		{"name too long", Request{NumCPUs: 1, Memory: 64 * mib}, nil,
			Allocation{Cell: strings.Repeat("n", 32), CPUs: []int{2}, RAM: good.RAM}, "", "cell name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Plan(b, tt.req, tt.d, tt.a)
			if err == nil {
				t.Fatal("Plan succeeded")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
			var be *BootDescriptionError
			if tt.key != "" && (!errors.As(err, &be) || be.Key != tt.key) {
				t.Errorf("error %v does not name key %q", err, tt.key)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not say %q", err, tt.text)
			}
		})
	}
}
