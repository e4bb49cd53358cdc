package jailhouse

// The semantic types of a Jailhouse configuration. They mirror the C structs
// of include/jailhouse/cell-config.h (siemens/jailhouse, config revision 14),
// field for field; the wire layout lives only in encode.go and decode.go.

// Arch is the architecture byte of a revision-14 configuration.
type Arch uint8

// Architectures, as in JAILHOUSE_X86/ARM/ARM64.
const (
	ArchX86   Arch = 0
	ArchARM   Arch = 1
	ArchARM64 Arch = 2
)

// Revision is JAILHOUSE_CONFIG_REVISION.
type Revision uint16

// The configuration revisions this package reads and writes.
const (
	Revision12 Revision = 12
	Revision13 Revision = 13
	Revision14 Revision = 14
)

// Cell is struct jailhouse_cell_desc with its trailing arrays.
type Cell struct {
	// Revision and Arch select the wire format. In a root cell embedded in a
	// System they are taken from the System.
	Revision Revision
	Arch     Arch

	Name            string // at most 31 bytes
	ID              uint32 // set by the driver; 0 in files
	Flags           CellFlags
	VPCIIRQBase     uint32
	CPUResetAddress uint64
	MsgReplyTimeout uint64
	Console         Console

	// CPUSet is the raw cpu bitmap, cpu_set_size bytes long: bit n of byte n/8 is CPU n.
	CPUSet        []byte
	MemoryRegions []Memory
	CacheRegions  []Cache
	IRQChips      []IRQChip
	PIORegions    []PIO
	PCIDevices    []PCIDevice
	PCICaps       []PCICapability
	StreamIDs     []uint32
}

// CellFlags are the JAILHOUSE_CELL_* flags.
type CellFlags uint32

// Cell flags.
const (
	CellPassiveCommRegion       CellFlags = 0x1
	CellTestDevice              CellFlags = 0x2
	CellAArch32                 CellFlags = 0x4
	CellVirtualConsolePermitted CellFlags = 0x40000000
	CellVirtualConsoleActive    CellFlags = 0x80000000
)

// Memory is struct jailhouse_memory.
type Memory struct {
	PhysStart uint64
	VirtStart uint64
	Size      uint64
	Flags     MemFlags
}

// MemFlags are the JAILHOUSE_MEM_* flags.
type MemFlags uint64

// Memory region flags.
const (
	MemRead        MemFlags = 0x0001
	MemWrite       MemFlags = 0x0002
	MemExecute     MemFlags = 0x0004
	MemDMA         MemFlags = 0x0008
	MemIO          MemFlags = 0x0010
	MemCommRegion  MemFlags = 0x0020
	MemLoadable    MemFlags = 0x0040
	MemRootShared  MemFlags = 0x0080
	MemNoHugepages MemFlags = 0x0100
	MemIOUnaligned MemFlags = 0x8000
	MemIO8         MemFlags = 0x10000
	MemIO16        MemFlags = 0x20000
	MemIO32        MemFlags = 0x40000
	MemIO64        MemFlags = 0x80000
)

// Cache is struct jailhouse_cache (x86 CAT).
type Cache struct {
	Start uint32
	Size  uint32
	Type  uint8
	Flags uint16
}

// IRQChip is struct jailhouse_irqchip.
type IRQChip struct {
	Address   uint64
	ID        uint32
	PinBase   uint32
	PinBitmap [4]uint32
}

// PIO is struct jailhouse_pio (x86 port range).
type PIO struct {
	Base   uint16
	Length uint16
}

// PCIDevice is struct jailhouse_pci_device.
type PCIDevice struct {
	Type              uint8 // PCIDevice*, PCIBridge, PCIIVSHMEM
	IOMMU             uint8
	Domain            uint16
	BDF               uint16
	BARMask           [6]uint32
	CapsStart         uint16
	NumCaps           uint16
	NumMSIVectors     uint8
	MSI64Bits         bool
	MSIMaskable       bool
	NumMSIXVectors    uint16
	MSIXRegionSize    uint16
	MSIXAddress       uint64
	ShmemRegionsStart uint32
	ShmemDevID        uint8
	ShmemPeers        uint8
	ShmemProtocol     uint16
}

