package abi

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"
)

// The fork's structs as Go lays them out with the same field types: the
// offsets must match the ones the encoder writes, on every pointer width.
type forkCellLoad64 struct {
	CellID           [CellIDSize]byte
	NumPreloadImages uint32
	NumRCPUImages    uint32
	RCPUImage        uint64
	// image[] follows
}

type forkCellLoad32 struct {
	CellID           [CellIDSize]byte
	NumPreloadImages uint32
	NumRCPUImages    uint32
	RCPUImage        uint32
	_                uint32 // the padding before the 8-byte-aligned image[]
}

type forkRCPUImage struct {
	RCPUID  uint32
	Padding uint32
	Name    [RCPUImageNameMaxLen + 1]byte
}

func TestOmnivisorLayout(t *testing.T) {
	var l64 forkCellLoad64
	var l32 forkCellLoad32
	var r forkRCPUImage
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(cell_load) arm64", unsafe.Sizeof(l64), OmnivisorCellLoadHeaderSize},
		{"sizeof(cell_load) arm", unsafe.Sizeof(l32), OmnivisorCellLoadHeaderSize},
		{"num_rcpu_images", unsafe.Offsetof(l64.NumRCPUImages), omnivisorNumRCPUImages},
		{"rcpu_image arm64", unsafe.Offsetof(l64.RCPUImage), omnivisorRCPUImagePtr},
		{"rcpu_image arm", unsafe.Offsetof(l32.RCPUImage), omnivisorRCPUImagePtr},
		{"sizeof(preload_rcpu_image)", unsafe.Sizeof(r), RCPUImageSize},
		{"rcpu_id", unsafe.Offsetof(r.RCPUID), rcpuImageID},
		{"name", unsafe.Offsetof(r.Name), rcpuImageName},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if OmnivisorCellLoadNumber != 0x40380003 {
		t.Errorf("fork CELL_LOAD = %#x, want 0x40380003 (_IOW(0, 3, 56))", OmnivisorCellLoadNumber)
	}
	if up := CellLoad.NumberFor(8); up == OmnivisorCellLoadNumber {
		t.Error("the fork's CELL_LOAD number equals upstream's: a fork driver would take upstream's struct")
	}
}

func TestEncodeOmnivisorCellLoad(t *testing.T) {
	img := []PreloadImage{{SourceAddress: 0x1000, Size: 0x20, TargetAddress: 0xffe00000}}
	for _, ptr := range []int{8, 4} {
		b, err := EncodeOmnivisorCellLoad("r5", 2, 0xcafe0000, img, ptr)
		if err != nil {
			t.Fatal(err)
		}
		le := binary.LittleEndian
		if len(b) != 56+32 || le.Uint32(b[40:]) != 1 || le.Uint32(b[44:]) != 2 || le.Uint32(b[48:]) != 0xcafe0000 ||
			le.Uint64(b[56+16:]) != 0xffe00000 || int32(le.Uint32(b[0:])) != -1 || !bytes.HasPrefix(b[8:], []byte("r5\x00")) {
			t.Errorf("pointer size %d: % x", ptr, b)
		}
		if ptr == 4 && le.Uint32(b[52:]) != 0 {
			t.Error("32-bit: padding after the pointer is not zero")
		}
	}
	if _, err := EncodeOmnivisorCellLoad("r5", 0, 1<<40, nil, 4); err == nil {
		t.Error("a 40-bit address in a 32-bit pointer did not fail")
	}
	rc, err := EncodeRCPUImages([]RCPUImage{{RCPUID: 1, Name: "rpu1-demo.elf"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rc) != 40 || binary.LittleEndian.Uint32(rc) != 1 || !bytes.Equal(rc[8:22], []byte("rpu1-demo.elf\x00")) {
		t.Errorf("rcpu image % x", rc)
	}
	if _, err := EncodeRCPUImages([]RCPUImage{{Name: "a-firmware-name-longer-than-31-bytes.elf"}}); err == nil {
		t.Error("a 40-byte firmware name did not fail")
	}
}
