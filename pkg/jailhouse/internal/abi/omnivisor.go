package abi

import (
	"fmt"
	"math"
	"strings"
)

// The Omnivisor fork's CELL_LOAD (DanieleOttaviano/jailhouse 628a02d8,
// driver/jailhouse.h): struct jailhouse_cell_load gains the Cortex-R5
// ("rCPU") images that remoteproc loads from /lib/firmware, between the
// image count and the images:
//
//	struct jailhouse_cell_load {
//		struct jailhouse_cell_id cell_id;                 //  0
//		__u32 num_preload_images;                         // 40
//		__u32 num_rcpu_images;                            // 44 (upstream: padding)
//		struct jailhouse_preload_rcpu_image *rcpu_image;  // 48, a user pointer
//		struct jailhouse_preload_image image[];           // 56
//	};
//	struct jailhouse_preload_rcpu_image {
//		__u32 rcpu_id;                                    //  0
//		__u32 padding;                                    //  4
//		char name[JAILHOUSE_RCPU_IMAGE_NAMELEN + 1];      //  8, 32 bytes
//	};
//
// The pointer is 8 bytes on arm64 and 4 on 32-bit arm, where the compiler
// pads to the 8-byte alignment of image[], so the header is 56 bytes on
// both. The request number changes with the size:
// _IOW(0, 3, 56) = 0x40380003. Nothing runs these on hardware yet
// (docs/payloads.md); the layout is pinned by tests.
const (
	OmnivisorCellLoadHeaderSize = 56
	omnivisorNumRCPUImages      = 44 // u32
	omnivisorRCPUImagePtr       = 48 // user pointer, 4 or 8 bytes
	omnivisorImages             = 56

	RCPUImageSize       = 40
	rcpuImageID         = 0 // u32, then u32 padding
	rcpuImageName       = 8 // char[32], NUL-terminated
	RCPUImageNameMaxLen = 31
)

// OmnivisorCellLoadNumber is the fork's JAILHOUSE_CELL_LOAD request number.
var OmnivisorCellLoadNumber = ioc(iocWrite, jailhouseType, uint32(CellLoad), OmnivisorCellLoadHeaderSize)

// RCPUImage is struct jailhouse_preload_rcpu_image: a firmware file name
// (in /lib/firmware) for one Cortex-R5 of the cell.
type RCPUImage struct {
	RCPUID uint32
	Name   string
}

// EncodeRCPUImages returns the array the rcpu_image pointer points to.
func EncodeRCPUImages(images []RCPUImage) ([]byte, error) {
	b := make([]byte, RCPUImageSize*len(images))
	for i, img := range images {
		if img.Name == "" || len(img.Name) > RCPUImageNameMaxLen || strings.IndexByte(img.Name, 0) >= 0 {
			return nil, fmt.Errorf("rCPU image %d: firmware name %q must be 1 to %d bytes without NUL", i, img.Name, RCPUImageNameMaxLen)
		}
		off := i * RCPUImageSize
		le.PutUint32(b[off+rcpuImageID:], img.RCPUID)
		copy(b[off+rcpuImageName:off+rcpuImageName+RCPUImageNameMaxLen], img.Name)
	}
	return b, nil
}

// EncodeOmnivisorCellLoad returns the fork's struct jailhouse_cell_load for
// the cell named name: rcpuImagesAddr is the user address of the
// EncodeRCPUImages array (kept alive and unmoved until the ioctl returns),
// pointerSize the caller's sizeof(void *) (4 or 8).
func EncodeOmnivisorCellLoad(name string, rcpuImages int, rcpuImagesAddr uint64, images []PreloadImage, pointerSize int) ([]byte, error) {
	if pointerSize != 4 && pointerSize != 8 {
		return nil, fmt.Errorf("pointer size %d, want 4 or 8", pointerSize)
	}
	if pointerSize == 4 && rcpuImagesAddr > math.MaxUint32 {
		return nil, fmt.Errorf("rcpu_image address %#x does not fit a 32-bit pointer", rcpuImagesAddr)
	}
	if uint64(len(images)) > math.MaxUint32 || rcpuImages < 0 || uint64(rcpuImages) > math.MaxUint32 {
		return nil, fmt.Errorf("%d images and %d rCPU images do not fit their u32 counts", len(images), rcpuImages)
	}
	b := make([]byte, OmnivisorCellLoadHeaderSize+PreloadImageSize*len(images))
	if err := putCellID(b[cellLoadCellID:cellLoadCellID+CellIDSize], name); err != nil {
		return nil, err
	}
	le.PutUint32(b[cellLoadNumImages:], uint32(len(images)))
	le.PutUint32(b[omnivisorNumRCPUImages:], uint32(rcpuImages))
	if pointerSize == 8 {
		le.PutUint64(b[omnivisorRCPUImagePtr:], rcpuImagesAddr)
	} else {
		le.PutUint32(b[omnivisorRCPUImagePtr:], uint32(rcpuImagesAddr))
	}
	for i, img := range images {
		off := omnivisorImages + i*PreloadImageSize
		le.PutUint64(b[off+preloadImageSource:], img.SourceAddress)
		le.PutUint64(b[off+preloadImageSize:], img.Size)
		le.PutUint64(b[off+preloadImageTarget:], img.TargetAddress)
	}
	return b, nil
}
