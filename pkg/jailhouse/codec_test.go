package jailhouse

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func mustMarshal(t testing.TB, m interface{ MarshalBinary() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// patch returns a copy of b with data written at off.
func patch(b []byte, off int, data ...byte) []byte {
	b = bytes.Clone(b)
	copy(b[off:], data)
	return b
}

func checkFormatError(t *testing.T, err error, sentinel error, off int, field string) {
	t.Helper()
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FormatError", err, err)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("errors.Is(%v, %v) = false", err, sentinel)
	}
	if fe.Offset != off || fe.Field != field {
		t.Errorf("offset %d field %q, want offset %d field %q (%v)", fe.Offset, fe.Field, off, field, err)
	}
	if !strings.Contains(err.Error(), field) {
		t.Errorf("message %q does not name the field", err)
	}
}

// TestDecodeMalformed feeds damaged configurations to the decoders: each
// must fail with the sentinel, offset and field a user needs to find the
// problem, never panic and never allocate from an unchecked count.
func TestDecodeMalformed(t *testing.T) {
	inmate := mustMarshal(t, qemuARM64InmateDemo()) // arm64 cell, 484 bytes
	apic := mustMarshal(t, x86APICDemo())           // x86 cell with a cache region
	armSys := mustMarshal(t, qemuARM64System())     // arm64 system, 1024 bytes
	x86Sys := mustMarshal(t, qemuX86System())       // x86 system with an Intel IOMMU
	sys13 := func() *System { s := qemuARM64System(); s.Revision = Revision13; return s }
	arm13 := mustMarshal(t, sys13())
	inmate13 := func() []byte { c := qemuARM64InmateDemo(); c.Revision = Revision13; return mustMarshal(t, c) }()
	long := bytes.Repeat([]byte{'a'}, 32)

	tests := []struct {
		name     string
		system   bool
		in       []byte
		sentinel error
		off      int
		field    string
	}{
		{"empty input", false, nil, ErrTruncated, 0, "signature"},
		{"shorter than the signature and revision", false, inmate[:7], ErrTruncated, 7, "signature"},
		{"cell shorter than its cell_desc", false, inmate[:100], ErrTruncated, 100, "cell_desc"},
		{"system shorter than its header", true, armSys[:400], ErrTruncated, 400, "jailhouse_system"},
		{"unknown signature", false, patch(inmate, 0, 'X'), ErrBadSignature, 0, "signature"},
		{"system config passed as a cell", false, armSys, ErrBadSignature, 0, "signature"},
		{"cell config passed as a system", true, inmate, ErrBadSignature, 0, "signature"},
		{"revision-13 system passed as a cell", false, arm13, ErrBadSignature, 0, "signature"},
		{"JHCLL with revision 13", false, patch(inmate, 6, 13, 0), ErrUnsupportedRevision, 6, "revision"},
		{"JHCELL with revision 14", false, patch(inmate13, 6, 14, 0), ErrUnsupportedRevision, 6, "revision"},
		{"revision 11", false, patch(inmate13, 6, 11, 0), ErrUnsupportedRevision, 6, "revision"},
		{"JHSYS with revision 15", true, patch(armSys, 6, 15, 0), ErrUnsupportedRevision, 6, "revision"},
		{"architecture 3", false, patch(inmate, 5, 3), ErrArchitecture, 5, "architecture"},
		{"system architecture 0xff", true, patch(armSys, 5, 0xff), ErrArchitecture, 5, "architecture"},
		{"name without NUL", false, patch(inmate, 8, long...), ErrNameTooLong, 8, "name"},
		{"bytes after the name's NUL", false, patch(inmate, 8+len("inmate-demo")+1, 'x'), ErrReservedNonZero, 20, "name"},
		{"cpu_set_size not a multiple of 8", false, patch(inmate, 48, 4), ErrBadCount, 48, "cpu_set_size"},
		{"one byte appended", false, append(bytes.Clone(inmate), 0), ErrSizeMismatch, 484, "file length"},
		{"last byte missing", false, inmate[:483], ErrSizeMismatch, 483, "file length"},
		{"vendor fork: num_smc_ids after num_stream_ids", false,
			append(bytes.Clone(inmate), 0, 0, 0, 0), ErrSizeMismatch, 484, "file length"},
		{"huge memory region count", false, patch(inmate, 52, 0xff, 0xff, 0xff, 0xff), ErrSizeMismatch, 484, "file length"},
		{"huge counts in every field", false,
			patch(inmate, 48, bytes.Repeat([]byte{0xf8, 0xff, 0xff, 0xff}, 8)...), ErrSizeMismatch, 484, "file length"},
		{"huge root cell count", true, patch(armSys, 356+60, 0xff, 0xff, 0xff, 0x7f), ErrSizeMismatch, 1024, "file length"},
		{"pci_device bitfield padding", false, patch(inmate, 428+35, 0x05), ErrReservedNonZero, 463,
			"pci_devices[0].msi_64bits/msi_maskable"},
		{"cache region padding", false, patch(apic, 204+9, 1), ErrReservedNonZero, 213, "cache_regions[0].padding"},
		{"arm platform padding", true, patch(armSys, 315, 1), ErrReservedNonZero, 315, "platform_info.arm.padding"},
		{"x86 platform padding", true, patch(x86Sys, 315, 1), ErrReservedNonZero, 315, "platform_info.x86.padding"},
		{"x86 system with bytes in the arm-only tail of the union", true, patch(x86Sys, 340, 1), ErrReservedNonZero, 340,
			"platform_info (x86: unused tail of the arch union)"},
		{"tipvu bytes on an Intel IOMMU", true, patch(x86Sys, 88+24, 1), ErrReservedNonZero, 112,
			"platform_info.iommu_units[0].tipvu.tlb_size (unused unless type is PVU)"},
		{"root cell with a signature", true, patch(armSys, 356, 'J'), ErrReservedNonZero, 356, "root_cell.signature"},
		{"root cell with an architecture", true, patch(armSys, 361, 2), ErrReservedNonZero, 361, "root_cell.architecture"},
		{"root cell with a revision", true, patch(armSys, 362, 14), ErrReservedNonZero, 362, "root_cell.revision"},
		{"root cell name too long", true, patch(armSys, 364, long...), ErrNameTooLong, 364, "root_cell.name"},
		{"root cell cpu_set_size 12", true, patch(armSys, 404, 12), ErrBadCount, 404, "root_cell.cpu_set_size"},
		{"root cell pci_device bitfield", true, patch(armSys, 912+35, 0x80), ErrReservedNonZero, 947,
			"root_cell.pci_devices[0].msi_64bits/msi_maskable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.system {
				_, err = DecodeSystem(tt.in)
			} else {
				_, err = DecodeCell(tt.in)
			}
			if err == nil {
				t.Fatal("decoding succeeded")
			}
			checkFormatError(t, err, tt.sentinel, tt.off, tt.field)
		})
	}
}

