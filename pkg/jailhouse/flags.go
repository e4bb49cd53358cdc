package jailhouse

import (
	"fmt"
	"strconv"
	"strings"
)

// ArchUnknown is the Arch of a configuration of revision 12 or 13 whose
// architecture the file does not record: every such cell, and a system
// whose platform_info holds the arm member (shared by arm and arm64). It is
// never written: revision 14 requires a real architecture.
const ArchUnknown Arch = 0xff

var archNames = map[Arch]string{
	ArchX86:     "x86",
	ArchARM:     "arm",
	ArchARM64:   "arm64",
	ArchUnknown: "unknown",
}

func (a Arch) String() string {
	if s, ok := archNames[a]; ok {
		return s
	}
	return "Arch(" + strconv.Itoa(int(a)) + ")"
}

// ParseArch accepts the names String returns ("x86", "arm", "arm64"), plus
// "x86_64"/"amd64" and "aarch64" as the kernel and Go spell them.
func ParseArch(s string) (Arch, error) {
	switch strings.ToLower(s) {
	case "x86", "x86_64", "amd64":
		return ArchX86, nil
	case "arm":
		return ArchARM, nil
	case "arm64", "aarch64":
		return ArchARM64, nil
	}
	return ArchUnknown, fmt.Errorf("unknown jailhouse architecture %q (want x86, arm or arm64)", s)
}

func (r Revision) String() string { return strconv.Itoa(int(r)) }

// flagName is one bit (or a multi-bit value under mask) of a flag set.
type flagName struct {
	value uint64
	name  string
}

// formatFlags prints a flag set as "A|B|0x100": known names in table order,
// then any remaining bits in hex, or "0" for none.
func formatFlags(v uint64, names []flagName) string {
	if v == 0 {
		return "0"
	}
	var parts []string
	for _, f := range names {
		if f.value != 0 && v&f.value == f.value {
			parts = append(parts, f.name)
			v &^= f.value
		}
	}
	if v != 0 {
		parts = append(parts, "0x"+strconv.FormatUint(v, 16))
	}
	return strings.Join(parts, "|")
}

// Names without the JAILHOUSE_CELL_ / _MEM_ / _SYS_ prefixes, as
// `runphi config inspect` prints them.
var cellFlagNames = []flagName{
	{uint64(CellPassiveCommRegion), "PASSIVE_COMMREG"},
	{uint64(CellTestDevice), "TEST_DEVICE"},
	{uint64(CellAArch32), "AARCH32"},
	{uint64(CellVirtualConsolePermitted), "VIRTUAL_CONSOLE_PERMITTED"},
	{uint64(CellVirtualConsoleActive), "VIRTUAL_CONSOLE_ACTIVE"},
}

func (f CellFlags) String() string { return formatFlags(uint64(f), cellFlagNames) }

var memFlagNames = []flagName{
	{uint64(MemRead), "READ"},
	{uint64(MemWrite), "WRITE"},
	{uint64(MemExecute), "EXECUTE"},
	{uint64(MemDMA), "DMA"},
	{uint64(MemIO), "IO"},
	{uint64(MemCommRegion), "COMM_REGION"},
	{uint64(MemLoadable), "LOADABLE"},
	{uint64(MemRootShared), "ROOTSHARED"},
	{uint64(MemNoHugepages), "NO_HUGEPAGES"},
	{uint64(MemIOUnaligned), "IO_UNALIGNED"},
	{uint64(MemIO8), "IO_8"},
	{uint64(MemIO16), "IO_16"},
	{uint64(MemIO32), "IO_32"},
	{uint64(MemIO64), "IO_64"},
}

func (f MemFlags) String() string { return formatFlags(uint64(f), memFlagNames) }

var systemFlagNames = []flagName{
	{uint64(SysVirtualDebugConsole), "VIRTUAL_DEBUG_CONSOLE"},
}

func (f SystemFlags) String() string { return formatFlags(uint64(f), systemFlagNames) }

// enumName looks v up in names, falling back to its number.
func enumName[T ~uint8 | ~uint16 | ~uint32](v T, names map[T]string) string {
	if s, ok := names[v]; ok {
		return s
	}
	return strconv.FormatUint(uint64(v), 10)
}

var consoleTypeNames = map[uint16]string{
	ConsoleNone:      "NONE",
	ConsoleEFIFB:     "EFIFB",
	Console8250:      "8250",
	ConsolePL011:     "PL011",
	ConsoleXUARTPS:   "XUARTPS",
	ConsoleMVEBU:     "MVEBU",
	ConsoleHSCIF:     "HSCIF",
	ConsoleSCIFA:     "SCIFA",
	ConsoleIMX:       "IMX",
	ConsoleIMXLPUART: "IMX_LPUART",
	ConsoleSCIF:      "SCIF",
}

// ConsoleTypeName names a JAILHOUSE_CON_TYPE_* value ("PL011"), or gives
// its number.
func ConsoleTypeName(t uint16) string { return enumName(t, consoleTypeNames) }

var consoleFlagNames = []flagName{
	{uint64(ConsoleAccessMMIO), "ACCESS_MMIO"},
	{uint64(ConsoleRegDist4), "REGDIST_4"},
	{uint64(ConsoleFB1920x1080), "FB_1920x1080"},
	{uint64(ConsoleInvertedGate), "INVERTED_GATE"},
	{uint64(ConsoleMDRQuirk), "MDR_QUIRK"},
}

