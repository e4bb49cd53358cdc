package abi

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// TestRequestNumbers checks the encoding against the table of jailhouse-abi
// §1.1 for every supported architecture, not only the host's.
func TestRequestNumbers(t *testing.T) {
	archs := []struct {
		name        string
		pointerSize int
		want        map[Request]uint32
	}{
		{"arm64", 8, map[Request]uint32{
			Enable: 0x40080000, Disable: 0x00000001, CellCreate: 0x40100002,
			CellLoad: 0x40300003, CellStart: 0x40280004, CellDestroy: 0x40280005,
		}},
		{"x86_64", 8, map[Request]uint32{
			Enable: 0x40080000, Disable: 0x00000001, CellCreate: 0x40100002,
			CellLoad: 0x40300003, CellStart: 0x40280004, CellDestroy: 0x40280005,
		}},
		{"arm", 4, map[Request]uint32{
			Enable: 0x40040000, Disable: 0x00000001, CellCreate: 0x40100002,
			CellLoad: 0x40300003, CellStart: 0x40280004, CellDestroy: 0x40280005,
		}},
	}
	for _, arch := range archs {
		for req, want := range arch.want {
			t.Run(arch.name+"/"+req.String(), func(t *testing.T) {
				if got := req.NumberFor(arch.pointerSize); got != want {
					t.Errorf("%s on %s = %#08x, want %#08x", req, arch.name, got, want)
				}
			})
		}
	}
}

func TestHostRequestNumber(t *testing.T) {
	want := uint32(0x40080000)
	if HostPointerSize == 4 {
		want = 0x40040000
	}
	if got := Enable.Number(); got != want {
		t.Errorf("Enable.Number() = %#x with %d-byte pointers, want %#x", got, HostPointerSize, want)
	}
}

func TestRequestString(t *testing.T) {
	// IoctlError messages and perror in the jailhouse CLI use these names.
	for req, want := range map[Request]string{
		Enable: "JAILHOUSE_ENABLE", Disable: "JAILHOUSE_DISABLE",
		CellCreate: "JAILHOUSE_CELL_CREATE", CellLoad: "JAILHOUSE_CELL_LOAD",
		CellStart: "JAILHOUSE_CELL_START", CellDestroy: "JAILHOUSE_CELL_DESTROY",
		Request(42): "JAILHOUSE_UNKNOWN_REQUEST",
	} {
		if got := req.String(); got != want {
			t.Errorf("Request(%d).String() = %q, want %q", int(req), got, want)
		}
	}
}

func TestEncodeCellCreate(t *testing.T) {
	b, err := EncodeCellCreate(0x0000_7fff_1234_5678, 0x2a8)
	if err != nil {
		t.Fatal(err)
	}
	// jailhouse-abi §1.2: u64 config_address @0, u32 config_size @8,
	// u32 padding @12, 16 bytes.
	want := []byte{
		0x78, 0x56, 0x34, 0x12, 0xff, 0x7f, 0, 0,
		0xa8, 0x02, 0, 0,
		0, 0, 0, 0,
	}
	if !bytes.Equal(b, want) {
		t.Errorf("EncodeCellCreate = % x, want % x", b, want)
	}
	if _, err := EncodeCellCreate(0, -1); err == nil {
		t.Error("EncodeCellCreate accepted a negative size")
	}
}

func TestEncodeCellID(t *testing.T) {
	b, err := EncodeCellID("linux-demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 40 {
		t.Fatalf("len = %d, want 40", len(b))
	}
	// s32 id @0 = -1, u32 padding @4, char name[32] @8.
	if id := int32(binary.LittleEndian.Uint32(b[0:])); id != -1 {
		t.Errorf("id = %d, want -1 (look up by name)", id)
	}
	if pad := binary.LittleEndian.Uint32(b[4:]); pad != 0 {
		t.Errorf("padding = %#x, want 0", pad)
	}
	wantName := append([]byte("linux-demo"), make([]byte, 32-len("linux-demo"))...)
	if !bytes.Equal(b[8:40], wantName) {
		t.Errorf("name = %q, want %q NUL padded", b[8:40], wantName)
	}
}

func TestCheckCellName(t *testing.T) {
	tests := []struct {
		name    string
		cell    string
		wantErr string
	}{
		{"ordinary name", "inmate-1", ""},
		{"31 bytes is the limit", strings.Repeat("a", 31), ""},
		{"32 bytes would be truncated by the driver", strings.Repeat("a", 32), "longer than the 31"},
		{"empty", "", "empty cell name"},
		{"embedded NUL would address another cell", "a\x00b", "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCellName(tt.cell)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckCellName(%q) = %v", tt.cell, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckCellName(%q) = %v, want an error containing %q", tt.cell, err, tt.wantErr)
			}
			if _, err := EncodeCellID(tt.cell); err == nil {
				t.Errorf("EncodeCellID(%q) accepted it", tt.cell)
			}
			if _, err := EncodeCellLoad(tt.cell, nil); err == nil {
				t.Errorf("EncodeCellLoad(%q) accepted it", tt.cell)
			}
		})
	}
}

func TestEncodeCellLoad(t *testing.T) {
	tests := []struct {
		name   string
		images []PreloadImage
	}{
		{"no images is cell shutdown", nil},
		{"one image", []PreloadImage{{SourceAddress: 0xc000100000, Size: 0x1234, TargetAddress: 0}}},
		{"two images", []PreloadImage{
			{SourceAddress: 0x1000, Size: 0x20, TargetAddress: 0x70000000},
			{SourceAddress: 0xffff_0000_0000_2000, Size: 9, TargetAddress: 0x1000},
		}},
	}
	le := binary.LittleEndian
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeCellLoad("cell", tt.images)
			if err != nil {
				t.Fatal(err)
			}
			// 48-byte header + 32 bytes per image.
			if want := 48 + 32*len(tt.images); len(b) != want {
				t.Fatalf("len = %d, want %d", len(b), want)
			}
			wantID, _ := EncodeCellID("cell")
			if !bytes.Equal(b[0:40], wantID) {
				t.Errorf("cell_id = % x, want % x", b[0:40], wantID)
			}
			if n := le.Uint32(b[40:]); n != uint32(len(tt.images)) {
				t.Errorf("num_preload_images = %d, want %d", n, len(tt.images))
			}
			if pad := le.Uint32(b[44:]); pad != 0 {
				t.Errorf("header padding = %#x, want 0", pad)
			}
			for i, img := range tt.images {
				off := 48 + 32*i
				got := PreloadImage{
					SourceAddress: le.Uint64(b[off:]),
					Size:          le.Uint64(b[off+8:]),
					TargetAddress: le.Uint64(b[off+16:]),
				}
				if got != img {
					t.Errorf("image %d = %+v, want %+v", i, got, img)
				}
				if pad := le.Uint64(b[off+24:]); pad != 0 {
					t.Errorf("image %d padding = %#x, want 0", i, pad)
				}
			}
		})
	}
}