func TestDecodeSystemArch(t *testing.T) {
	armSys := mustMarshal(t, qemuARM64System())
	t.Run("revision 14 file of another architecture", func(t *testing.T) {
		_, err := DecodeSystemArch(armSys, ArchARM)
		checkFormatError(t, err, ErrArchitecture, 5, "architecture")
	})
	t.Run("invalid architecture asked for", func(t *testing.T) {
		_, err := DecodeSystemArch(armSys, Arch(9))
		checkFormatError(t, err, ErrArchitecture, 5, "architecture")
	})
	t.Run("revision 14 file of that architecture", func(t *testing.T) {
		s, err := DecodeSystemArch(armSys, ArchARM64)
		if err != nil || s.Arch != ArchARM64 {
			t.Fatalf("got %v, %v", s, err)
		}
	})
	t.Run("revision 13 arm file read as 32-bit arm", func(t *testing.T) {
		s := qemuARM64System()
		s.Revision = Revision13
		got, err := DecodeSystemArch(mustMarshal(t, s), ArchARM)
		if err != nil {
			t.Fatal(err)
		}
		if got.Arch != ArchARM || got.RootCell.Arch != ArchARM || got.Platform.ARM != s.Platform.ARM {
			t.Errorf("got arch %v/%v platform %+v", got.Arch, got.RootCell.Arch, got.Platform.ARM)
		}
	})
}

