package jailhouse

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// MarshalBinary encodes c as a cell configuration (.cell file) of
// c.Revision, 14 when zero. It implements encoding.BinaryMarshaler.
//
// For revision 14 c.Arch is written into the header; revisions 12 and 13
// have no architecture byte and ignore it. Errors are *FormatError values
// naming the field and the offset it would have been written at.
func (c *Cell) MarshalBinary() ([]byte, error) {
	return c.AppendBinary(make([]byte, 0, CellConfigSize(c)))
}

// AppendBinary appends the encoding of c to b (encoding.BinaryAppender).
// On error b is returned unchanged.
func (c *Cell) AppendBinary(b []byte) ([]byte, error) {
	rev, err := encodeRevision(c.Revision)
	if err != nil {
		return b, err
	}
	if rev == Revision14 && c.Arch > ArchARM64 {
		return b, &FormatError{Offset: 5, Field: "architecture", Revision: rev, Err: ErrArchitecture,
			Detail: fmt.Sprintf("Arch is %v; revision 14 needs x86, arm or arm64", c.Arch)}
	}
	if err := validateCell(c, rev, 0, ""); err != nil {
		return b, err
	}
	start := len(b)
	b = slices.Grow(b, CellConfigSize(c))
	b = b[:start+CellConfigSize(c)]
	w := b[start:]
	clear(w)
	putSignature(w, rev, sigCell, sigCellOld, c.Arch)
	putDesc(w, c)
	putArrays(w[cellDescSize:], c)
	return b, nil
}

// MarshalBinary encodes s as a system configuration of s.Revision, 14 when
// zero. The root cell's Revision and Arch are ignored: the embedded
// cell_desc carries neither, and s's are used.
//
// For revisions 12 and 13 Arch selects the platform_info layout: ArchX86
// the x86 member, anything else (ArchUnknown included) the arm member. The
// member the architecture does not use must be zero.
func (s *System) MarshalBinary() ([]byte, error) {
	return s.AppendBinary(make([]byte, 0, SystemConfigSize(s)))
}

// AppendBinary appends the encoding of s to b (encoding.BinaryAppender).
// On error b is returned unchanged.
func (s *System) AppendBinary(b []byte) ([]byte, error) {
	rev, err := encodeRevision(s.Revision)
	if err != nil {
		return b, err
	}
	if s.Arch > ArchARM64 && (rev == Revision14 || s.Arch != ArchUnknown) {
		return b, &FormatError{Offset: 5, Field: "architecture", Revision: rev, Err: ErrArchitecture,
			Detail: fmt.Sprintf("Arch is %v; revision 14 needs x86, arm or arm64", s.Arch)}
	}
	if err := validatePlatform(&s.Platform, s.Arch, rev); err != nil {
		return b, err
	}
	root := RootCellOffset(rev)
	if err := validateCell(&s.RootCell, rev, root, "root_cell."); err != nil {
		return b, err
	}
	size := SystemConfigSize(s)
	start := len(b)
	b = slices.Grow(b, size)
	b = b[:start+size]
	w := b[start:]
	clear(w)
	putSignature(w, rev, sigSystem, sigSystemOld, s.Arch)
	le.PutUint32(w[sysFlags:], uint32(s.Flags))
	putMemory(w[sysHypervisorMemory:], &s.HypervisorMemory)
	putConsole(w[sysDebugConsole:], &s.DebugConsole)
	putPlatform(w, &s.Platform, s.Arch, rev)
	// The root cell_desc's signature, architecture and revision stay zero.
	putDesc(w[root:], &s.RootCell)
	putArrays(w[root+cellDescSize:], &s.RootCell)
	return b, nil
}

func encodeRevision(rev Revision) (Revision, error) {
	switch rev {
	case 0:
		return Revision14, nil
	case Revision12, Revision13, Revision14:
		return rev, nil
	}
	return 0, &FormatError{Offset: 6, Field: "revision", Err: ErrUnsupportedRevision,
		Detail: fmt.Sprintf("Revision is %d; this package writes 12, 13 and 14", rev)}
}

