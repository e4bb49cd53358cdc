package jailhouse

import (
	"bytes"
	"fmt"
)

// DecodeCell parses a binary cell configuration (a .cell file, the argument
// of CELL_CREATE) of revision 12, 13 or 14.
//
// It checks the signature, revision and architecture, that len(b) equals
// the size computed from the header's counts, that the name is at most 31
// bytes and NUL-padded, and that padding and reserved bits are zero, so
// that MarshalBinary of the result gives b back byte for byte. Errors are
// *FormatError values naming the offset and field.
//
// Revisions 12 and 13 do not record the architecture: the result's Arch is
// then ArchUnknown.
func DecodeCell(b []byte) (*Cell, error) {
	rev, arch, err := decodeHeader(b, sigCell, sigCellOld, sigSystem, sigSystemOld)
	if err != nil {
		return nil, err
	}
	if len(b) < cellDescSize {
		return nil, &FormatError{Offset: len(b), Field: "cell_desc", Revision: rev, Err: ErrTruncated,
			Detail: fmt.Sprintf("%d bytes, the cell_desc alone is %d", len(b), cellDescSize)}
	}
	c := &Cell{Revision: rev, Arch: arch}
	d := decoder{b: b, rev: rev}
	n, err := d.desc(0, "", c)
	if err != nil {
		return nil, err
	}
	if err := d.checkSize(0, n); err != nil {
		return nil, err
	}
	d.arrays(cellDescSize, "", c, n)
	if d.err != nil {
		return nil, d.err
	}
	return c, nil
}

// DecodeSystem parses a binary system configuration (the argument of
// ENABLE) of revision 12, 13 or 14, with the same checks as DecodeCell.
//
// Revisions 12 and 13 do not record the architecture, yet the platform_info
// union depends on it. DecodeSystem then infers it from the union: the arm
// member is recognised by a GIC version of 2 or 3 with a page-aligned GICD
// base, or (revision 13) by non-zero bytes where the x86 member has none.
// It sets Arch to ArchX86 or, for the arm member, to ArchUnknown, because
// arm and arm64 share it. Callers that know the architecture use
// DecodeSystemArch instead.
func DecodeSystem(b []byte) (*System, error) {
	return decodeSystem(b, ArchUnknown)
}

// DecodeSystemArch is DecodeSystem for a caller that knows the architecture
// (from a board profile). For revision 14 the file's architecture byte must
// equal arch; for revisions 12 and 13 arch selects the platform_info layout
// and is stored in the result.
func DecodeSystemArch(b []byte, arch Arch) (*System, error) {
	if arch > ArchARM64 {
		return nil, &FormatError{Offset: 5, Field: "architecture", Err: ErrArchitecture,
			Detail: fmt.Sprintf("caller asked for %v", arch)}
	}
	return decodeSystem(b, arch)
}

func decodeSystem(b []byte, want Arch) (*System, error) {
	rev, arch, err := decodeHeader(b, sigSystem, sigSystemOld, sigCell, sigCellOld)
	if err != nil {
		return nil, err
	}
	root := RootCellOffset(rev)
	if len(b) < root+cellDescSize {
		return nil, &FormatError{Offset: len(b), Field: "jailhouse_system", Revision: rev, Err: ErrTruncated,
			Detail: fmt.Sprintf("%d bytes, the system header with its root cell_desc is %d", len(b), root+cellDescSize)}
	}
	switch {
	case rev == Revision14 && want != ArchUnknown && want != arch:
		return nil, &FormatError{Offset: 5, Field: "architecture", Revision: rev, Err: ErrArchitecture,
			Detail: fmt.Sprintf("file is %v, caller expected %v", arch, want)}
	case rev != Revision14 && want != ArchUnknown:
		arch = want
	case rev != Revision14:
		arch = inferArch(b, rev)
	}

	d := decoder{b: b, rev: rev}
	s := &System{Revision: rev, Arch: arch}
	s.Flags = SystemFlags(le.Uint32(b[sysFlags:]))
	s.HypervisorMemory = d.memory(sysHypervisorMemory)
	s.DebugConsole = d.console(sysDebugConsole)
	d.platform(&s.Platform, arch)
	if d.err != nil {
		return nil, d.err
	}

	// The root cell_desc is written by C initialisers that set only name,
	// counts and vpci_irq_base: its signature, architecture and revision
	// are zero.
	for i := range 8 {
		if b[root+i] != 0 {
			field := "root_cell.signature"
			switch {
			case rev == Revision14 && i == 5:
				field = "root_cell.architecture"
			case i >= 6:
				field = "root_cell.revision"
			}
			return nil, &FormatError{Offset: root + i, Field: field, Revision: rev, Err: ErrReservedNonZero,
				Detail: "the embedded root cell_desc carries no signature, architecture or revision"}
		}
	}
	s.RootCell.Revision, s.RootCell.Arch = rev, arch
	n, err := d.desc(root, "root_cell.", &s.RootCell)
	if err != nil {
		return nil, err
	}
	if err := d.checkSize(root, n); err != nil {
		return nil, err
	}
	d.arrays(root+cellDescSize, "root_cell.", &s.RootCell, n)
	if d.err != nil {
		return nil, d.err
	}
	return s, nil
}