// TestEncodeErrors covers what the wire format cannot carry: each is
// refused with the field and the offset it would have gone to, and
// AppendBinary leaves the caller's buffer alone.
func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name     string
		cell     func(*Cell)
		sys      func(*System)
		sentinel error
		off      int
		field    string
	}{
		{"name of 32 bytes", func(c *Cell) { c.Name = strings.Repeat("n", 32) }, nil, ErrNameTooLong, 8, "name"},
		{"name with a NUL", func(c *Cell) { c.Name = "a\x00b" }, nil, ErrBadName, 9, "name"},
		{"cpu set of 4 bytes", func(c *Cell) { c.CPUSet = []byte{1, 0, 0, 0} }, nil, ErrBadCount, 48, "cpu_set_size"},
		{"revision 11", func(c *Cell) { c.Revision = 11 }, nil, ErrUnsupportedRevision, 6, "revision"},
		{"revision 14 with an unknown arch", func(c *Cell) { c.Arch = ArchUnknown }, nil, ErrArchitecture, 5, "architecture"},
		{"system revision 14 with an unknown arch", nil, func(s *System) { s.Arch = ArchUnknown },
			ErrArchitecture, 5, "architecture"},
		{"system arch 7 in revision 13", nil, func(s *System) { s.Revision, s.Arch = Revision13, 7 },
			ErrArchitecture, 5, "architecture"},
		{"x86 fields on an arm system", nil, func(s *System) { s.Platform.X86.TSCkHz = 1 },
			ErrUnusedField, 312, "platform_info.x86"},
		{"arm fields on an x86 system", nil, func(s *System) {
			s.Arch = ArchX86
			s.Platform.X86.PMTimerAddress = 0x608
		}, ErrUnusedField, 312, "platform_info.arm"},
		{"arm fields on a revision-12 x86 system", nil, func(s *System) {
			s.Revision, s.Arch = Revision12, ArchX86
		}, ErrUnusedField, 88, "platform_info.arm"},
		{"AMD fields on a PVU unit", nil, func(s *System) {
			s.Platform.IOMMUUnits[1] = IOMMU{Type: IOMMUPVU, AMDBDF: 2}
		}, ErrUnusedField, 88 + 28 + 16, "platform_info.iommu_units[1].amd"},
		{"PVU fields on an SMMUv3 unit", nil, func(s *System) {
			s.Platform.IOMMUUnits[0] = IOMMU{Type: IOMMUSMMUv3, PVUTLBSize: 0x40000}
		}, ErrUnusedField, 88 + 16, "platform_info.iommu_units[0].tipvu"},
		{"PVU fields in a revision-12 arm system", nil, func(s *System) {
			s.Revision = Revision12
			s.Platform.IOMMUUnits[0] = IOMMU{Type: IOMMUARMMMU500, PVUTLBBase: 1}
		}, ErrUnusedField, 130 + 16, "platform_info.arm.iommu_units[0].tipvu"},
		{"root cell name too long", nil, func(s *System) { s.RootCell.Name = strings.Repeat("r", 40) },
			ErrNameTooLong, 364, "root_cell.name"},
		{"revision-12 root cell cpu set of 9 bytes", nil, func(s *System) {
			s.Revision = Revision12
			s.RootCell.CPUSet = make([]byte, 9)
		}, ErrBadCount, 354 + 48, "root_cell.cpu_set_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("keep")
			var out []byte
			var err error
			if tt.cell != nil {
				c := qemuARM64InmateDemo()
				tt.cell(c)
				_, err = c.MarshalBinary()
				checkFormatError(t, err, tt.sentinel, tt.off, tt.field)
				out, _ = c.AppendBinary(prefix)
			} else {
				s := qemuARM64System()
				tt.sys(s)
				_, err = s.MarshalBinary()
				checkFormatError(t, err, tt.sentinel, tt.off, tt.field)
				out, _ = s.AppendBinary(prefix)
			}
			if string(out) != "keep" {
				t.Errorf("AppendBinary changed the buffer on error: %q", out)
			}
		})
	}
}