// validateCell checks what the wire format cannot represent, before
// anything is written. base and prefix place the cell_desc in its file.
func validateCell(c *Cell, rev Revision, base int, prefix string) error {
	fail := func(off int, field string, sentinel error, detail string) error {
		return &FormatError{Offset: base + off, Field: prefix + field, Revision: rev, Err: sentinel, Detail: detail}
	}
	if len(c.Name) >= nameSize {
		return fail(descName, "name", ErrNameTooLong, fmt.Sprintf("%q is %d bytes", c.Name, len(c.Name)))
	}
	if i := strings.IndexByte(c.Name, 0); i >= 0 {
		return fail(descName+i, "name", ErrBadName, fmt.Sprintf("%q has a NUL at byte %d", c.Name, i))
	}
	if len(c.CPUSet)%8 != 0 {
		return fail(descCPUSetSize, "cpu_set_size", ErrBadCount,
			fmt.Sprintf("CPUSet is %d bytes; the hypervisor reads it as 64-bit words, so use a multiple of 8", len(c.CPUSet)))
	}
	counts := []struct {
		off   int
		field string
		n     int
	}{
		{descCPUSetSize, "cpu_set_size", len(c.CPUSet)},
		{descNumMemory, "num_memory_regions", len(c.MemoryRegions)},
		{descNumCache, "num_cache_regions", len(c.CacheRegions)},
		{descNumIRQChips, "num_irqchips", len(c.IRQChips)},
		{descNumPIO, "num_pio_regions", len(c.PIORegions)},
		{descNumPCIDevices, "num_pci_devices", len(c.PCIDevices)},
		{descNumPCICaps, "num_pci_caps", len(c.PCICaps)},
		{descNumStreamIDs, "num_stream_ids", len(c.StreamIDs)},
	}
	for _, n := range counts {
		if uint64(n.n) > math.MaxUint32 {
			return fail(n.off, n.field, ErrBadCount, fmt.Sprintf("%d does not fit in 32 bits", n.n))
		}
	}
	return nil
}

// validatePlatform rejects Go fields that the chosen layout would drop.
func validatePlatform(p *Platform, arch Arch, rev Revision) error {
	fail := func(off int, field string, detail string) error {
		return &FormatError{Offset: off, Field: field, Revision: rev, Err: ErrUnusedField, Detail: detail}
	}
	if isARMFamily(arch) {
		if p.X86 != (X86Platform{}) {
			l := armLayoutFor(rev)
			return fail(l.mnt, "platform_info.x86", fmt.Sprintf("set on a %v system, whose union holds the arm member", arch))
		}
	} else if p.ARM != (ARMPlatform{}) {
		l := x86LayoutFor(rev)
		return fail(l.pm, "platform_info.arm", "set on an x86 system, whose union holds the x86 member")
	}
	iommu, field := x86LayoutFor(rev).iommu, x86LayoutFor(rev).iommuField
	if isARMFamily(arch) {
		iommu, field = armLayoutFor(rev).iommu, armLayoutFor(rev).iommuField
	}
	for i, u := range p.IOMMUUnits {
		off := iommu + i*iommuSize + 16
		if u.Type == IOMMUPVU {
			if u.AMDBDF != 0 || u.AMDBaseCap != 0 || u.AMDMSICap != 0 || u.AMDFeatures != 0 {
				return fail(off, fmt.Sprintf("%s[%d].amd", field, i), "AMD fields set on a PVU unit (the union holds tipvu)")
			}
		} else if u.PVUTLBBase != 0 || u.PVUTLBSize != 0 {
			return fail(off, fmt.Sprintf("%s[%d].tipvu", field, i), fmt.Sprintf("PVU fields set on a unit of type %d", u.Type))
		}
	}
	return nil
}

func putSignature(w []byte, rev Revision, sig, sigOld string, arch Arch) {
	if rev == Revision14 {
		copy(w, sig)
		w[5] = byte(arch)
	} else {
		copy(w, sigOld)
	}
	le.PutUint16(w[6:], uint16(rev))
}

// putDesc writes the cell_desc from the name on; w is zeroed.
func putDesc(w []byte, c *Cell) {
	copy(w[descName:descName+nameSize-1], c.Name)
	le.PutUint32(w[descID:], c.ID)
	le.PutUint32(w[descFlags:], uint32(c.Flags))
	le.PutUint32(w[descCPUSetSize:], uint32(len(c.CPUSet)))
	le.PutUint32(w[descNumMemory:], uint32(len(c.MemoryRegions)))
	le.PutUint32(w[descNumCache:], uint32(len(c.CacheRegions)))
	le.PutUint32(w[descNumIRQChips:], uint32(len(c.IRQChips)))
	le.PutUint32(w[descNumPIO:], uint32(len(c.PIORegions)))
	le.PutUint32(w[descNumPCIDevices:], uint32(len(c.PCIDevices)))
	le.PutUint32(w[descNumPCICaps:], uint32(len(c.PCICaps)))
	le.PutUint32(w[descNumStreamIDs:], uint32(len(c.StreamIDs)))
	le.PutUint32(w[descVPCIIRQBase:], c.VPCIIRQBase)
	le.PutUint64(w[descCPUResetAddress:], c.CPUResetAddress)
	le.PutUint64(w[descMsgReplyTimeout:], c.MsgReplyTimeout)
	putConsole(w[descConsole:], &c.Console)
}