// decodeHeader checks bytes 0–7: the signature of the wanted kind (sig for
// revision 14, sigOld for 12 and 13), the revision and the architecture.
// otherSig/otherSigOld are the other kind's, for a clearer error.
func decodeHeader(b []byte, sig, sigOld, otherSig, otherSigOld string) (Revision, Arch, error) {
	if len(b) < 8 {
		return 0, 0, &FormatError{Offset: len(b), Field: "signature", Err: ErrTruncated,
			Detail: fmt.Sprintf("%d bytes, the signature and revision alone are 8", len(b))}
	}
	rev := Revision(le.Uint16(b[6:]))
	// Test the 6-byte signatures first: "JHSYST" begins with "JHSYS".
	switch {
	case string(b[:6]) == sigOld:
		if rev != Revision12 && rev != Revision13 {
			return 0, 0, &FormatError{Offset: 6, Field: "revision", Err: ErrUnsupportedRevision,
				Detail: fmt.Sprintf("got %d; signature %q is used by revisions 12 and 13", rev, sigOld)}
		}
		return rev, ArchUnknown, nil
	case string(b[:5]) == sig:
		if rev != Revision14 {
			return 0, 0, &FormatError{Offset: 6, Field: "revision", Err: ErrUnsupportedRevision,
				Detail: fmt.Sprintf("got %d; signature %q is used by revision 14", rev, sig)}
		}
		arch := Arch(b[5])
		if arch > ArchARM64 {
			return 0, 0, &FormatError{Offset: 5, Field: "architecture", Revision: rev, Err: ErrArchitecture,
				Detail: fmt.Sprintf("got %d, want 0 (x86), 1 (arm) or 2 (arm64)", b[5])}
		}
		return rev, arch, nil
	case string(b[:6]) == otherSigOld || string(b[:5]) == otherSig:
		what := "a system configuration, not a cell configuration"
		if sig == sigSystem {
			what = "a cell configuration, not a system configuration"
		}
		return 0, 0, &FormatError{Offset: 0, Field: "signature", Err: ErrBadSignature,
			Detail: fmt.Sprintf("%q: this is %s", b[:6], what)}
	}
	return 0, 0, &FormatError{Offset: 0, Field: "signature", Err: ErrBadSignature,
		Detail: fmt.Sprintf("got %q, want %q (revision 14) or %q (revisions 12, 13)", b[:6], sig, sigOld)}
}

// inferArch tells the platform_info members of revisions 12 and 13 apart
// (see DecodeSystem). Either answer decodes and re-encodes the same bytes;
// only the meaning of the fields differs.
func inferArch(b []byte, rev Revision) Arch {
	gicLike := func(ver byte, gicd uint64) bool {
		return (ver == 2 || ver == 3) && gicd != 0 && gicd&0xfff == 0
	}
	if rev == Revision12 {
		if gicLike(b[armRev12.ver], le.Uint64(b[armRev12.gicd:])) {
			return ArchUnknown
		}
		return ArchX86
	}
	// The x86 member ends at 328; every arm board has a GICC/GICH/GICV
	// (v2) or GICR (v3) base there.
	if !allZero(b[328:356]) {
		return ArchUnknown
	}
	if gicLike(b[armRev13.ver], le.Uint64(b[armRev13.gicd:])) && b[314] == 0 && b[315] == 0 {
		return ArchUnknown
	}
	return ArchX86
}

