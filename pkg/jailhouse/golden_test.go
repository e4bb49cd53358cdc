package jailhouse

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*/*.cell from the encoder's output")

// at is one hand-derived expectation: the bytes at off, in hex (spaces are
// ignored), or a NUL-padded name of nameSize bytes.
type at struct {
	off int
	hex string
}

func name32(off int, s string) at {
	return at{off, hex.EncodeToString([]byte(s)) + strings.Repeat("00", nameSize-len(s))}
}

func zeros(off, n int) at { return at{off, strings.Repeat("00", n)} }

// golden is one configuration of configs_test.go with what the encoding
// must look like, worked out by hand from jailhouse-abi.md §2 and the C
// initialisers, not from the encoder.
type golden struct {
	name   string
	cell   func() *Cell
	sys    func() *System
	size   int
	layout Layout // of the cell, or of the root cell relative to RootCellOffset
	bytes  []at
}

var goldens = []golden{
	{
		name: "qemu-arm64-inmate-demo",
		cell: qemuARM64InmateDemo,
		size: 484,
		layout: Layout{CPUSet: 132, MemoryRegions: 140, CacheRegions: 396, IRQChips: 396,
			PIORegions: 428, PCIDevices: 428, PCICaps: 484, StreamIDs: 484, End: 484},
		bytes: []at{
			{0, "4a48434c4c 02 0e00"},
			name32(8, "inmate-demo"),
			{40, "00000000 01000000 08000000 08000000 00000000 01000000 00000000 01000000 00000000 00000000"},
			{80, "70000000 0000000000000000 0000000000000000"},
			{100, "0000000900000000 00000000 0300 0300 00000000 00000000 0000000000000000"},
			{132, "0200000000000000"},
			{140, "0000af7f00000000 0000af7f00000000 0010000000000000 8100000000000000"},
			{172, "0010af7f00000000 0010af7f00000000 0090000000000000 8300000000000000"},
			{332, "0000a07f00000000 0000000000000000 0000010000000000 4700000000000000"},
			{364, "0000000000000000 0000008000000000 0010000000000000 2300000000000000"},
			{396, "0000000800000000 00000000 20000000 00000000 00000000 00000000 00000100"},
			{428, "03 00 0100 0000 00f0ffff 00000000 00000000 00000000 00000000 00000000"},
			{458, "0000 0000 00 00 0000 0000 0000000000000000 00000000 01 03 0000"},
		},
	},
	{
		name: "qemu-arm64-linux-demo",
		cell: qemuARM64LinuxDemo,
		size: 700,
		layout: Layout{CPUSet: 132, MemoryRegions: 140, CacheRegions: 556, IRQChips: 556,
			PIORegions: 588, PCIDevices: 588, PCICaps: 700, StreamIDs: 700, End: 700},
		bytes: []at{
			{0, "4a48434c4c 02 0e00"},
			name32(8, "qemu-arm64-linux-demo"),
			{44, "01000040 08000000 0d000000 00000000 01000000 00000000 02000000 00000000 00000000 6c000000"},
			{100, "0000000900000000 00000000 0300 0300"},
			{132, "0c00000000000000"},
			{140, "0000af7f00000000 0000af7f00000000 0010000000000000 8100000000000000"},
			// JAILHOUSE_SHMEM_NET_REGIONS(0x7fb00000, 1): state table, {0}, output 0, output 1 (W).
			{300, "0000b07f00000000 0000b07f00000000 0010000000000000 8100000000000000"},
			zeros(332, 32),
			{364, "0010b07f00000000 0010b07f00000000 00f0070000000000 8100000000000000"},
			{396, "0000b87f00000000 0000b87f00000000 00f0070000000000 8300000000000000"},
			{460, "0000907f00000000 0000000000000000 0000010000000000 4700000000000000"},
			{492, "0000007000000000 0000007000000000 0000000800000000 4f00000000000000"},
			{524, "0000000000000000 0000008000000000 0010000000000000 2300000000000000"},
			{556, "0000000800000000 00000000 20000000 02000000 00000000 00000000 00300000"},
			{588, "03 00 0100 0000 00f0ffff"},
			{636, "00000000 02 03 0000"},
			{644, "03 00 0000 0800 00f0ffff"},
			{692, "05000000 01 02 0100"},
		},
	},
	{
		name: "qemu-arm64",
		sys:  qemuARM64System,
		size: 1024,
		layout: Layout{CPUSet: 132, MemoryRegions: 140, CacheRegions: 524, IRQChips: 524,
			PIORegions: 556, PCIDevices: 556, PCICaps: 668, StreamIDs: 668, End: 668},
		bytes: []at{
			{0, "4a48535953 02 0e00 01000000"},
			{12, "0000c07f00000000 0000000000000000 0000400000000000 0000000000000000"},
			{44, "0000000900000000 00100000 0300 0300 00000000 00000000 0000000000000000"},
			{76, "0000e00800000000 00 01 0100"},
			zeros(88, 224), // no iommu units
			{312, "19 03 0000 0000000800000000 0000000000000000 0000000000000000 0000000000000000 00000a0800000000"},
			zeros(356, 8), // the root cell_desc has no signature, architecture or revision
			name32(364, "qemu-arm64"),
			{396, "00000000 00000000 08000000 0c000000 00000000 01000000 00000000 02000000 00000000 00000000 60000000"},
			zeros(440, 48),
			{488, "ffff000000000000"},
			{496, "0000af7f00000000 0000af7f00000000 0010000000000000 0100000000000000"},
			// JAILHOUSE_SHMEM_NET_REGIONS(0x7fb00000, 0) keeps ROOTSHARED in the root cell.
			{656, "0000b07f00000000 0000b07f00000000 0010000000000000 8100000000000000"},
			{720, "0010b07f00000000 0010b07f00000000 00f0070000000000 8300000000000000"},
			{752, "0000b87f00000000 0000b87f00000000 00f0070000000000 8100000000000000"},
			{784, "0000000900000000 0000000900000000 0000003700000000 1300000000000000"},
			{816, "0000004000000000 0000004000000000 0000a13f00000000 0700000000000000"},
			{848, "0000001040000000 0000001040000000 0000001000000000 1300000000000000"},
			{880, "0000000800000000 00000000 20000000 ffffffff ffffffff ffffffff ffffffff"},
			{912, "03 00 0100 0000 00f0ffff"},
			{960, "00000000 00 03 0000"},
			{968, "03 00 0100 0800 00f0ffff"},
			{1016, "05000000 00 02 0100"},
		},
	},
	{
		name: "qemu-x86",
		sys:  qemuX86System,
		size: 2372,
		layout: Layout{CPUSet: 132, MemoryRegions: 140, CacheRegions: 1132, IRQChips: 1132,
			PIORegions: 1164, PCIDevices: 1216, PCICaps: 1888, StreamIDs: 2016, End: 2016},
		bytes: []at{
			{0, "4a48535953 00 0e00 01000000"},
			{12, "0000003a00000000 0000000000000000 0000600000000000 0000000000000000"},
			{44, "f803000000000000 00000000 0200 0000 00000000 00000000 0000000000000000"},
			{76, "000000b000000000 ff 00 0000"},
			{88, "02000000 0000d9fe00000000 00100000 000000000000000000000000"},
			zeros(116, 196),
			{312, "0806 00 00 00010000 00000000 00000000"},
			zeros(328, 28), // the x86 member leaves the union's tail unused
			zeros(356, 8),
			name32(364, "QEMU-VM"),
			{404, "08000000 1f000000 00000000 01000000 0d000000 0c000000 10000000 00000000 00000000"},
			{488, "0f00000000000000"},
			{496, "0000003f00000000 0000003f00000000 0010000000000000 0100000000000000"},
			zeros(560, 64),
			{912, "0000103f00000000 0000103f00000000 0010000000000000 8100000000000000"},
			{1040, "0000000000000000 0000000000000000 0000003a00000000 0f00000000000000"},
			{1456, "0000d0fe00000000 0000d0fe00000000 0010000000000000 0300000000000000"},
			{1488, "0000c0fe00000000 00ff0000 00000000 ffffff00 00000000 00000000 00000000"},
			{1520, "0000 1f00 4000 0400 6000 0200 6400 0100 7000 0200 ce01 0300"},
			{1568, "00d0 ff00"},
			{1572, "01 00 0000 0800"},
			{1628, "01 00 0000 1000 0000feff 0000feff e0ffffff 00c0ffff 00000000 00000000"},
			{1658, "0500 0600 01 01 0500 0010 0000a9fe00000000 00000000 00 00 0000"},
			{1684, "02 00 0000 1800 00ffffff"},
			{1714, "0b00 0500 01 03 0000 0000"},
			{2188, "03 00 0000 7801 00f0ffff 00f0ffff 00000000 00000000 00000000 00000000"},
			{2218, "0000 0000 00 00 0200 0000 0000000000000000 0d000000 00 02 0100"},
			{2244, "0500 6000 0e00 0100 0000 4000 1000 0100"},
			{2316, "0180 0001 0400 0000"},
			{2364, "0180 0001 4000 0000"},
		},
	},
	{
		name: "apic-demo",
		cell: x86APICDemo,
		size: 228,
		layout: Layout{CPUSet: 132, MemoryRegions: 140, CacheRegions: 204, IRQChips: 216,
			PIORegions: 216, PCIDevices: 228, PCICaps: 228, StreamIDs: 228, End: 228},
		bytes: []at{
			{0, "4a48434c4c 00 0e00"},
			name32(8, "apic-demo"),
			{44, "00000040 08000000 02000000 01000000 00000000 03000000 00000000"},
			{100, "f803000000000000 00000000 0200 0000"},
			{132, "0800000000000000"},
			{140, "0000f03e00000000 0000000000000000 0000100000000000 4700000000000000"},
			{172, "0000000000000000 0000100000000000 0010000000000000 2300000000000000"},
			{204, "00000000 02000000 03 00 0000"},
			{216, "f802 0800 f803 0800 10e0 0800"},
		},
	},
	{
		name: "bananapi-inmate-demo",
		cell: bananapiInmateDemo,
		size: 300,
		layout: Layout{CPUSet: 132, MemoryRegions: 140, CacheRegions: 300, IRQChips: 300,
			PIORegions: 300, PCIDevices: 300, PCICaps: 300, StreamIDs: 300, End: 300},
		bytes: []at{
			{0, "4a48434c4c 01 0e00"},
			name32(8, "bananapi-inmate-demo"),
			{44, "01000000 08000000 05000000"},
			{100, "009cc20100000000 00000000 0200 0300 0d000000 17000000 6c00c20100000000"},
			{132, "0200000000000000"},
			{140, "0000c20100000000 0000c20100000000 0004000000000000 1300040000000000"},
			{172, "fc08c20100000000 fc08c20100000000 2400000000000000 1300040000000000"},
			{236, "0000fe7b00000000 0000000000000000 0000010000000000 4700000000000000"},
			{268, "0000000000000000 0000008000000000 0010000000000000 2300000000000000"},
		},
	},
	{
		name: "k3-j721e-evm-linux-demo",
		cell: k3J721ELinuxDemo,
		size: 1092,
		layout: Layout{CPUSet: 132, MemoryRegions: 140, CacheRegions: 844, IRQChips: 844,
			PIORegions: 972, PCIDevices: 972, PCICaps: 1084, StreamIDs: 1084, End: 1092},
		bytes: []at{
			{0, "4a48434c4c 02 0e00"},
			{48, "08000000 16000000 00000000 04000000 00000000 02000000 00000000 02000000 a3000000"},
			{100, "0000810200000000 00000000 0200 0300 1b000000"},
			{140, "0000e09f08000000 0000e09f08000000 0000010000000000 8100000000000000"},
			{844, "0000800100000000 00000000 20000000 08000000 80000000 00000000 00410002"},
			{940, "0000800100000000 00000000 20020000"},
			{972, "03 00 0400 0000 0000ffff"},
			{1028, "03 00 0400 0800 0000ffff"},
			{1076, "04000000 01 02 0100"},
			{1084, "03000000 03f00000"},
		},
	},
}

func (g *golden) encode(t *testing.T, rev Revision) []byte {
	t.Helper()
	var b []byte
	var err error
	if g.sys != nil {
		s := g.sys()
		s.Revision = rev
		b, err = s.MarshalBinary()
	} else {
		c := g.cell()
		c.Revision = rev
		b, err = c.MarshalBinary()
	}
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

// checkGoldenFile compares b with testdata/golden/rev<rev>/<name>.cell,
// or rewrites that file under -update.
func checkGoldenFile(t *testing.T, rev Revision, name string, b []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", fmt.Sprintf("rev%d", rev), name+".cell")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("encoding differs from %s at byte %d", path, firstDiff(b, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func checkBytes(t *testing.T, b []byte, want []at) {
	t.Helper()
	for _, w := range want {
		exp, err := hex.DecodeString(strings.ReplaceAll(w.hex, " ", ""))
		if err != nil {
			t.Fatalf("bad expectation at %d: %v", w.off, err)
		}
		end := w.off + len(exp)
		if end > len(b) {
			t.Errorf("bytes %d..%d: beyond the %d-byte encoding", w.off, end, len(b))
			continue
		}
		if got := b[w.off:end]; !bytes.Equal(got, exp) {
			t.Errorf("bytes %d..%d:\n got %x\nwant %x", w.off, end, got, exp)
		}
	}
}

// TestGolden encodes each public configuration and checks its size, the
// start of every array and hand-derived bytes, then that the committed
// golden file decodes to the same configuration and re-encodes unchanged.
func TestGolden(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			b := g.encode(t, Revision14)
			if len(b) != g.size {
				t.Errorf("encoded size %d, want %d", len(b), g.size)
			}
			var cell *Cell
			if g.sys != nil {
				s := g.sys()
				cell = &s.RootCell
				if got := SystemConfigSize(s); got != g.size {
					t.Errorf("SystemConfigSize = %d, want %d", got, g.size)
				}
			} else {
				cell = g.cell()
				if got := CellConfigSize(cell); got != g.size {
					t.Errorf("CellConfigSize = %d, want %d", got, g.size)
				}
			}
			if got := LayoutOf(cell); got != g.layout {
				t.Errorf("LayoutOf = %+v\nwant       %+v", got, g.layout)
			}
			checkBytes(t, b, g.bytes)
			checkGoldenFile(t, Revision14, g.name, b)

			if g.sys != nil {
				got, err := DecodeSystem(b)
				if err != nil {
					t.Fatalf("DecodeSystem: %v", err)
				}
				if want := g.sys(); !reflect.DeepEqual(got, want) {
					t.Errorf("DecodeSystem(encoding) differs from the literal:\n got %+v\nwant %+v", got, want)
				}
				again, err := got.MarshalBinary()
				if err != nil || !bytes.Equal(again, b) {
					t.Errorf("re-encoding the decoded system: %v, equal=%v", err, bytes.Equal(again, b))
				}
				return
			}
			got, err := DecodeCell(b)
			if err != nil {
				t.Fatalf("DecodeCell: %v", err)
			}
			if want := g.cell(); !reflect.DeepEqual(got, want) {
				t.Errorf("DecodeCell(encoding) differs from the literal:\n got %+v\nwant %+v", got, want)
			}
			again, err := got.MarshalBinary()
			if err != nil || !bytes.Equal(again, b) {
				t.Errorf("re-encoding the decoded cell: %v, equal=%v", err, bytes.Equal(again, b))
			}
		})
	}
}

// TestGoldenOlderRevisions writes every configuration as revisions 12 and
// 13, as boards running those releases need, and reads it back.
func TestGoldenOlderRevisions(t *testing.T) {
	// Hand-derived: what changes against revision 14.
	extra := map[string]map[Revision][]at{
		"qemu-arm64": {
			Revision13: {
				{0, "4a4853595354 0d00 01000000"},
				{312, "19 03 0000 0000000800000000"}, {348, "00000a0800000000"},
				zeros(356, 8), name32(364, "qemu-arm64"),
			},
			// Revision 12: the arm member {mnt_irq, gic_version, 5 bases,
			// iommu_units[8]} starts at 88 without padding; the root cell
			// moves to 354.
			Revision12: {
				{0, "4a4853595354 0c00 01000000"},
				{76, "0000e00800000000 00 01 0100"},
				{88, "19 03 0000000800000000 0000000000000000 0000000000000000 0000000000000000 00000a0800000000"},
				zeros(130, 224),
				zeros(354, 8), name32(362, "qemu-arm64"),
				{486, "ffff000000000000"},
			},
		},
		"qemu-x86": {
			Revision13: {
				{0, "4a4853595354 0d00"},
				{88, "02000000 0000d9fe00000000 00100000"},
				{312, "0806 00 00 00010000"},
			},
			// Revision 12: x86 member {pm_timer u16, vtd_limit u32,
			// apic_mode u8, pad[3], tsc u32, apic u32, iommu_units[8]}.
			Revision12: {
				{0, "4a4853595354 0c00"},
				{88, "0806 00010000 00 000000 00000000 00000000"},
				{106, "02000000 0000d9fe00000000 00100000"},
				zeros(330, 24),
				name32(362, "QEMU-VM"),
			},
		},
	}
	for _, rev := range []Revision{Revision12, Revision13} {
		for _, g := range goldens {
			t.Run(fmt.Sprintf("rev%d/%s", rev, g.name), func(t *testing.T) {
				b := g.encode(t, rev)
				b14 := g.encode(t, Revision14)
				if g.cell != nil {
					// Only bytes 0-7 differ from revision 14.
					if len(b) != g.size {
						t.Errorf("size %d, want %d", len(b), g.size)
					}
					checkBytes(t, b, []at{{0, hex.EncodeToString([]byte("JHCELL")) + fmt.Sprintf("%02x00", uint16(rev))}})
					if !bytes.Equal(b[8:], b14[8:]) {
						t.Errorf("bytes after the header differ from revision 14 at %d", 8+firstDiff(b[8:], b14[8:]))
					}
				} else {
					wantSize := g.size
					if rev == Revision12 {
						wantSize -= 2
					}
					if len(b) != wantSize {
						t.Errorf("size %d, want %d", len(b), wantSize)
					}
					root := RootCellOffset(rev)
					if !bytes.Equal(b[root:], b14[RootCellOffset(Revision14):]) {
						t.Errorf("root cell bytes differ from revision 14")
					}
				}
				checkBytes(t, b, extra[g.name][rev])
				checkGoldenFile(t, rev, g.name, b)

				if g.cell != nil {
					c, err := DecodeCell(b)
					if err != nil {
						t.Fatalf("DecodeCell: %v", err)
					}
					want := g.cell()
					want.Revision, want.Arch = rev, ArchUnknown // not in the file
					if !reflect.DeepEqual(c, want) {
						t.Errorf("decoded cell differs:\n got %+v\nwant %+v", c, want)
					}
					if again, err := c.MarshalBinary(); err != nil || !bytes.Equal(again, b) {
						t.Errorf("re-encode: %v, equal=%v", err, bytes.Equal(again, b))
					}
					return
				}
				want := g.sys()
				want.Revision, want.RootCell.Revision = rev, rev
				// DecodeSystem infers the union member; arm and arm64 share one.
				inferred := want.Arch
				if inferred != ArchX86 {
					inferred = ArchUnknown
				}
				s, err := DecodeSystem(b)
				if err != nil {
					t.Fatalf("DecodeSystem: %v", err)
				}
				if s.Arch != inferred {
					t.Errorf("inferred arch %v, want %v", s.Arch, inferred)
				}
				if again, err := s.MarshalBinary(); err != nil || !bytes.Equal(again, b) {
					t.Errorf("re-encode: %v, equal=%v", err, bytes.Equal(again, b))
				}
				// A caller that knows the architecture gets the literal back.
				s, err = DecodeSystemArch(b, want.Arch)
				if err != nil {
					t.Fatalf("DecodeSystemArch: %v", err)
				}
				if !reflect.DeepEqual(s, want) {
					t.Errorf("DecodeSystemArch differs:\n got %+v\nwant %+v", s, want)
				}
			})
		}
	}
}
