package jailhouse

import "encoding/binary"

// The wire layout shared by decode.go and encode.go. Offsets are those of
// the packed structs in include/jailhouse/cell-config.h of siemens/jailhouse:
// v0.12 for revision 12, commit 3bbe8ec2 ("cell-config: Rearrange paddings",
// 2020-05-31) for revision 13 and f2320d2e (2023-01-10) for revision 14.

var le = binary.LittleEndian

// Signatures. Revision 14 shortened them to 5 bytes to make room for the
// architecture byte; older revisions use 6 bytes and no architecture.
const (
	sigCell      = "JHCLL"  // revision 14, then u8 architecture
	sigSystem    = "JHSYS"  // revision 14, then u8 architecture
	sigCellOld   = "JHCELL" // revisions 12 and 13
	sigSystemOld = "JHSYST" // revisions 12 and 13
)

// Offsets inside struct jailhouse_cell_desc (all revisions).
const (
	descName            = 8
	nameSize            = 32 // JAILHOUSE_CELL_NAME_MAXLEN + 1
	descID              = 40
	descFlags           = 44
	descCPUSetSize      = 48
	descNumMemory       = 52
	descNumCache        = 56
	descNumIRQChips     = 60
	descNumPIO          = 64
	descNumPCIDevices   = 68
	descNumPCICaps      = 72
	descNumStreamIDs    = 76
	descVPCIIRQBase     = 80
	descCPUResetAddress = 84
	descMsgReplyTimeout = 92
	descConsole         = 100
)

// Offsets inside struct jailhouse_system before platform_info's arch union.
const (
	sysFlags             = 8
	sysHypervisorMemory  = 12
	sysDebugConsole      = 44
	sysPCIMMConfigBase   = 76
	sysPCIMMConfigEndBus = 84
	sysPCIIsVirtual      = 85
	sysPCIDomain         = 86
)

// span is a run of bytes that must be zero on the wire.
type span struct {
	off, n int
	field  string
}

// armLayout places the arm member of platform_info; iommu is where the
// iommu_units array starts (common in revision 13+, inside the member in 12).
type armLayout struct {
	mnt, ver, gicd, gicc, gich, gicv, gicr int
	iommu                                  int
	iommuField                             string
	reserved                               []span
}

// x86Layout places the x86 member of platform_info.
type x86Layout struct {
	pm, apicMode, vtd, tsc, apic int
	iommu                        int
	iommuField                   string
	reserved                     []span
}

var (
	armRev13 = armLayout{
		mnt: 312, ver: 313, gicd: 316, gicc: 324, gich: 332, gicv: 340, gicr: 348,
		iommu: 88, iommuField: "platform_info.iommu_units",
		reserved: []span{{314, 2, "platform_info.arm.padding"}},
	}
	x86Rev13 = x86Layout{
		pm: 312, apicMode: 314, vtd: 316, tsc: 320, apic: 324,
		iommu: 88, iommuField: "platform_info.iommu_units",
		reserved: []span{
			{315, 1, "platform_info.x86.padding"},
			{328, 28, "platform_info (x86: unused tail of the arch union)"},
		},
	}
	// Revision 12: the union starts at 88 and is 266 bytes long (the arm
	// member: 2 + 5×8 + 8×28); the x86 member is 242 bytes.
	armRev12 = armLayout{
		mnt: 88, ver: 89, gicd: 90, gicc: 98, gich: 106, gicv: 114, gicr: 122,
		iommu: 130, iommuField: "platform_info.arm.iommu_units",
	}
	x86Rev12 = x86Layout{
		pm: 88, vtd: 90, apicMode: 94, tsc: 98, apic: 102,
		iommu: 106, iommuField: "platform_info.x86.iommu_units",
		reserved: []span{
			{95, 3, "platform_info.x86.padding"},
			{330, 24, "platform_info (x86: unused tail of the arch union)"},
		},
	}
)

func armLayoutFor(rev Revision) *armLayout {
	if rev == Revision12 {
		return &armRev12
	}
	return &armRev13
}

func x86LayoutFor(rev Revision) *x86Layout {
	if rev == Revision12 {
		return &x86Rev12
	}
	return &x86Rev13
}

// isARMFamily reports whether the platform_info union of a system of this
// architecture holds the arm member. ArchUnknown only occurs for revisions
// 12 and 13, where the decoder found the arm member (arm and arm64 share it
// and the file does not say which).
func isARMFamily(a Arch) bool { return a != ArchX86 }
