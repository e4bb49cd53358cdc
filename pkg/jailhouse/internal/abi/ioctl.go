package abi

import "unsafe"

// The asm-generic ioctl encoding used by x86, arm and arm64
// (include/uapi/asm-generic/ioctl.h): dir<<30 | size<<16 | type<<8 | nr.
const (
	iocNone  = 0
	iocWrite = 1

	iocNRShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30

	iocSizeMask = 1<<14 - 1

	// jailhouseType is the ioctl "magic" of every Jailhouse request.
	jailhouseType = 0
)

// ioc computes an ioctl request number. size must fit the 14-bit field.
func ioc(dir, typ, nr, size uint32) uint32 {
	return dir<<iocDirShift | (size&iocSizeMask)<<iocSizeShift | typ<<iocTypeShift | nr<<iocNRShift
}

// HostPointerSize is sizeof(void *) for the GOARCH being built; it is the
// size encoded in JAILHOUSE_ENABLE.
const HostPointerSize = int(unsafe.Sizeof(uintptr(0)))

// Request is one ioctl of /dev/jailhouse.
type Request int

// The requests of driver/jailhouse.h, in the order of their nr.
const (
	Enable      Request = iota // _IOW(0, 0, void *)
	Disable                    // _IO(0, 1)
	CellCreate                 // _IOW(0, 2, struct jailhouse_cell_create)
	CellLoad                   // _IOW(0, 3, struct jailhouse_cell_load)
	CellStart                  // _IOW(0, 4, struct jailhouse_cell_id)
	CellDestroy                // _IOW(0, 5, struct jailhouse_cell_id)
)

var requestNames = [...]string{
	Enable:      "JAILHOUSE_ENABLE",
	Disable:     "JAILHOUSE_DISABLE",
	CellCreate:  "JAILHOUSE_CELL_CREATE",
	CellLoad:    "JAILHOUSE_CELL_LOAD",
	CellStart:   "JAILHOUSE_CELL_START",
	CellDestroy: "JAILHOUSE_CELL_DESTROY",
}

// String returns the macro name of the request, as perror in the jailhouse
// CLI prints it.
func (r Request) String() string {
	if r >= 0 && int(r) < len(requestNames) {
		return requestNames[r]
	}
	return "JAILHOUSE_UNKNOWN_REQUEST"
}

// NumberFor returns the request number for a process whose pointers are
// pointerSize bytes wide (8 on arm64 and x86_64, 4 on 32-bit arm). Only
// JAILHOUSE_ENABLE depends on it; the sizes of the other argument structs
// are the same in both ABIs (jailhouse-abi §1.1).
func (r Request) NumberFor(pointerSize int) uint32 {
	nr := uint32(r)
	switch r {
	case Enable:
		return ioc(iocWrite, jailhouseType, nr, uint32(pointerSize))
	case Disable:
		return ioc(iocNone, jailhouseType, nr, 0)
	case CellCreate:
		return ioc(iocWrite, jailhouseType, nr, CellCreateSize)
	case CellLoad:
		// The size is that of the header; the images follow it as a
		// flexible array member.
		return ioc(iocWrite, jailhouseType, nr, CellLoadHeaderSize)
	case CellStart, CellDestroy:
		return ioc(iocWrite, jailhouseType, nr, CellIDSize)
	}
	panic("abi: unknown jailhouse request")
}

// Number returns the request number for the GOARCH being built.
func (r Request) Number() uint32 {
	return r.NumberFor(HostPointerSize)
}