// TestIOMMUUnion pins the 12-byte union of jailhouse_iommu: amd for AMD
// (and by convention every non-PVU type), tipvu for PVU. Values from
// configs/x86/f2a88xm-hd3.c and configs/arm64/k3-j721e-evm.c.
func TestIOMMUUnion(t *testing.T) {
	for _, rev := range []Revision{Revision12, Revision13, Revision14} {
		s := qemuARM64System()
		s.Revision = rev
		s.Platform.IOMMUUnits[0] = IOMMU{Type: IOMMUSMMUv3, Base: 0x36600000, Size: 0x100000}
		s.Platform.IOMMUUnits[1] = IOMMU{Type: IOMMUPVU, Base: 0x30f80000, Size: 0x1000,
			PVUTLBBase: 0x36000000, PVUTLBSize: 0x40000}
		s.Platform.IOMMUUnits[2] = IOMMU{Type: IOMMUAMD, Base: 0xfeb80000, Size: 0x80000,
			AMDBDF: 0x02, AMDBaseCap: 0x40, AMDMSICap: 0x54, AMDFeatures: 0x80048824}
		b := mustMarshal(t, s)
		base := 88 // revision 13+: common iommu_units
		if rev == Revision12 {
			base = 130 // inside the arm member, after the five GIC bases
		}
		checkBytes(t, b, []at{
			{base, "03000000 0000603600000000 00001000 000000000000000000000000"},
			{base + 28, "04000000 0000f83000000000 00100000 0000003600000000 00000400"},
			{base + 56, "01000000 0000b8fe00000000 00000800 0200 40 54 24880480 00000000"},
		})
		got, err := DecodeSystemArch(b, ArchARM64)
		if err != nil {
			t.Fatalf("rev %d: %v", rev, err)
		}
		if got.Platform.IOMMUUnits != s.Platform.IOMMUUnits {
			t.Errorf("rev %d: iommu units\n got %+v\nwant %+v", rev, got.Platform.IOMMUUnits, s.Platform.IOMMUUnits)
		}
		if again := mustMarshal(t, got); !bytes.Equal(again, b) {
			t.Errorf("rev %d: re-encoding differs at %d", rev, firstDiff(again, b))
		}
	}
}

// TestRevision12X86Platform pins the revision-12 x86 member, whose fields
// are ordered differently from revision 13 (vtd_interrupt_limit before
// apic_mode).
func TestRevision12X86Platform(t *testing.T) {
	s := qemuX86System()
	s.Revision = Revision12
	s.Platform.X86 = X86Platform{PMTimerAddress: 0x808, APICMode: APICModeX2APIC,
		VTDInterruptLimit: 0x100, TSCkHz: 2400000, APICkHz: 100000}
	b := mustMarshal(t, s)
	checkBytes(t, b, []at{{88, "0808 00010000 02 000000 009f2400 a0860100 02000000"}})
	got, err := DecodeSystem(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Arch != ArchX86 || got.Platform != s.Platform {
		t.Errorf("got arch %v platform %+v", got.Arch, got.Platform)
	}
}

func TestAppendBinary(t *testing.T) {
	c := qemuARM64InmateDemo()
	want := mustMarshal(t, c)
	b, err := c.AppendBinary([]byte("head"))
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:4]) != "head" || !bytes.Equal(b[4:], want) {
		t.Errorf("AppendBinary did not append the encoding after the prefix")
	}
	s := qemuARM64System()
	sb, err := s.AppendBinary(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sb[:len(b)], b) || !bytes.Equal(sb[len(b):], mustMarshal(t, s)) {
		t.Errorf("System.AppendBinary did not append after the existing bytes")
	}
}

// TestZeroValueDefaults: a Cell or System with Revision 0 is written as
// revision 14, and decodes back with Revision 14.
func TestZeroValueDefaults(t *testing.T) {
	c := &Cell{Arch: ArchARM64, Name: "c", CPUSet: cpus(1)}
	b := mustMarshal(t, c)
	if string(b[:5]) != sigCell || b[6] != 14 {
		t.Fatalf("header % x", b[:8])
	}
	got, err := DecodeCell(b)
	if err != nil {
		t.Fatal(err)
	}
	c.Revision = Revision14
	if !reflect.DeepEqual(got, c) {
		t.Errorf("got %+v, want %+v", got, c)
	}
}

