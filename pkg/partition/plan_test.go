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
	a := Allocation{Owner: "default/demo", Cell: "demo", CPUs: []int{2, 3}, RAM: []Range{{0x72000000, 0x76000000}}, UART: "pl011"}
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
	// The shared UART's interrupt stays with root Linux, and a cell
	// without network has no PCI device: no interrupt at all.
	if len(c.IRQChips) != 0 || len(c.PCIDevices) != 0 {
		t.Errorf("irqchips %+v, %d PCI devices; want none", c.IRQChips, len(c.PCIDevices))
	}
}

// A networked cell has the partition's end of its window slot's
// ivshmem-net link: the root cell's four regions with the write permission
// moved to the second output section, ROOTSHARED, a VETH device at the
// slot's device number with dev id 1, and an irqchip with exactly the
// allocated INTx line.
func TestPlanNetworkedCell(t *testing.T) {
	b := mustBoard(t)
	a := Allocation{Owner: "default/n", Cell: "n", CPUs: []int{4}, RAM: []Range{{0x70000000, 0x74000000}},
		UART: "pl011", Slots: []int{3}, Pins: []uint32{145}, VPCIIRQBase: 112}
	c := planAndDecode(t, b, Request{NumCPUs: 1, Memory: 64 * mib}, nil, a)

	const base = 0x7e800000 + 3*0x100000
	ro := jailhouse.MemRead | jailhouse.MemRootShared
	wantRegions := []jailhouse.Memory{
		{PhysStart: base, VirtStart: base, Size: 0x1000, Flags: ro},
		{},
		{PhysStart: base + 0x1000, VirtStart: base + 0x1000, Size: 0x7f000, Flags: ro},
		{PhysStart: base + 0x80000, VirtStart: base + 0x80000, Size: 0x7f000, Flags: ro | jailhouse.MemWrite},
	}
	if got := c.MemoryRegions[3:]; !slices.Equal(got, wantRegions) {
		t.Errorf("ivshmem regions\n got %+v\nwant %+v", got, wantRegions)
	}
	wantDev := jailhouse.PCIDevice{Type: jailhouse.PCITypeIVSHMEM, Domain: 1, BDF: 5 << 3,
		BARMask: [6]uint32{0xfffff000}, ShmemRegionsStart: 3, ShmemDevID: 1, ShmemPeers: 2, ShmemProtocol: jailhouse.ShmemProtoVETH}
	if len(c.PCIDevices) != 1 || c.PCIDevices[0] != wantDev {
		t.Errorf("PCI devices %+v, want %+v", c.PCIDevices, wantDev)
	}
	wantChip := jailhouse.IRQChip{Address: 0x08000000, PinBase: 32, PinBitmap: [4]uint32{0, 0, 0, 1 << (145 - 128)}}
	if len(c.IRQChips) != 1 || c.IRQChips[0] != wantChip || c.VPCIIRQBase != 112 {
		t.Errorf("irqchips %+v vpci_irq_base %d, want %+v and 112", c.IRQChips, c.VPCIIRQBase, wantChip)
	}
	// The root cell's end of the same link: same memory, peer 0.
	root := b.SystemConfig().RootCell
	dev := slices.IndexFunc(root.PCIDevices, func(p jailhouse.PCIDevice) bool { return p.BDF == 5<<3 })
	if dev < 0 || root.PCIDevices[dev].ShmemDevID != 0 {
		t.Fatalf("root cell has no peer-0 device 00:05.0")
	}
	rr := root.MemoryRegions[root.PCIDevices[dev].ShmemRegionsStart:][:4]
	for i := range rr {
		if rr[i].PhysStart != wantRegions[i].PhysStart || rr[i].Size != wantRegions[i].Size {
			t.Errorf("root region %d %+v does not match the cell's %+v", i, rr[i], wantRegions[i])
		}
	}
}

