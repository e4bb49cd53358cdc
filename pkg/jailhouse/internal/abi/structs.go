package abi

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// Sizes and offsets of the argument structs of driver/jailhouse.h. The
// structs are not packed but carry explicit padding, so the layout is the
// same on LP64 and ARM EABI (jailhouse-abi §1.2).
const (
	// struct jailhouse_cell_create
	CellCreateSize       = 16
	cellCreateConfigAddr = 0 // u64 user VA of the config blob
	cellCreateConfigSize = 8 // u32, followed by u32 padding

	// struct jailhouse_cell_id
	CellIDSize   = 40
	cellIDID     = 0 // s32, -1 = look up by name, followed by u32 padding
	cellIDName   = 8 // char[32], NUL-terminated
	CellNameSize = 32

	// MaxCellNameLen is JAILHOUSE_CELL_ID_NAMELEN: the driver forces
	// name[31] = 0, so a longer name would silently address another cell.
	MaxCellNameLen = CellNameSize - 1

	// CellIDUnused is JAILHOUSE_CELL_ID_UNUSED: address the cell by name.
	CellIDUnused = -1

	// struct jailhouse_cell_load; the images follow the header.
	CellLoadHeaderSize = 48
	cellLoadCellID     = 0  // struct jailhouse_cell_id
	cellLoadNumImages  = 40 // u32, followed by u32 padding
	cellLoadImages     = 48 // struct jailhouse_preload_image[]

	// struct jailhouse_preload_image
	PreloadImageSize   = 32
	preloadImageSource = 0  // u64 user VA
	preloadImageSize   = 8  // u64 bytes, 0 = skip
	preloadImageTarget = 16 // u64 cell guest-physical address, followed by u64 padding
)

var le = binary.LittleEndian

// EncodeCellCreate returns struct jailhouse_cell_create for a config blob at
// user address configAddr. The blob must stay alive and unmoved until the
// ioctl returns.
func EncodeCellCreate(configAddr uint64, configSize int) ([]byte, error) {
	if configSize < 0 || uint64(configSize) > math.MaxUint32 {
		return nil, fmt.Errorf("cell config of %d bytes does not fit config_size (u32)", configSize)
	}
	b := make([]byte, CellCreateSize)
	le.PutUint64(b[cellCreateConfigAddr:], configAddr)
	le.PutUint32(b[cellCreateConfigSize:], uint32(configSize))
	return b, nil
}

// CheckCellName reports whether name can be put in struct jailhouse_cell_id
// and still address exactly that cell.
func CheckCellName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty cell name")
	case len(name) > MaxCellNameLen:
		return fmt.Errorf("cell name %q is %d bytes, longer than the %d the driver keeps", name, len(name), MaxCellNameLen)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("cell name %q contains a NUL byte", name)
	}
	return nil
}

// EncodeCellID returns struct jailhouse_cell_id addressing the cell by name
// (id JAILHOUSE_CELL_ID_UNUSED), the only safe way because ids are reused.
func EncodeCellID(name string) ([]byte, error) {
	b := make([]byte, CellIDSize)
	if err := putCellID(b, name); err != nil {
		return nil, err
	}
	return b, nil
}

func putCellID(b []byte, name string) error {
	if err := CheckCellName(name); err != nil {
		return err
	}
	id := int32(CellIDUnused)
	le.PutUint32(b[cellIDID:], uint32(id))
	copy(b[cellIDName:cellIDName+CellNameSize], name) // the rest stays NUL
	return nil
}

// PreloadImage is struct jailhouse_preload_image.
type PreloadImage struct {
	SourceAddress uint64 // user VA; must stay alive until the ioctl returns
	Size          uint64 // bytes; 0 makes the driver skip the image
	TargetAddress uint64 // cell guest-physical address
}

// EncodeCellLoad returns struct jailhouse_cell_load for the cell named name
// followed by its images. With no images it is "cell shutdown".
func EncodeCellLoad(name string, images []PreloadImage) ([]byte, error) {
	if uint64(len(images)) > math.MaxUint32 {
		return nil, fmt.Errorf("%d preload images do not fit num_preload_images (u32)", len(images))
	}
	b := make([]byte, CellLoadHeaderSize+PreloadImageSize*len(images))
	if err := putCellID(b[cellLoadCellID:cellLoadCellID+CellIDSize], name); err != nil {
		return nil, err
	}
	le.PutUint32(b[cellLoadNumImages:], uint32(len(images)))
	for i, img := range images {
		off := cellLoadImages + i*PreloadImageSize
		le.PutUint64(b[off+preloadImageSource:], img.SourceAddress)
		le.PutUint64(b[off+preloadImageSize:], img.Size)
		le.PutUint64(b[off+preloadImageTarget:], img.TargetAddress)
	}
	return b, nil
}