// cellCounts are the array lengths of a cell_desc, as read.
type cellCounts struct {
	cpuSet, mem, cache, irq, pio, pci, caps, sids uint32
}

// size is jailhouse_cell_config_size() in 64 bits, so that no count can
// overflow it even where int is 32 bits.
func (n cellCounts) size() uint64 {
	return cellDescSize + uint64(n.cpuSet) + memorySize*uint64(n.mem) + cacheSize*uint64(n.cache) +
		irqchipSize*uint64(n.irq) + pioSize*uint64(n.pio) + pciDeviceSize*uint64(n.pci) +
		pciCapabilitySize*uint64(n.caps) + streamIDSize*uint64(n.sids)
}

// decoder reads fields at absolute offsets of b. The first reserved-byte
// violation is kept in err; reads themselves cannot fail because every
// array is read only after the total size was checked against len(b).
type decoder struct {
	b   []byte
	rev Revision
	err error
}

func (d *decoder) fail(off int, field string, sentinel error, detail string) {
	if d.err == nil {
		d.err = &FormatError{Offset: off, Field: field, Revision: d.rev, Err: sentinel, Detail: detail}
	}
}

// zero requires b[off:off+n] to be zero.
func (d *decoder) zero(off, n int, field string) {
	for i, v := range d.b[off : off+n] {
		if v != 0 {
			d.fail(off+i, field, ErrReservedNonZero, fmt.Sprintf("byte %d of %d is %#02x", i, n, v))
			return
		}
	}
}

// desc reads the cell_desc at off, from the name on.
func (d *decoder) desc(off int, prefix string, c *Cell) (cellCounts, error) {
	b := d.b[off:]
	name := b[descName : descName+nameSize]
	end := bytes.IndexByte(name, 0)
	if end < 0 {
		return cellCounts{}, &FormatError{Offset: off + descName, Field: prefix + "name", Revision: d.rev,
			Err: ErrNameTooLong, Detail: fmt.Sprintf("no NUL in %q", name)}
	}
	d.zero(off+descName+end, nameSize-end, prefix+"name")
	if d.err != nil {
		return cellCounts{}, d.err
	}
	c.Name = string(name[:end])
	c.ID = le.Uint32(b[descID:])
	c.Flags = CellFlags(le.Uint32(b[descFlags:]))
	n := cellCounts{
		cpuSet: le.Uint32(b[descCPUSetSize:]),
		mem:    le.Uint32(b[descNumMemory:]),
		cache:  le.Uint32(b[descNumCache:]),
		irq:    le.Uint32(b[descNumIRQChips:]),
		pio:    le.Uint32(b[descNumPIO:]),
		pci:    le.Uint32(b[descNumPCIDevices:]),
		caps:   le.Uint32(b[descNumPCICaps:]),
		sids:   le.Uint32(b[descNumStreamIDs:]),
	}
	if n.cpuSet%8 != 0 {
		return cellCounts{}, &FormatError{Offset: off + descCPUSetSize, Field: prefix + "cpu_set_size",
			Revision: d.rev, Err: ErrBadCount,
			Detail: fmt.Sprintf("%d bytes; the hypervisor reads the set as 64-bit words, so it must be a multiple of 8", n.cpuSet)}
	}
	c.VPCIIRQBase = le.Uint32(b[descVPCIIRQBase:])
	c.CPUResetAddress = le.Uint64(b[descCPUResetAddress:])
	c.MsgReplyTimeout = le.Uint64(b[descMsgReplyTimeout:])
	c.Console = d.console(off + descConsole)
	return n, nil
}