func TestPlanLinksLoaderAndDedicatedUART(t *testing.T) {
	b := qemuWithDedicatedUART(t)
	link := Link{Peer: "default/peer", Device: 19, Mem: Range{0x74000000, 0x74200000}, ID: 1}
	a := Allocation{Owner: "default/l", Cell: "l", CPUs: []int{6},
		RAM: []Range{{0x70000000, 0x74000000}, {0x74200000, 0x74210000}}, Loader: true,
		UART: "pl011-2", UARTDedicated: true, Links: []Link{link}, Pins: []uint32{40, 143}, VPCIIRQBase: 108}
	d := &BootDescription{File: "/boot/config.json", StartingVAddress: 0x70000000, HasStartingVAddress: true}
	c := planAndDecode(t, b, Request{NumCPUs: 1, Memory: 64 * mib}, d, a)

	uart := jailhouse.Memory{PhysStart: 0x09040000, VirtStart: 0x09040000, Size: 0x1000,
		Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemIO}
	rwxl := jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemLoadable
	want := []jailhouse.Memory{
		uart,
		{PhysStart: 0x70000000, VirtStart: 0x70000000, Size: 64 * mib, Flags: rwxl},
		{PhysStart: 0x74200000, VirtStart: 0, Size: 0x10000, Flags: rwxl},
	}
	if got := c.MemoryRegions[:3]; !slices.Equal(got, want) {
		t.Errorf("UART, RAM and loader\n got %+v\nwant %+v", got, want)
	}
	if c.Console.Address != 0x09040000 {
		t.Errorf("console at %#x, want the dedicated UART", c.Console.Address)
	}
	// The link: above the comm region, end 1 writes output section 1.
	lr := c.MemoryRegions[4:8]
	if lr[0].PhysStart != 0x74000000 || lr[0].VirtStart != 0x80200000 || lr[3].Flags&jailhouse.MemWrite == 0 ||
		lr[2].Flags&jailhouse.MemWrite != 0 || lr[1].Flags&jailhouse.MemWrite == 0 {
		t.Errorf("link regions %+v", lr)
	}
	var total uint64
	for _, m := range lr {
		total += m.Size
		if m.Flags&jailhouse.MemRootShared == 0 {
			t.Errorf("link region %+v is not ROOTSHARED", m)
		}
	}
	if total != link.Mem.Size() {
		t.Errorf("link regions cover %#x bytes of the %#x-byte link", total, link.Mem.Size())
	}
	if len(c.PCIDevices) != 1 || c.PCIDevices[0].BDF != 19<<3 || c.PCIDevices[0].ShmemDevID != 1 ||
		c.PCIDevices[0].ShmemProtocol != jailhouse.ShmemProtoUndefined || c.PCIDevices[0].ShmemRegionsStart != 4 {
		t.Errorf("PCI devices %+v", c.PCIDevices)
	}
	if got := Pins(c, b.GICAddress); !slices.Equal(got, []uint32{40, 143}) {
		t.Errorf("irqchip bitmap gives %v, want the UART's 40 and the link's 143", got)
	}
	if fs := jailhouse.Check(b.SystemConfig(), c); jailhouse.HasErrors(fs) {
		t.Errorf("Check: %v", fs)
	}
}

func TestPlanOptions(t *testing.T) {
	b := mustBoard(t)
	a := Allocation{Owner: "default/z", Cell: "z", CPUs: []int{5}, RAM: []Range{{0x70000000, 0x74000000}}, UART: "pl011"}
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
		// A timeout of 0 would let an inmate that stops answering block
		// every shutdown and destroy of its cell forever.
		if c.MsgReplyTimeout != b.MsgReplyTimeout || c.MsgReplyTimeout == 0 {
			t.Errorf("msg_reply_timeout %d, want the board's %d (never 0)", c.MsgReplyTimeout, b.MsgReplyTimeout)
		}
	})
	t.Run("a passive cell keeps msg_reply_timeout 0", func(t *testing.T) {
		c := planAndDecode(t, b, req, &BootDescription{File: "/boot/config.json"}, a)
		if c.MsgReplyTimeout != 0 {
			t.Errorf("msg_reply_timeout %d on a passive cell", c.MsgReplyTimeout)
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
			"starting_vaddress", "lies in the UART pl011"},
		{"too much RAM at address 0 covers the GIC", Request{NumCPUs: 1, Memory: 192 * mib}, &BootDescription{File: "/boot/config.json"},
			Allocation{Owner: "default/x", Cell: "x", CPUs: []int{2}, RAM: []Range{{0x70000000, 0x7c000000}}},
			"", "would cover the GIC distributor at 0x8000000-0x8010000: at most 128 MiB fit there"},
		{"allocation smaller than the request", Request{NumCPUs: 1, Memory: 128 * mib}, nil, good, "", "smaller"},
		{"RAM over the ivshmem window of a networked cell", Request{NumCPUs: 1, Memory: 64 * mib}, at(0x7c000000),
			Allocation{Cell: "x", CPUs: []int{2}, RAM: good.RAM, Slots: []int{0}, Pins: []uint32{140}, VPCIIRQBase: 106},
			"starting_vaddress", "would cover the ivshmem window at 0x7e800000-0x7f800000"},
		{"RAM over the loader area", Request{NumCPUs: 1, Memory: 64 * mib}, at(0x1000),
			Allocation{Cell: "x", CPUs: []int{2}, RAM: []Range{good.RAM[0], {0x74000000, 0x74010000}}, Loader: true},
			"starting_vaddress", "lies in the loader area"},
		{"an ivshmem slot the board does not have", Request{NumCPUs: 1, Memory: 64 * mib}, nil,
			Allocation{Cell: "x", CPUs: []int{2}, RAM: good.RAM, Slots: []int{16}}, "", "ivshmem slot 16"},
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
