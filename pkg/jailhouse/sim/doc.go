// Package sim is a simulated Jailhouse driver and hypervisor: a
// jailhouse.Driver (and jailhouse.CellConsoler) that every test and the demo
// run against on machines without Jailhouse.
//
// It owns the simulated host: one state directory holding a JSON state file
// guarded by an flock, the sysfs tree rendered from it in the exact formats
// of /sys/devices/jailhouse, the hypervisor console ring, and one console
// stream per cell. Any number of Drivers, in any number of processes, opened
// on one directory see one host; nothing depends on the process that created
// a cell staying alive. Shared counters (gen.go), one for the host and one
// per cell, tell a Driver when a poll would answer as last time, so idle
// polls skip the transaction (poll.go), and a poll about one cell does not
// pay for other cells' changes (changes.go).
//
// Requests are checked in the order of driver/*.c and hypervisor/control.c
// at siemens/jailhouse e57d1eff with the same errnos (jailhouse-abi §1.3),
// including the driver's bugs that callers must live with: CELL_CREATE of a
// config for another architecture returns nil without creating a cell.
// Errors are *RequestError values, which are jailhouse.IoctlError plus the
// simulator's reason.
//
// Inmates are opaque payloads that run silently, or scripts (a payload whose
// first line is "#!runphi-sim") evaluated lazily against a clock, so that no
// process has to run them. Test hooks (SetCellState, FailCPU, InjectError)
// inject faults from outside.
//
// Each cell has an ivshmem console link (ivcon.go) speaking runphi's console
// protocol: the inmate's output ring, read by OpenCellConsole, and an input
// ring the returned stream writes, which scripts read with echo.
//
// It does not model memory contents, interrupts, Linux CPU hotplug or the
// ivshmem data path other than the console link. docs/simulator.md describes the on-disk layout, the
// console model and the script language.
package sim