// checkSize requires the cell_desc at off plus its arrays to end exactly
// at len(b); only then may arrays() allocate from the counts.
func (d *decoder) checkSize(off int, n cellCounts) error {
	want := uint64(off) + n.size()
	if want == uint64(len(d.b)) {
		return nil
	}
	detail := fmt.Sprintf("input is %d bytes, header describes %d (cpu_set_size %d, %d memory, %d cache, "+
		"%d irqchip, %d pio, %d pci_device, %d pci_cap, %d stream_id)",
		len(d.b), want, n.cpuSet, n.mem, n.cache, n.irq, n.pio, n.pci, n.caps, n.sids)
	if want < uint64(len(d.b)) {
		detail += "; vendor forks (e.g. MediaTek Genio's num_smc_ids) grow the header without changing the revision"
	}
	return &FormatError{Offset: int(min(want, uint64(len(d.b)))), Field: "file length",
		Revision: d.rev, Err: ErrSizeMismatch, Detail: detail}
}

// arrays reads the trailing arrays that start at off. Empty arrays stay nil.
func (d *decoder) arrays(off int, prefix string, c *Cell, n cellCounts) {
	b := d.b
	if n.cpuSet > 0 {
		c.CPUSet = bytes.Clone(b[off : off+int(n.cpuSet)])
		off += int(n.cpuSet)
	}
	if n.mem > 0 {
		c.MemoryRegions = make([]Memory, n.mem)
		for i := range c.MemoryRegions {
			c.MemoryRegions[i] = d.memory(off)
			off += memorySize
		}
	}
	if n.cache > 0 {
		c.CacheRegions = make([]Cache, n.cache)
		for i := range c.CacheRegions {
			c.CacheRegions[i] = Cache{
				Start: le.Uint32(b[off:]),
				Size:  le.Uint32(b[off+4:]),
				Type:  b[off+8],
				Flags: le.Uint16(b[off+10:]),
			}
			d.zero(off+9, 1, fmt.Sprintf("%scache_regions[%d].padding", prefix, i))
			off += cacheSize
		}
	}
	if n.irq > 0 {
		c.IRQChips = make([]IRQChip, n.irq)
		for i := range c.IRQChips {
			ic := &c.IRQChips[i]
			ic.Address = le.Uint64(b[off:])
			ic.ID = le.Uint32(b[off+8:])
			ic.PinBase = le.Uint32(b[off+12:])
			for j := range ic.PinBitmap {
				ic.PinBitmap[j] = le.Uint32(b[off+16+4*j:])
			}
			off += irqchipSize
		}
	}
	if n.pio > 0 {
		c.PIORegions = make([]PIO, n.pio)
		for i := range c.PIORegions {
			c.PIORegions[i] = PIO{Base: le.Uint16(b[off:]), Length: le.Uint16(b[off+2:])}
			off += pioSize
		}
	}
	if n.pci > 0 {
		c.PCIDevices = make([]PCIDevice, n.pci)
		for i := range c.PCIDevices {
			p := &c.PCIDevices[i]
			p.Type = b[off]
			p.IOMMU = b[off+1]
			p.Domain = le.Uint16(b[off+2:])
			p.BDF = le.Uint16(b[off+4:])
			for j := range p.BARMask {
				p.BARMask[j] = le.Uint32(b[off+6+4*j:])
			}
			p.CapsStart = le.Uint16(b[off+30:])
			p.NumCaps = le.Uint16(b[off+32:])
			p.NumMSIVectors = b[off+34]
			// Byte 35 holds the bitfields msi_64bits:1 and msi_maskable:1;
			// the other six bits are padding.
			bits := b[off+35]
			p.MSI64Bits = bits&0x1 != 0
			p.MSIMaskable = bits&0x2 != 0
			if bits&^0x3 != 0 {
				d.fail(off+35, fmt.Sprintf("%spci_devices[%d].msi_64bits/msi_maskable", prefix, i),
					ErrReservedNonZero, fmt.Sprintf("bitfield byte is %#02x, only bits 0 and 1 are defined", bits))
			}
			p.NumMSIXVectors = le.Uint16(b[off+36:])
			p.MSIXRegionSize = le.Uint16(b[off+38:])
			p.MSIXAddress = le.Uint64(b[off+40:])
			p.ShmemRegionsStart = le.Uint32(b[off+48:])
			p.ShmemDevID = b[off+52]
			p.ShmemPeers = b[off+53]
			p.ShmemProtocol = le.Uint16(b[off+54:])
			off += pciDeviceSize
		}
	}
	if n.caps > 0 {
		c.PCICaps = make([]PCICapability, n.caps)
		for i := range c.PCICaps {
			c.PCICaps[i] = PCICapability{
				ID:    le.Uint16(b[off:]),
				Start: le.Uint16(b[off+2:]),
				Len:   le.Uint16(b[off+4:]),
				Flags: le.Uint16(b[off+6:]),
			}
			off += pciCapabilitySize
		}
	}
	if n.sids > 0 {
		c.StreamIDs = make([]uint32, n.sids)
		for i := range c.StreamIDs {
			c.StreamIDs[i] = le.Uint32(b[off:])
			off += streamIDSize
		}
	}
}