// PCI device types.
const (
	PCITypeDevice  uint8 = 1
	PCITypeBridge  uint8 = 2
	PCITypeIVSHMEM uint8 = 3
)

// PCICapability is struct jailhouse_pci_capability.
type PCICapability struct {
	ID    uint16
	Start uint16
	Len   uint16
	Flags uint16
}

// Console is struct jailhouse_console.
type Console struct {
	Address  uint64
	Size     uint32
	Type     uint16
	Flags    uint16
	Divider  uint32
	GateNr   uint32
	ClockReg uint64
}

// Console types.
const (
	ConsoleNone      uint16 = 0
	ConsoleEFIFB     uint16 = 1
	Console8250      uint16 = 2
	ConsolePL011     uint16 = 3
	ConsoleXUARTPS   uint16 = 4
	ConsoleMVEBU     uint16 = 5
	ConsoleHSCIF     uint16 = 6
	ConsoleSCIFA     uint16 = 7
	ConsoleIMX       uint16 = 8
	ConsoleIMXLPUART uint16 = 9
	ConsoleSCIF      uint16 = 0xa
)

// Console flags.
const (
	ConsoleAccessMMIO   uint16 = 0x0001
	ConsoleRegDist4     uint16 = 0x0002
	ConsoleFB1920x1080  uint16 = 0x0004
	ConsoleInvertedGate uint16 = 0x1000
	ConsoleMDRQuirk     uint16 = 0x2000
)

// System is struct jailhouse_system: the configuration passed to ENABLE.
type System struct {
	Revision         Revision
	Arch             Arch
	Flags            SystemFlags
	HypervisorMemory Memory
	DebugConsole     Console
	Platform         Platform
	RootCell         Cell
}

// SystemFlags are the JAILHOUSE_SYS_* flags.
type SystemFlags uint32

// SysVirtualDebugConsole makes the hypervisor keep its console ring readable
// through /dev/jailhouse.
const SysVirtualDebugConsole SystemFlags = 0x1

// Platform is struct jailhouse_system.platform_info.
type Platform struct {
	PCIMMConfigBase   uint64
	PCIMMConfigEndBus uint8
	PCIIsVirtual      uint8
	PCIDomain         uint16
	IOMMUUnits        [8]IOMMU
	ARM               ARMPlatform // used when Arch is ArchARM or ArchARM64
	X86               X86Platform // used when Arch is ArchX86
}

// IOMMU is struct jailhouse_iommu.
type IOMMU struct {
	Type uint32
	Base uint64
	Size uint32
	// The 12-byte union: AMD {bdf u16, base_cap u8, msi_cap u8, features u32}
	// or TI PVU {tlb_base u64, tlb_size u32}.
	AMDBDF      uint16
	AMDBaseCap  uint8
	AMDMSICap   uint8
	AMDFeatures uint32
	PVUTLBBase  uint64
	PVUTLBSize  uint32
}

// IOMMU types.
const (
	IOMMUUnused    uint32 = 0
	IOMMUAMD       uint32 = 1
	IOMMUIntel     uint32 = 2
	IOMMUSMMUv3    uint32 = 3
	IOMMUPVU       uint32 = 4
	IOMMUARMMMU500 uint32 = 5
)

// ARMPlatform is the arm/arm64 member of the platform_info union.
type ARMPlatform struct {
	MaintenanceIRQ uint8
	GICVersion     uint8
	GICDBase       uint64
	GICCBase       uint64
	GICHBase       uint64
	GICVBase       uint64
	GICRBase       uint64
}

// X86Platform is the x86 member of the platform_info union.
type X86Platform struct {
	PMTimerAddress    uint16
	APICMode          uint8
	VTDInterruptLimit uint32
	TSCkHz            uint32
	APICkHz           uint32
}
