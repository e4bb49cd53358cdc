package jailhouse

// Errors of driver requests. The errno alone is ambiguous (EINVAL from
// CELL_CREATE means a bad config, a revision mismatch or a disabled
// hypervisor; EBUSY means a CPU held elsewhere), so IoctlError keeps the
// errno for errors.Is and adds what the driver means by it for that request
// (jailhouse-abi §1.3). The simulator returns the same type, so both
// backends fail with the same text.

import (
	"errors"
	"fmt"
	"syscall"
)

// The request names of driver/jailhouse.h, as IoctlError.Request carries them.
const (
	RequestEnable      = "JAILHOUSE_ENABLE"
	RequestDisable     = "JAILHOUSE_DISABLE"
	RequestCellCreate  = "JAILHOUSE_CELL_CREATE"
	RequestCellLoad    = "JAILHOUSE_CELL_LOAD"
	RequestCellStart   = "JAILHOUSE_CELL_START"
	RequestCellDestroy = "JAILHOUSE_CELL_DESTROY"
	// RequestConsoleRead is the read(2) of the console ring; not an ioctl,
	// but it fails with errnos that need the same explanation.
	RequestConsoleRead = "read(console)"
)

// IoctlError is a failed driver request. It unwraps to its errno, so
// errors.Is(err, unix.EBUSY) works.
type IoctlError struct {
	Request string        // one of the Request… constants
	Cell    string        // the cell addressed or created; empty if none
	Errno   syscall.Errno // the same type as unix.Errno
}

func (e *IoctlError) Error() string {
	var target string
	if e.Cell != "" {
		target = fmt.Sprintf(" of cell %q", e.Cell)
	}
	if m := e.Meaning(); m != "" {
		return fmt.Sprintf("%s%s: %v (%s)", e.Request, target, e.Errno, m)
	}
	return fmt.Sprintf("%s%s: %v", e.Request, target, e.Errno)
}

// Unwrap returns the errno.
func (e *IoctlError) Unwrap() error { return e.Errno }

// Meaning explains the errno for the request, or returns "" when the driver
// gives it no meaning of its own.
func (e *IoctlError) Meaning() string {
	if m, ok := errnoMeanings[e.Request][e.Errno]; ok {
		return m
	}
	return commonMeanings[e.Errno]
}

// commonMeanings apply to every request: each one takes the driver's mutex
// interruptibly and copies from user memory.
var commonMeanings = map[syscall.Errno]string{
	syscall.EINTR:  "interrupted by a signal while waiting for the driver lock",
	syscall.EFAULT: "the driver could not read the argument from user memory",
}

const (
	meaningCellLookupEINVAL = "jailhouse is not enabled, or the request targets the root cell"
	meaningCellLookupENOENT = "no cell with that name exists"
)

// errnoMeanings is the per-request errno table of jailhouse-abi §1.3.
var errnoMeanings = map[string]map[syscall.Errno]string{
	RequestEnable: {
		syscall.EINVAL: "not a valid system config (signature, revision 14, architecture, empty root CPU set), " +
			"invalid hypervisor firmware, hypervisor memory not reserved with memmap=/mem=, " +
			"or an online CPU outside the root cell's CPU set",
		syscall.EBUSY:  "jailhouse is already enabled",
		syscall.ENODEV: "no usable hardware virtualization (VMX/SVM missing or disabled in the BIOS, or no HYP mode)",
		syscall.ENOENT: "hypervisor firmware not found in /lib/firmware (jailhouse.bin, jailhouse-intel.bin or jailhouse-amd.bin)",
		syscall.ENOMEM: "out of memory while setting up the root cell or the hypervisor",
		syscall.EIO:    "the hypervisor failed to initialise (see the console)",
	},
	RequestDisable: {
		syscall.EINVAL: "jailhouse is not enabled",
		syscall.EPERM:  "a cell refused to shut down (cells destroyed before it stay destroyed)",
		syscall.ENOMEM: "the hypervisor ran out of memory while destroying a cell",
		syscall.EBUSY:  "a CPU of the root cell is offline, or cells still exist",
	},
	RequestCellCreate: {
		syscall.EINVAL: "not a valid cell config, revision mismatch, or jailhouse not enabled " +
			"(also: CPU 0 assigned on x86, or a unit such as the irqchip or ivshmem rejected the config)",
		syscall.EEXIST: "a cell with that name exists",
		syscall.EBUSY: "a CPU of the cell is not owned by the root cell (in use by another cell or not in the system config), " +
			"Linux could not offline it, or an ivshmem link is already taken",
		syscall.EPERM:  "another cell is running/locked or the cell refused",
		syscall.E2BIG:  "the cell config is larger than 16 pages, or (arm) the cell id would exceed 255",
		syscall.ENOMEM: "out of memory: the kernel allocation failed or the hypervisor page pool is exhausted",
	},
	RequestCellLoad: {
		syscall.EINVAL: meaningCellLookupEINVAL + ", or an image does not fit entirely inside one WRITE|LOADABLE memory region of the cell",
		syscall.ENOENT: meaningCellLookupENOENT,
		syscall.EPERM:  "the cell refused the shutdown request",
		syscall.ENOMEM: "the hypervisor could not map the loadable regions back into the root cell",
		syscall.EBUSY:  "the image's target memory could not be mapped (ioremap failed)",
	},
	RequestCellStart: {
		syscall.EINVAL: meaningCellLookupEINVAL,
		syscall.ENOENT: meaningCellLookupENOENT,
		syscall.EPERM:  "the running cell refused the shutdown request that a restart needs",
	},
	RequestCellDestroy: {
		syscall.EINVAL: meaningCellLookupEINVAL,
		syscall.ENOENT: meaningCellLookupENOENT,
		syscall.EPERM:  "another cell is running/locked or the cell refused",
		syscall.ENOMEM: "the hypervisor ran out of memory while reconfiguring",
	},
	RequestConsoleRead: {
		syscall.EAGAIN: "jailhouse is not enabled, so there is no console to read",
		syscall.EPERM:  "the system config lacks the virtual debug console flag (JAILHOUSE_SYS_VIRTUAL_DEBUG_CONSOLE)",
	},
}

// ErrCellNotCreated means CELL_CREATE returned 0 but no cell of that name
// exists. The driver at e57d1eff does this when the config's architecture
// differs from the hypervisor's: it only logs "Configuration architecture
// mismatch" (jailhouse-abi §1.3 step 5).
var ErrCellNotCreated = errors.New("the driver reported success but created no cell " +
	"(most likely the cell config's architecture does not match the hypervisor's)")