func (d *decoder) memory(off int) Memory {
	b := d.b[off:]
	return Memory{
		PhysStart: le.Uint64(b),
		VirtStart: le.Uint64(b[8:]),
		Size:      le.Uint64(b[16:]),
		Flags:     MemFlags(le.Uint64(b[24:])),
	}
}

func (d *decoder) console(off int) Console {
	b := d.b[off:]
	return Console{
		Address:  le.Uint64(b),
		Size:     le.Uint32(b[8:]),
		Type:     le.Uint16(b[12:]),
		Flags:    le.Uint16(b[14:]),
		Divider:  le.Uint32(b[16:]),
		GateNr:   le.Uint32(b[20:]),
		ClockReg: le.Uint64(b[24:]),
	}
}

// platform reads platform_info for the given architecture family.
func (d *decoder) platform(p *Platform, arch Arch) {
	b := d.b
	p.PCIMMConfigBase = le.Uint64(b[sysPCIMMConfigBase:])
	p.PCIMMConfigEndBus = b[sysPCIMMConfigEndBus]
	p.PCIIsVirtual = b[sysPCIIsVirtual]
	p.PCIDomain = le.Uint16(b[sysPCIDomain:])
	var iommu int
	var iommuField string
	if isARMFamily(arch) {
		l := armLayoutFor(d.rev)
		p.ARM = ARMPlatform{
			MaintenanceIRQ: b[l.mnt],
			GICVersion:     b[l.ver],
			GICDBase:       le.Uint64(b[l.gicd:]),
			GICCBase:       le.Uint64(b[l.gicc:]),
			GICHBase:       le.Uint64(b[l.gich:]),
			GICVBase:       le.Uint64(b[l.gicv:]),
			GICRBase:       le.Uint64(b[l.gicr:]),
		}
		for _, r := range l.reserved {
			d.zero(r.off, r.n, r.field)
		}
		iommu, iommuField = l.iommu, l.iommuField
	} else {
		l := x86LayoutFor(d.rev)
		p.X86 = X86Platform{
			PMTimerAddress:    le.Uint16(b[l.pm:]),
			APICMode:          b[l.apicMode],
			VTDInterruptLimit: le.Uint32(b[l.vtd:]),
			TSCkHz:            le.Uint32(b[l.tsc:]),
			APICkHz:           le.Uint32(b[l.apic:]),
		}
		for _, r := range l.reserved {
			d.zero(r.off, r.n, r.field)
		}
		iommu, iommuField = l.iommu, l.iommuField
	}
	for i := range p.IOMMUUnits {
		d.iommu(&p.IOMMUUnits[i], iommu+i*iommuSize, fmt.Sprintf("%s[%d]", iommuField, i))
	}
}

// iommu reads one jailhouse_iommu. Its 12-byte union is the tipvu member
// for PVU units and the amd member otherwise; the amd member leaves the last
// four bytes unused, and they must be zero.
func (d *decoder) iommu(u *IOMMU, off int, field string) {
	b := d.b[off:]
	u.Type = le.Uint32(b)
	u.Base = le.Uint64(b[4:])
	u.Size = le.Uint32(b[12:])
	if u.Type == IOMMUPVU {
		u.PVUTLBBase = le.Uint64(b[16:])
		u.PVUTLBSize = le.Uint32(b[24:])
		return
	}
	u.AMDBDF = le.Uint16(b[16:])
	u.AMDBaseCap = b[18]
	u.AMDMSICap = b[19]
	u.AMDFeatures = le.Uint32(b[20:])
	d.zero(off+24, 4, field+".tipvu.tlb_size (unused unless type is PVU)")
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}
