package jailhouse

// Go descriptions of public Jailhouse configurations, used by the golden
// tests. The values are taken from the C sources of siemens/jailhouse at
// master e57d1eff (2023-01-10, configuration revision 14); the path of each
// source is named next to it. Nothing here is generated from those sources:
// each literal was written by hand from the C initialisers, and the golden
// .cell files in testdata/golden are what our encoder makes of them.

const rwx = MemRead | MemWrite | MemExecute

// JAILHOUSE_IVSHMEM_BAR_MASK_INTX and _MSIX.
var (
	ivshmemINTX = [6]uint32{0xfffff000}
	ivshmemMSIX = [6]uint32{0xfffff000, 0xfffff000}
)

// shmemNetRegions is JAILHOUSE_SHMEM_NET_REGIONS(start, devID). The macro
// sets ROOTSHARED in root-cell configs too (jailhouse-abi.md §2.4 says
// otherwise; gcc-built upstream configs confirm the macro).
func shmemNetRegions(start uint64, devID int) []Memory {
	shared := MemRootShared
	w := func(id int) MemFlags {
		if id == devID {
			return MemWrite
		}
		return 0
	}
	return []Memory{
		{PhysStart: start, VirtStart: start, Size: 0x1000, Flags: MemRead | shared},
		{},
		{PhysStart: start + 0x1000, VirtStart: start + 0x1000, Size: 0x7f000, Flags: MemRead | shared | w(0)},
		{PhysStart: start + 0x80000, VirtStart: start + 0x80000, Size: 0x7f000, Flags: MemRead | shared | w(1)},
	}
}

func cpus(list ...int) []byte {
	set, err := CPUSetFromList(list, 8)
	if err != nil {
		panic(err)
	}
	return set
}