// putArrays writes the trailing arrays, in wire order, from w[0]; w is
// zeroed and exactly long enough.
func putArrays(w []byte, c *Cell) {
	off := copy(w, c.CPUSet)
	for i := range c.MemoryRegions {
		putMemory(w[off:], &c.MemoryRegions[i])
		off += memorySize
	}
	for _, r := range c.CacheRegions {
		le.PutUint32(w[off:], r.Start)
		le.PutUint32(w[off+4:], r.Size)
		w[off+8] = r.Type
		le.PutUint16(w[off+10:], r.Flags)
		off += cacheSize
	}
	for _, ic := range c.IRQChips {
		le.PutUint64(w[off:], ic.Address)
		le.PutUint32(w[off+8:], ic.ID)
		le.PutUint32(w[off+12:], ic.PinBase)
		for j, m := range ic.PinBitmap {
			le.PutUint32(w[off+16+4*j:], m)
		}
		off += irqchipSize
	}
	for _, p := range c.PIORegions {
		le.PutUint16(w[off:], p.Base)
		le.PutUint16(w[off+2:], p.Length)
		off += pioSize
	}
	for i := range c.PCIDevices {
		p := &c.PCIDevices[i]
		w[off] = p.Type
		w[off+1] = p.IOMMU
		le.PutUint16(w[off+2:], p.Domain)
		le.PutUint16(w[off+4:], p.BDF)
		for j, m := range p.BARMask {
			le.PutUint32(w[off+6+4*j:], m)
		}
		le.PutUint16(w[off+30:], p.CapsStart)
		le.PutUint16(w[off+32:], p.NumCaps)
		w[off+34] = p.NumMSIVectors
		if p.MSI64Bits {
			w[off+35] |= 0x1
		}
		if p.MSIMaskable {
			w[off+35] |= 0x2
		}
		le.PutUint16(w[off+36:], p.NumMSIXVectors)
		le.PutUint16(w[off+38:], p.MSIXRegionSize)
		le.PutUint64(w[off+40:], p.MSIXAddress)
		le.PutUint32(w[off+48:], p.ShmemRegionsStart)
		w[off+52] = p.ShmemDevID
		w[off+53] = p.ShmemPeers
		le.PutUint16(w[off+54:], p.ShmemProtocol)
		off += pciDeviceSize
	}
	for _, pc := range c.PCICaps {
		le.PutUint16(w[off:], pc.ID)
		le.PutUint16(w[off+2:], pc.Start)
		le.PutUint16(w[off+4:], pc.Len)
		le.PutUint16(w[off+6:], pc.Flags)
		off += pciCapabilitySize
	}
	for _, id := range c.StreamIDs {
		le.PutUint32(w[off:], id)
		off += streamIDSize
	}
}

func putMemory(w []byte, m *Memory) {
	le.PutUint64(w, m.PhysStart)
	le.PutUint64(w[8:], m.VirtStart)
	le.PutUint64(w[16:], m.Size)
	le.PutUint64(w[24:], uint64(m.Flags))
}

func putConsole(w []byte, c *Console) {
	le.PutUint64(w, c.Address)
	le.PutUint32(w[8:], c.Size)
	le.PutUint16(w[12:], c.Type)
	le.PutUint16(w[14:], c.Flags)
	le.PutUint32(w[16:], c.Divider)
	le.PutUint32(w[20:], c.GateNr)
	le.PutUint64(w[24:], c.ClockReg)
}

// putPlatform writes platform_info into the zeroed system header w.
func putPlatform(w []byte, p *Platform, arch Arch, rev Revision) {
	le.PutUint64(w[sysPCIMMConfigBase:], p.PCIMMConfigBase)
	w[sysPCIMMConfigEndBus] = p.PCIMMConfigEndBus
	w[sysPCIIsVirtual] = p.PCIIsVirtual
	le.PutUint16(w[sysPCIDomain:], p.PCIDomain)
	var iommu int
	if isARMFamily(arch) {
		l := armLayoutFor(rev)
		w[l.mnt] = p.ARM.MaintenanceIRQ
		w[l.ver] = p.ARM.GICVersion
		le.PutUint64(w[l.gicd:], p.ARM.GICDBase)
		le.PutUint64(w[l.gicc:], p.ARM.GICCBase)
		le.PutUint64(w[l.gich:], p.ARM.GICHBase)
		le.PutUint64(w[l.gicv:], p.ARM.GICVBase)
		le.PutUint64(w[l.gicr:], p.ARM.GICRBase)
		iommu = l.iommu
	} else {
		l := x86LayoutFor(rev)
		le.PutUint16(w[l.pm:], p.X86.PMTimerAddress)
		w[l.apicMode] = p.X86.APICMode
		le.PutUint32(w[l.vtd:], p.X86.VTDInterruptLimit)
		le.PutUint32(w[l.tsc:], p.X86.TSCkHz)
		le.PutUint32(w[l.apic:], p.X86.APICkHz)
		iommu = l.iommu
	}
	for i := range p.IOMMUUnits {
		u := &p.IOMMUUnits[i]
		o := w[iommu+i*iommuSize:]
		le.PutUint32(o, u.Type)
		le.PutUint64(o[4:], u.Base)
		le.PutUint32(o[12:], u.Size)
		if u.Type == IOMMUPVU {
			le.PutUint64(o[16:], u.PVUTLBBase)
			le.PutUint32(o[24:], u.PVUTLBSize)
		} else {
			le.PutUint16(o[16:], u.AMDBDF)
			o[18] = u.AMDBaseCap
			o[19] = u.AMDMSICap
			le.PutUint32(o[20:], u.AMDFeatures)
		}
	}
}
