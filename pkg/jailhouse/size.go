package jailhouse

// Wire sizes of the packed structs of include/jailhouse/cell-config.h
// (siemens/jailhouse), identical in revisions 12, 13 and 14 unless noted.
const (
	cellDescSize      = 132 // struct jailhouse_cell_desc
	memorySize        = 32  // struct jailhouse_memory
	cacheSize         = 12  // struct jailhouse_cache
	irqchipSize       = 32  // struct jailhouse_irqchip
	pioSize           = 4   // struct jailhouse_pio
	pciDeviceSize     = 56  // struct jailhouse_pci_device
	pciCapabilitySize = 8   // struct jailhouse_pci_capability
	streamIDSize      = 4   // union jailhouse_stream_id
	consoleSize       = 32  // struct jailhouse_console
	iommuSize         = 28  // struct jailhouse_iommu

	// systemSize is sizeof(struct jailhouse_system) in revisions 13 and
	// 14, root cell_desc included; the root cell_desc starts at 356.
	systemSize = 488
	// systemSizeRev12 is the same for revision 12, whose platform_info
	// union carries the iommu units inside each arch member (266 bytes,
	// the arm member being the larger), putting the root cell at 354.
	systemSizeRev12 = 486
)

// MaxConfigSize is the largest configuration the hypervisor copies: 16
// pages. The driver fails larger ones with E2BIG (the page offset of the
// caller's buffer counts too, so stay below it).
const MaxConfigSize = 16 * 4096

// Layout gives the byte offset of each part of an encoded cell
// configuration. For a root cell embedded in a system configuration the
// offsets are relative to the start of the cell_desc (add RootCellOffset).
type Layout struct {
	CPUSet        int
	MemoryRegions int
	CacheRegions  int
	IRQChips      int
	PIORegions    int
	PCIDevices    int
	PCICaps       int
	StreamIDs     int
	End           int // = the cell's configuration size
}

// LayoutOf computes where each trailing array of c starts once encoded.
func LayoutOf(c *Cell) Layout {
	var l Layout
	l.CPUSet = cellDescSize
	l.MemoryRegions = l.CPUSet + len(c.CPUSet)
	l.CacheRegions = l.MemoryRegions + memorySize*len(c.MemoryRegions)
	l.IRQChips = l.CacheRegions + cacheSize*len(c.CacheRegions)
	l.PIORegions = l.IRQChips + irqchipSize*len(c.IRQChips)
	l.PCIDevices = l.PIORegions + pioSize*len(c.PIORegions)
	l.PCICaps = l.PCIDevices + pciDeviceSize*len(c.PCIDevices)
	l.StreamIDs = l.PCICaps + pciCapabilitySize*len(c.PCICaps)
	l.End = l.StreamIDs + streamIDSize*len(c.StreamIDs)
	return l
}

// CellConfigSize is jailhouse_cell_config_size(): the encoded size of c.
func CellConfigSize(c *Cell) int { return LayoutOf(c).End }

// RootCellOffset is where the root cell_desc starts inside a system
// configuration of revision rev (0 meaning the default, 14).
func RootCellOffset(rev Revision) int {
	if rev == Revision12 {
		return systemSizeRev12 - cellDescSize
	}
	return systemSize - cellDescSize
}

// SystemConfigSize is jailhouse_system_config_size(): the encoded size of s,
// root cell arrays included.
func SystemConfigSize(s *System) int {
	return RootCellOffset(s.Revision) + CellConfigSize(&s.RootCell)
}