// configs/arm64/qemu-arm64.c: the QEMU virt arm64 root cell.
func qemuARM64System() *System {
	mem := []Memory{
		{PhysStart: 0x7faf0000, VirtStart: 0x7faf0000, Size: 0x1000, Flags: MemRead},
		{PhysStart: 0x7faf1000, VirtStart: 0x7faf1000, Size: 0x9000, Flags: MemRead | MemWrite},
		{PhysStart: 0x7fafa000, VirtStart: 0x7fafa000, Size: 0x2000, Flags: MemRead | MemWrite},
		{PhysStart: 0x7fafc000, VirtStart: 0x7fafc000, Size: 0x2000, Flags: MemRead},
		{PhysStart: 0x7fafe000, VirtStart: 0x7fafe000, Size: 0x2000, Flags: MemRead},
	}
	mem = append(mem, shmemNetRegions(0x7fb00000, 0)...)
	mem = append(mem,
		Memory{PhysStart: 0x09000000, VirtStart: 0x09000000, Size: 0x37000000, Flags: MemRead | MemWrite | MemIO},
		Memory{PhysStart: 0x40000000, VirtStart: 0x40000000, Size: 0x3fa10000, Flags: rwx},
		Memory{PhysStart: 0x4010000000, VirtStart: 0x4010000000, Size: 0x10000000, Flags: MemRead | MemWrite | MemIO},
	)
	return &System{
		Revision:         Revision14,
		Arch:             ArchARM64,
		Flags:            SysVirtualDebugConsole,
		HypervisorMemory: Memory{PhysStart: 0x7fc00000, Size: 0x00400000},
		DebugConsole: Console{Address: 0x09000000, Size: 0x1000, Type: ConsolePL011,
			Flags: ConsoleAccessMMIO | ConsoleRegDist4},
		Platform: Platform{
			PCIMMConfigBase: 0x08e00000,
			PCIIsVirtual:    1,
			PCIDomain:       1,
			ARM: ARMPlatform{MaintenanceIRQ: 25, GICVersion: 3,
				GICDBase: 0x08000000, GICRBase: 0x080a0000},
		},
		RootCell: Cell{
			Revision:      Revision14,
			Arch:          ArchARM64,
			Name:          "qemu-arm64",
			VPCIIRQBase:   128 - 32,
			CPUSet:        cpus(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
			MemoryRegions: mem,
			IRQChips: []IRQChip{{Address: 0x08000000, PinBase: 32,
				PinBitmap: [4]uint32{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}},
			PCIDevices: []PCIDevice{
				{Type: PCITypeIVSHMEM, Domain: 1, BDF: 0 << 3, BARMask: ivshmemINTX,
					ShmemRegionsStart: 0, ShmemDevID: 0, ShmemPeers: 3, ShmemProtocol: ShmemProtoUndefined},
				{Type: PCITypeIVSHMEM, Domain: 1, BDF: 1 << 3, BARMask: ivshmemINTX,
					ShmemRegionsStart: 5, ShmemDevID: 0, ShmemPeers: 2, ShmemProtocol: ShmemProtoVETH},
			},
		},
	}
}

// configs/arm64/qemu-arm64-inmate-demo.c
func qemuARM64InmateDemo() *Cell {
	return &Cell{
		Revision:    Revision14,
		Arch:        ArchARM64,
		Name:        "inmate-demo",
		Flags:       CellPassiveCommRegion,
		VPCIIRQBase: 144 - 32,
		Console: Console{Address: 0x09000000, Type: ConsolePL011,
			Flags: ConsoleAccessMMIO | ConsoleRegDist4},
		CPUSet: cpus(1),
		MemoryRegions: []Memory{
			{PhysStart: 0x7faf0000, VirtStart: 0x7faf0000, Size: 0x1000, Flags: MemRead | MemRootShared},
			{PhysStart: 0x7faf1000, VirtStart: 0x7faf1000, Size: 0x9000, Flags: MemRead | MemWrite | MemRootShared},
			{PhysStart: 0x7fafa000, VirtStart: 0x7fafa000, Size: 0x2000, Flags: MemRead | MemRootShared},
			{PhysStart: 0x7fafc000, VirtStart: 0x7fafc000, Size: 0x2000, Flags: MemRead | MemWrite | MemRootShared},
			{PhysStart: 0x7fafe000, VirtStart: 0x7fafe000, Size: 0x2000, Flags: MemRead | MemRootShared},
			{PhysStart: 0x09000000, VirtStart: 0x09000000, Size: 0x1000, Flags: MemRead | MemWrite | MemIO | MemRootShared},
			{PhysStart: 0x7fa00000, VirtStart: 0, Size: 0x00010000, Flags: rwx | MemLoadable},
			{VirtStart: 0x80000000, Size: 0x00001000, Flags: MemRead | MemWrite | MemCommRegion},
		},
		IRQChips: []IRQChip{{Address: 0x08000000, PinBase: 32,
			PinBitmap: [4]uint32{0, 0, 0, 1 << (144 - 128)}}},
		PCIDevices: []PCIDevice{{Type: PCITypeIVSHMEM, Domain: 1, BDF: 0 << 3, BARMask: ivshmemINTX,
			ShmemRegionsStart: 0, ShmemDevID: 1, ShmemPeers: 3, ShmemProtocol: ShmemProtoUndefined}},
	}
}

// configs/arm64/qemu-arm64-linux-demo.c
func qemuARM64LinuxDemo() *Cell {
	mem := []Memory{
		{PhysStart: 0x7faf0000, VirtStart: 0x7faf0000, Size: 0x1000, Flags: MemRead | MemRootShared},
		{PhysStart: 0x7faf1000, VirtStart: 0x7faf1000, Size: 0x9000, Flags: MemRead | MemWrite | MemRootShared},
		{PhysStart: 0x7fafa000, VirtStart: 0x7fafa000, Size: 0x2000, Flags: MemRead | MemRootShared},
		{PhysStart: 0x7fafc000, VirtStart: 0x7fafc000, Size: 0x2000, Flags: MemRead | MemRootShared},
		{PhysStart: 0x7fafe000, VirtStart: 0x7fafe000, Size: 0x2000, Flags: MemRead | MemWrite | MemRootShared},
	}
	mem = append(mem, shmemNetRegions(0x7fb00000, 1)...)
	mem = append(mem,
		Memory{PhysStart: 0x09000000, VirtStart: 0x09000000, Size: 0x1000, Flags: MemRead | MemWrite | MemIO | MemRootShared},
		Memory{PhysStart: 0x7f900000, VirtStart: 0, Size: 0x10000, Flags: rwx | MemLoadable},
		Memory{PhysStart: 0x70000000, VirtStart: 0x70000000, Size: 0x8000000, Flags: rwx | MemDMA | MemLoadable},
		Memory{VirtStart: 0x80000000, Size: 0x00001000, Flags: MemRead | MemWrite | MemCommRegion},
	)
	return &Cell{
		Revision:    Revision14,
		Arch:        ArchARM64,
		Name:        "qemu-arm64-linux-demo",
		Flags:       CellPassiveCommRegion | CellVirtualConsolePermitted,
		VPCIIRQBase: 140 - 32,
		Console: Console{Address: 0x09000000, Type: ConsolePL011,
			Flags: ConsoleAccessMMIO | ConsoleRegDist4},
		CPUSet:        cpus(2, 3),
		MemoryRegions: mem,
		IRQChips: []IRQChip{{Address: 0x08000000, PinBase: 32,
			PinBitmap: [4]uint32{1 << (33 - 32), 0, 0, 1<<(140-128) | 1<<(141-128)}}},
		PCIDevices: []PCIDevice{
			{Type: PCITypeIVSHMEM, Domain: 1, BDF: 0 << 3, BARMask: ivshmemINTX,
				ShmemRegionsStart: 0, ShmemDevID: 2, ShmemPeers: 3, ShmemProtocol: ShmemProtoUndefined},
			{Type: PCITypeIVSHMEM, BDF: 1 << 3, BARMask: ivshmemINTX,
				ShmemRegionsStart: 5, ShmemDevID: 1, ShmemPeers: 2, ShmemProtocol: ShmemProtoVETH},
		},
	}
}

// PCI capability IDs from include/jailhouse/pci_defs.h.
const (
	pciCapPM      = 0x01
	pciCapMSI     = 0x05
	pciCapExp     = 0x10
	pciCapMSIX    = 0x11
	pciCapSATA    = 0x12
	pciExtCapErr  = 0x01
	pciExtCapDSN  = 0x03
	virtioDevBlk  = 2
	virtioDevCons = 3
)

// configs/x86/qemu-x86.c: the QEMU q35 x86 root cell.
func qemuX86System() *System {
	rw := MemRead | MemWrite
	mem := []Memory{
		{PhysStart: 0x3f000000, VirtStart: 0x3f000000, Size: 0x1000, Flags: MemRead},
		{PhysStart: 0x3f001000, VirtStart: 0x3f001000, Size: 0xdf000, Flags: rw},
		{}, {},
		{PhysStart: 0x3f0e0000, VirtStart: 0x3f0e0000, Size: 0x1000, Flags: MemRead},
		{PhysStart: 0x3f0e1000, VirtStart: 0x3f0e1000, Size: 0xf000, Flags: rw},
		{}, {},
		{PhysStart: 0x3f0f0000, VirtStart: 0x3f0f0000, Size: 0x1000, Flags: MemRead},
		{PhysStart: 0x3f0f1000, VirtStart: 0x3f0f1000, Size: 0x9000, Flags: rw},
		{PhysStart: 0x3f0fa000, VirtStart: 0x3f0fa000, Size: 0x2000, Flags: rw},
		{PhysStart: 0x3f0fc000, VirtStart: 0x3f0fc000, Size: 0x2000, Flags: MemRead},
		{PhysStart: 0x3f0fe000, VirtStart: 0x3f0fe000, Size: 0x2000, Flags: MemRead},
	}
	mem = append(mem, shmemNetRegions(0x3f100000, 0)...)
	mem = append(mem,
		Memory{PhysStart: 0x0, VirtStart: 0x0, Size: 0x3a000000, Flags: rwx | MemDMA},
		Memory{PhysStart: 0x3a600000, VirtStart: 0x3a600000, Size: 0x4a00000, Flags: rwx | MemDMA},
		Memory{PhysStart: 0x3f200000, VirtStart: 0x3f200000, Size: 0xddf000, Flags: rwx | MemDMA},
		Memory{PhysStart: 0x3ffdf000, VirtStart: 0x3ffdf000, Size: 0x21000, Flags: MemRead},
		Memory{PhysStart: 0xfd000000, VirtStart: 0xfd000000, Size: 0x1000000, Flags: rw},
		Memory{PhysStart: 0xfe200000, VirtStart: 0xfe200000, Size: 0x4000, Flags: rw},
		Memory{PhysStart: 0xfea00000, VirtStart: 0xfea00000, Size: 0x40000, Flags: rw},
		Memory{PhysStart: 0xfea40000, VirtStart: 0xfea40000, Size: 0x20000, Flags: rw},
		Memory{PhysStart: 0xfea60000, VirtStart: 0xfea60000, Size: 0x20000, Flags: rw},
		Memory{PhysStart: 0xfea91000, VirtStart: 0xfea91000, Size: 0x3000, Flags: rw},
		Memory{PhysStart: 0xfea94000, VirtStart: 0xfea94000, Size: 0x4000, Flags: rw},
		Memory{PhysStart: 0xfea98000, VirtStart: 0xfea98000, Size: 0x1000, Flags: rw},
		Memory{PhysStart: 0xfea9a000, VirtStart: 0xfea9a000, Size: 0x1000, Flags: rw},
		Memory{PhysStart: 0xfed00000, VirtStart: 0xfed00000, Size: 0x1000, Flags: rw},
	)
	w := PCICapWrite
	return &System{
		Revision:         Revision14,
		Arch:             ArchX86,
		Flags:            SysVirtualDebugConsole,
		HypervisorMemory: Memory{PhysStart: 0x3a000000, Size: 0x600000},
		DebugConsole:     Console{Address: 0x3f8, Type: Console8250},
		Platform: Platform{
			PCIMMConfigBase:   0xb0000000,
			PCIMMConfigEndBus: 0xff,
			IOMMUUnits:        [8]IOMMU{{Type: IOMMUIntel, Base: 0xfed90000, Size: 0x1000}},
			X86:               X86Platform{PMTimerAddress: 0x608, VTDInterruptLimit: 256},
		},
		RootCell: Cell{
			Revision:      Revision14,
			Arch:          ArchX86,
			Name:          "QEMU-VM",
			CPUSet:        cpus(0, 1, 2, 3),
			MemoryRegions: mem,
			IRQChips: []IRQChip{{Address: 0xfec00000, ID: 0xff00,
				PinBitmap: [4]uint32{0xffffff}}},
			PIORegions: []PIO{
				{0x0, 0x1f}, {0x40, 0x4}, {0x60, 0x2}, {0x64, 0x1}, {0x70, 0x2}, {0x1ce, 0x3},
				{0x2f8, 0x8}, {0x3b0, 0x30}, {0x3f0, 0x8}, {0x402, 0x1}, {0xcd0, 0x8},
				{0x5658, 0x4}, {0xd000, 0xff},
			},
			PCIDevices: []PCIDevice{
				{Type: PCITypeDevice, BDF: 0x0008},
				{Type: PCITypeDevice, BDF: 0x0010,
					BARMask:   [6]uint32{0xfffe0000, 0xfffe0000, 0xffffffe0, 0xffffc000},
					CapsStart: 5, NumCaps: 6, NumMSIVectors: 1, MSI64Bits: true,
					NumMSIXVectors: 5, MSIXRegionSize: 0x1000, MSIXAddress: 0xfea90000},
				{Type: PCITypeBridge, BDF: 0x0018, BARMask: [6]uint32{0xffffff00},
					CapsStart: 11, NumCaps: 5, NumMSIVectors: 1, MSI64Bits: true, MSIMaskable: true},
				{Type: PCITypeDevice, BDF: 0x00d8, CapsStart: 0, NumCaps: 2, NumMSIVectors: 1, MSI64Bits: true},
				{Type: PCITypeDevice, BDF: 0x00f8},
				{Type: PCITypeDevice, BDF: 0x00fa, CapsStart: 2, NumCaps: 2, NumMSIVectors: 1, MSI64Bits: true},
				{Type: PCITypeDevice, BDF: 0x00fb},
				{Type: PCITypeDevice, BDF: 0x00ff,
					BARMask:   [6]uint32{0xffffffe0, 0xfffff000, 0, 0, 0xffffc000, 0xffffffff},
					CapsStart: 4, NumCaps: 1, NumMSIXVectors: 2, MSIXRegionSize: 0x1000, MSIXAddress: 0xfea9b000},
				{Type: PCITypeIVSHMEM, BDF: 0x100 | 0x0c<<3, BARMask: ivshmemMSIX, NumMSIXVectors: 2,
					ShmemRegionsStart: 0, ShmemPeers: 2, ShmemProtocol: ShmemProtoVirtioBack + virtioDevBlk},
				{Type: PCITypeIVSHMEM, BDF: 0x100 | 0x0d<<3, BARMask: ivshmemMSIX, NumMSIXVectors: 3,
					ShmemRegionsStart: 4, ShmemPeers: 2, ShmemProtocol: ShmemProtoVirtioBack + virtioDevCons},
				{Type: PCITypeIVSHMEM, BDF: 0x100 | 0x0e<<3, BARMask: ivshmemMSIX, NumMSIXVectors: 16,
					ShmemRegionsStart: 8, ShmemPeers: 3, ShmemProtocol: ShmemProtoUndefined},
				{Type: PCITypeIVSHMEM, BDF: 0x100 | 0x0f<<3, BARMask: ivshmemMSIX, NumMSIXVectors: 2,
					ShmemRegionsStart: 13, ShmemPeers: 2, ShmemProtocol: ShmemProtoVETH},
			},
			PCICaps: []PCICapability{
				{ID: pciCapMSI, Start: 0x60, Len: 14, Flags: w},
				{Start: 0x40, Len: 0x10, Flags: w},
				{ID: pciCapSATA, Start: 0xa8, Len: 2},
				{ID: pciCapMSI, Start: 0x80, Len: 14, Flags: w},
				{ID: pciCapMSIX, Start: 0x98, Len: 12, Flags: w},
				{ID: pciCapPM, Start: 0xc8, Len: 8, Flags: w},
				{ID: pciCapMSI, Start: 0xd0, Len: 14, Flags: w},
				{ID: pciCapExp, Start: 0xe0, Len: 20, Flags: w},
				{ID: pciCapMSIX, Start: 0xa0, Len: 12, Flags: w},
				{ID: pciExtCapErr | PCIExtCapability, Start: 0x100, Len: 4},
				{ID: pciExtCapDSN | PCIExtCapability, Start: 0x140, Len: 4},
				{ID: pciCapMSI, Start: 0x8c, Len: 0x18, Flags: w},
				{ID: pciCapPM, Start: 0x84, Len: 0x8, Flags: w},
				{ID: pciCapExp, Start: 0x48, Len: 0x3c},
				{ID: 0xc, Start: 0x40, Len: 0x02},
				{ID: pciExtCapErr | PCIExtCapability, Start: 0x100, Len: 0x40},
			},
		},
	}
}

// configs/x86/apic-demo.c
func x86APICDemo() *Cell {
	return &Cell{
		Revision: Revision14,
		Arch:     ArchX86,
		Name:     "apic-demo",
		Flags:    CellVirtualConsolePermitted,
		Console:  Console{Address: 0x3f8, Type: Console8250},
		CPUSet:   cpus(3),
		MemoryRegions: []Memory{
			{PhysStart: 0x3ef00000, VirtStart: 0, Size: 0x00100000, Flags: rwx | MemLoadable},
			{VirtStart: 0x00100000, Size: 0x00001000, Flags: MemRead | MemWrite | MemCommRegion},
		},
		CacheRegions: []Cache{{Start: 0, Size: 2, Type: CacheL3}},
		PIORegions:   []PIO{{0x2f8, 8}, {0x3f8, 8}, {0xe010, 8}},
	}
}

// configs/arm/bananapi-inmate-demo.c: a 32-bit arm cell.
func bananapiInmateDemo() *Cell {
	io32 := MemRead | MemWrite | MemIO | MemIO32
	return &Cell{
		Revision: Revision14,
		Arch:     ArchARM,
		Name:     "bananapi-inmate-demo",
		Flags:    CellPassiveCommRegion,
		Console: Console{Address: 0x01c29c00, ClockReg: 0x01c2006c, GateNr: 23, Divider: 0x0d,
			Type: Console8250, Flags: ConsoleAccessMMIO | ConsoleRegDist4},
		CPUSet: cpus(1),
		MemoryRegions: []Memory{
			{PhysStart: 0x01c20000, VirtStart: 0x01c20000, Size: 0x400, Flags: io32},
			{PhysStart: 0x01c208fc, VirtStart: 0x01c208fc, Size: 0x24, Flags: io32},
			{PhysStart: 0x01c29000, VirtStart: 0x01c29000, Size: 0x1000, Flags: MemRead | MemWrite | MemIO},
			{PhysStart: 0x7bfe0000, VirtStart: 0, Size: 0x00010000, Flags: rwx | MemLoadable},
			{VirtStart: 0x80000000, Size: 0x00001000, Flags: MemRead | MemWrite | MemCommRegion},
		},
	}
}

// configs/arm64/k3-j721e-evm-linux-demo.c: an arm64 cell with several
// irqchips and SMMU stream ids.
func k3J721ELinuxDemo() *Cell {
	io := MemRead | MemWrite | MemIO
	shared := MemRead | MemRootShared
	mem := []Memory{
		{PhysStart: 0x89fe00000, VirtStart: 0x89fe00000, Size: 0x10000, Flags: shared},
		{PhysStart: 0x89fe10000, VirtStart: 0x89fe10000, Size: 0x10000, Flags: shared | MemWrite},
		{PhysStart: 0x89fe20000, VirtStart: 0x89fe20000, Size: 0x10000, Flags: shared},
		{PhysStart: 0x89fe30000, VirtStart: 0x89fe30000, Size: 0x10000, Flags: shared | MemWrite},
	}
	mem = append(mem, shmemNetRegions(0x89fe40000, 1)...)
	mem = append(mem,
		Memory{PhysStart: 0x00100000, VirtStart: 0x00100000, Size: 0x00020000, Flags: io | MemRootShared},
		Memory{PhysStart: 0x02810000, VirtStart: 0x02810000, Size: 0x1000, Flags: io},
		Memory{PhysStart: 0x4f80000, VirtStart: 0x4f80000, Size: 0x1000, Flags: io | MemRootShared},
		Memory{PhysStart: 0x4f88000, VirtStart: 0x4f88000, Size: 0x1000, Flags: io | MemRootShared},
		Memory{PhysStart: 0x04114000, VirtStart: 0x04114000, Size: 0x00001000, Flags: io},
		Memory{PhysStart: 0x06400000, VirtStart: 0x06400000, Size: 0x00030000, Flags: io},
		Memory{PhysStart: 0x00610000, VirtStart: 0x00610000, Size: 0x1000, Flags: io},
		Memory{PhysStart: 0x00611000, VirtStart: 0x00611000, Size: 0x1000, Flags: io},
		Memory{PhysStart: 0x3240f000, VirtStart: 0x3240f000, Size: 0x05000, Flags: io},
		Memory{PhysStart: 0x3280f000, VirtStart: 0x3280f000, Size: 0x05000, Flags: io},
		Memory{PhysStart: 0x32c0f000, VirtStart: 0x32c0f000, Size: 0x05000, Flags: io},
		Memory{PhysStart: 0x89ff40000, VirtStart: 0x0, Size: 0x10000, Flags: rwx | MemLoadable},
		Memory{PhysStart: 0x8a0000000, VirtStart: 0x8a0000000, Size: 0x60000000, Flags: rwx | MemDMA | MemLoadable},
		Memory{VirtStart: 0x80000000, Size: 0x00001000, Flags: MemRead | MemWrite | MemCommRegion},
	)
	bar64K := [6]uint32{0xffff0000} // JAILHOUSE_IVSHMEM_BAR_MASK_INTX_64K
	return &Cell{
		Revision:    Revision14,
		Arch:        ArchARM64,
		Name:        "k3-j721e-evm-linux-demo",
		Flags:       CellPassiveCommRegion,
		VPCIIRQBase: 195 - 32,
		Console: Console{Address: 0x2810000, Divider: 0x1b, Type: Console8250,
			Flags: ConsoleAccessMMIO | ConsoleRegDist4},
		CPUSet:        cpus(1),
		MemoryRegions: mem,
		IRQChips: []IRQChip{
			{Address: 0x01800000, PinBase: 32, PinBitmap: [4]uint32{0x00000008, 0x00000080, 0, 0x02004100}},
			{Address: 0x01800000, PinBase: 160, PinBitmap: [4]uint32{0, 0x00000078, 0x00000002, 0}},
			{Address: 0x01800000, PinBase: 416, PinBitmap: [4]uint32{0xffffff00, 0, 0, 0}},
			{Address: 0x01800000, PinBase: 544},
		},
		PCIDevices: []PCIDevice{
			{Type: PCITypeIVSHMEM, Domain: 4, BDF: 0 << 3, BARMask: bar64K,
				ShmemRegionsStart: 0, ShmemDevID: 1, ShmemPeers: 2, ShmemProtocol: ShmemProtoUndefined},
			{Type: PCITypeIVSHMEM, Domain: 4, BDF: 1 << 3, BARMask: bar64K,
				ShmemRegionsStart: 4, ShmemDevID: 1, ShmemPeers: 2, ShmemProtocol: ShmemProtoVETH},
		},
		StreamIDs: []uint32{0x0003, 0xf003},
	}
}