func TestCPUSetFromList(t *testing.T) {
	tests := []struct {
		name    string
		cpus    []int
		size    int
		want    []byte
		wantErr bool
	}{
		{"cpu 1 in a u64 set", []int{1}, 8, []byte{2, 0, 0, 0, 0, 0, 0, 0}, false},
		{"cpus 0-15", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, 8, []byte{0xff, 0xff, 0, 0, 0, 0, 0, 0}, false},
		{"cpu 64 in a 16-byte set", []int{64, 2, 2}, 16, []byte{4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, false},
		{"empty list", nil, 8, make([]byte, 8), false},
		{"cpu beyond the set", []int{64}, 8, nil, true},
		{"negative cpu", []int{-1}, 8, nil, true},
		{"size not a multiple of 8", []int{1}, 4, nil, true},
		{"size zero", nil, 0, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CPUSetFromList(tt.cpus, tt.size)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrBadCount) {
					t.Errorf("error %v does not wrap ErrBadCount", err)
				}
				return
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got % x, want % x", got, tt.want)
			}
		})
	}
}

func TestCellCPUs(t *testing.T) {
	c := &Cell{Name: "c"}
	if got := c.CPUs(); got != nil {
		t.Errorf("empty set: CPUs() = %v", got)
	}
	if err := c.SetCPUs([]int{3, 1}); err != nil {
		t.Fatal(err)
	}
	if len(c.CPUSet) != 8 || !reflect.DeepEqual(c.CPUs(), []int{1, 3}) {
		t.Errorf("after SetCPUs(3,1): set % x, CPUs %v", c.CPUSet, c.CPUs())
	}
	if err := c.SetCPUs([]int{70}); err != nil {
		t.Fatal(err)
	}
	if len(c.CPUSet) != 16 || !reflect.DeepEqual(c.CPUs(), []int{70}) {
		t.Errorf("after SetCPUs(70): set % x, CPUs %v", c.CPUSet, c.CPUs())
	}
	// The size is kept when large enough, so a root cell's 8-byte set
	// stays 8 bytes.
	if err := c.SetCPUs([]int{0}); err != nil || len(c.CPUSet) != 16 {
		t.Errorf("SetCPUs(0) shrank the set to %d bytes (err %v)", len(c.CPUSet), err)
	}
	if err := c.SetCPUs([]int{-2}); err == nil {
		t.Error("SetCPUs(-2) succeeded")
	}
	if got := qemuARM64System().RootCell.CPUs(); len(got) != 16 || got[15] != 15 {
		t.Errorf("qemu-arm64 root CPUs = %v", got)
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{ArchARM64.String(), "arm64"},
		{ArchX86.String(), "x86"},
		{ArchUnknown.String(), "unknown"},
		{Arch(7).String(), "Arch(7)"},
		{Revision13.String(), "13"},
		{(CellPassiveCommRegion | CellVirtualConsoleActive).String(), "PASSIVE_COMMREG|VIRTUAL_CONSOLE_ACTIVE"},
		{CellFlags(0).String(), "0"},
		{(MemRead | MemWrite | MemExecute | MemLoadable).String(), "READ|WRITE|EXECUTE|LOADABLE"},
		{(MemRead | MemIO | MemIO32 | 0x200).String(), "READ|IO|IO_32|0x200"},
		{SysVirtualDebugConsole.String(), "VIRTUAL_DEBUG_CONSOLE"},
		{ConsoleTypeName(ConsolePL011), "PL011"},
		{ConsoleTypeName(0x77), "119"},
		{ConsoleFlagsString(ConsoleAccessMMIO | ConsoleRegDist4), "ACCESS_MMIO|REGDIST_4"},
		{IOMMUTypeName(IOMMUPVU), "PVU"},
		{PCITypeName(PCITypeIVSHMEM), "IVSHMEM"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	for _, s := range []string{"x86", "amd64", "arm", "arm64", "aarch64"} {
		if _, err := ParseArch(s); err != nil {
			t.Errorf("ParseArch(%q): %v", s, err)
		}
	}
	if _, err := ParseArch("riscv"); err == nil {
		t.Error("ParseArch(riscv) succeeded")
	}
}