// ConsoleFlagsString prints console flags. The zero values of the
// two-way bits (ACCESS_PIO, REGDIST_1, FB_1024x768) are left implicit.
func ConsoleFlagsString(f uint16) string { return formatFlags(uint64(f), consoleFlagNames) }

var iommuTypeNames = map[uint32]string{
	IOMMUUnused:    "UNUSED",
	IOMMUAMD:       "AMD",
	IOMMUIntel:     "INTEL",
	IOMMUSMMUv3:    "SMMUV3",
	IOMMUPVU:       "PVU",
	IOMMUARMMMU500: "ARM_MMU500",
}

// IOMMUTypeName names a JAILHOUSE_IOMMU_* value, or gives its number.
func IOMMUTypeName(t uint32) string { return enumName(t, iommuTypeNames) }

var pciTypeNames = map[uint8]string{
	PCITypeDevice:  "DEVICE",
	PCITypeBridge:  "BRIDGE",
	PCITypeIVSHMEM: "IVSHMEM",
}

// PCITypeName names a JAILHOUSE_PCI_TYPE_* value, or gives its number.
func PCITypeName(t uint8) string { return enumName(t, pciTypeNames) }

// APIC modes of X86Platform.APICMode (JAILHOUSE_APIC_MODE_*).
const (
	APICModeAuto   uint8 = 0
	APICModeXAPIC  uint8 = 1
	APICModeX2APIC uint8 = 2
)

// Cache types and flags of Cache (JAILHOUSE_CACHE_*).
const (
	CacheL3Code     uint8  = 0x01
	CacheL3Data     uint8  = 0x02
	CacheL3         uint8  = CacheL3Code | CacheL3Data
	CacheRootShared uint16 = 0x0001
)

// PCI capability flags and ID bits (JAILHOUSE_PCICAPS_WRITE, JAILHOUSE_PCI_EXT_CAP).
const (
	PCICapWrite      uint16 = 0x0001
	PCIExtCapability uint16 = 0x8000 // or'ed into PCICapability.ID for extended capabilities
)

// ivshmem protocols of PCIDevice.ShmemProtocol (JAILHOUSE_SHMEM_PROTO_*).
const (
	ShmemProtoUndefined   uint16 = 0x0000
	ShmemProtoVETH        uint16 = 0x0001
	ShmemProtoCustom      uint16 = 0x4000 // 0x4000..0x7fff
	ShmemProtoVirtioFront uint16 = 0x8000 // + virtio device id
	ShmemProtoVirtioBack  uint16 = 0xc000 // + virtio device id
)

var apicModeNames = map[uint8]string{
	APICModeAuto:   "AUTO",
	APICModeXAPIC:  "XAPIC",
	APICModeX2APIC: "X2APIC",
}

// APICModeName names a JAILHOUSE_APIC_MODE_* value, or gives its number.
func APICModeName(m uint8) string { return enumName(m, apicModeNames) }

var cacheTypeNames = map[uint8]string{
	CacheL3Code: "L3_CODE",
	CacheL3Data: "L3_DATA",
	CacheL3:     "L3",
}

// CacheTypeName names a JAILHOUSE_CACHE_L3* type, or gives its number.
func CacheTypeName(t uint8) string { return enumName(t, cacheTypeNames) }

var cacheFlagNames = []flagName{{uint64(CacheRootShared), "ROOTSHARED"}}

// CacheFlagsString prints the flags of a cache region.
func CacheFlagsString(f uint16) string { return formatFlags(uint64(f), cacheFlagNames) }

var pciCapFlagNames = []flagName{{uint64(PCICapWrite), "WRITE"}}

// PCICapFlagsString prints the flags of a PCI capability.
func PCICapFlagsString(f uint16) string { return formatFlags(uint64(f), pciCapFlagNames) }

// Virtio device ids that ivshmem virtio protocols add to
// ShmemProtoVirtioFront/Back (VIRTIO_DEV_*).
var virtioDeviceNames = map[uint16]string{1: "NET", 2: "BLOCK", 3: "CONSOLE"}

// ShmemProtocolName describes an ivshmem protocol: "UNDEFINED", "VETH",
// "CUSTOM+0x2", "VIRTIO_FRONT+NET", "VIRTIO_BACK+7".
func ShmemProtocolName(p uint16) string {
	withDevice := func(base string, dev uint16) string {
		if s, ok := virtioDeviceNames[dev]; ok {
			return base + "+" + s
		}
		return base + "+" + strconv.Itoa(int(dev))
	}
	switch {
	case p == ShmemProtoUndefined:
		return "UNDEFINED"
	case p == ShmemProtoVETH:
		return "VETH"
	case p >= ShmemProtoVirtioBack:
		return withDevice("VIRTIO_BACK", p-ShmemProtoVirtioBack)
	case p >= ShmemProtoVirtioFront:
		return withDevice("VIRTIO_FRONT", p-ShmemProtoVirtioFront)
	case p >= ShmemProtoCustom:
		return "CUSTOM+0x" + strconv.FormatUint(uint64(p-ShmemProtoCustom), 16)
	}
	return "0x" + strconv.FormatUint(uint64(p), 16) // reserved
}
