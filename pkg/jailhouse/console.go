package jailhouse

// The text of the hypervisor console ring (jailhouse-abi §1.4 and §9). The
// ring interleaves the hypervisor's printk lines with every cell's putc
// output and carries no cell tag, so a reader that wants the inmate's text
// recognises the hypervisor's lines by their format. The formats below are
// the printk formats of siemens/jailhouse e57d1eff (hypervisor/setup.c,
// control.c, paging.c, pci.c, ivshmem.c); the Msg… functions render them for
// the simulator, and IsHypervisorMessage recognises them, so the two cannot
// drift apart.

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// ParseMissedLine recognises the line the driver returns instead of data when
// a reader fell more than a ring's worth (2048 bytes) behind:
// "<missed N bytes of console log>\n". It returns N. The trailing newline is
// optional, because the driver truncates the line to the reader's buffer.
func ParseMissedLine(line string) (missed uint64, ok bool) {
	line = strings.TrimSuffix(line, "\n")
	rest, found := strings.CutPrefix(line, "<missed ")
	if !found {
		return 0, false
	}
	num, found := strings.CutSuffix(rest, " bytes of console log>")
	if !found {
		return 0, false
	}
	// The driver prints an unsigned int (%u): plain decimal digits.
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || num[0] == '+' {
		return 0, false
	}
	return n, true
}

// MissedLine renders the driver's "missed" line for n skipped bytes.
func MissedLine(n uint32) string {
	return fmt.Sprintf("<missed %d bytes of console log>\n", n)
}

// The hypervisor lines, each with its trailing newline.

// MsgInitializing is the first line of an enable; the hypervisor prints it
// after an empty line. version looks like "v0.12 (5-gabcdef0)".
func MsgInitializing(version string, cpu int) string {
	return fmt.Sprintf("\nInitializing Jailhouse hypervisor %s on CPU %d\n", version, cpu)
}

// MsgCodeLocation renders "Code location: %p" as a 64-bit hypervisor prints
// it: 16 zero-padded hex digits.
func MsgCodeLocation(addr uint64) string {
	return fmt.Sprintf("Code location: 0x%016x\n", addr)
}

// Page pool moments of MsgPagePoolUsage.
const (
	PoolAfterEarlySetup      = "after early setup"
	PoolAfterLateSetup       = "after late setup"
	PoolAfterCellCreation    = "after cell creation"
	PoolAfterCellDestruction = "after cell destruction"
)

// MsgPagePoolUsage renders the page pool statistics the hypervisor prints at
// the moment when (one of the Pool… constants).
func MsgPagePoolUsage(when string, memUsed, memPages, remapUsed, remapPages int64) string {
	return fmt.Sprintf("Page pool usage %s: mem %d/%d, remap %d/%d\n", when, memUsed, memPages, remapUsed, remapPages)
}

// MsgInitializingProcessors precedes one MsgCPUOK line per CPU.
const MsgInitializingProcessors = "Initializing processors:\n"

// MsgCPUOK is the per-CPU line of an enable (arm and arm64 form, without the
// "(APIC ID n) " that x86 adds).
func MsgCPUOK(cpu int) string {
	return fmt.Sprintf(" CPU %d... OK\n", cpu)
}

// MsgInitializingUnit names one hypervisor unit ("irqchip", "PCI", …).
func MsgInitializingUnit(unit string) string {
	return fmt.Sprintf("Initializing unit: %s\n", unit)
}

// MsgAddingVirtualPCIDevice is printed for each ivshmem device of a cell;
// bdf is the device's bus/device/function as in jailhouse_pci_device.bdf.
func MsgAddingVirtualPCIDevice(bdf uint16, cell string) string {
	return fmt.Sprintf("Adding virtual PCI device %s to cell \"%s\"\n", FormatBDF(bdf), cell)
}

// FormatBDF prints a jailhouse_pci_device.bdf as lspci and the driver do:
// bus:device.function in hex, "00:02.0".
func FormatBDF(bdf uint16) string {
	return fmt.Sprintf("%02x:%02x.%x", bdf>>8, (bdf>>3)&0x1f, bdf&7)
}

// MsgSharedMemoryEstablished follows MsgAddingVirtualPCIDevice when the
// second peer of an ivshmem link appears; peers are the other cells.
func MsgSharedMemoryEstablished(peers ...string) string {
	var b strings.Builder
	b.WriteString("Shared memory connection established, peer cells:\n")
	for _, p := range peers {
		fmt.Fprintf(&b, " \"%s\"\n", p)
	}
	return b.String()
}

// Lines of enable, disable and the cell requests.
const (
	MsgActivating   = "Activating hypervisor\n"
	MsgShuttingDown = "Shutting down hypervisor\n"
)

// MsgReleasingCPU is printed by each CPU on disable.
func MsgReleasingCPU(cpu int) string { return fmt.Sprintf(" Releasing CPU %d\n", cpu) }

// MsgCreatedCell is printed on CELL_CREATE, before the page pool usage.
func MsgCreatedCell(name string) string { return fmt.Sprintf("Created cell \"%s\"\n", name) }

// MsgCellLoadable is printed when CELL_LOAD makes a cell loadable.
func MsgCellLoadable(name string) string { return fmt.Sprintf("Cell \"%s\" can be loaded\n", name) }

// MsgStartedCell is printed on CELL_START.
func MsgStartedCell(name string) string { return fmt.Sprintf("Started cell \"%s\"\n", name) }

// MsgClosingCell is printed on CELL_DESTROY, before the page pool usage.
func MsgClosingCell(name string) string { return fmt.Sprintf("Closing cell \"%s\"\n", name) }

// The hypervisor prints names raw between quotes ("\"%s\""), without
// escaping, so the patterns accept any text between the quotes.
const (
	reName = `".*"`
	reBDF  = `[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]`
)

// hypervisorLines are the printk formats of the hypervisor, anchored, one
// per line. Only lines that occur in normal operation or report a fault are
// listed; register dumps after a FATAL line are not. It is compiled on first
// use, not at init: compiling takes about 0.25 ms and 220 KB, which every
// start of the shim (twice: `start` and the server) and of the CLI would pay
// whether or not it reads a console.
var hypervisorLines = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(hypervisorLinesPattern) })

var hypervisorLinesPattern = `^(?:` + strings.Join([]string{
	// Enable (hypervisor/setup.c, paging.c)
	`Initializing Jailhouse hypervisor .* on CPU \d+`,
	`Code location: 0x[0-9a-f]+`,
	`Page pool usage after [a-z ]+: mem \d+/\d+, remap \d+/\d+`,
	`Initializing processors:`,
	` CPU \d+\.\.\. (?:\(APIC ID \d+\) )?(?:OK|FAILED)`,
	`Initializing unit: .+`,
	`Activating hypervisor`,
	`Using x2?APIC`,
	`Using SDEI-based management interrupt`,
	`(?:DMAR unit|AMD IOMMU) @0x[0-9a-f]+/0x[0-9a-f]+`,
	// PCI and ivshmem (pci.c, ivshmem.c)
	`Adding (?:virtual )?PCI device ` + reBDF + ` to cell ` + reName,
	`Removing PCI device ` + reBDF + ` from cell ` + reName,
	`(?:Reserving|Freeing) \d+ interrupt\(s\) for device ` + reBDF + ` at index \d+`,
	`Shared memory connection established, peer cells:`,
	` ` + reName, // one peer of the line above
	// Cell requests (control.c)
	`Created cell ` + reName,
	`Cell ` + reName + ` can be loaded`,
	`Started cell ` + reName,
	`Closing cell ` + reName,
	`Timeout expired while waiting for reply from target cell`,
	`(?:Parking|Stopping) CPU \d+ \(Cell: ` + reName + `\)`,
	`Ignoring NMI IPI to CPU \d+`,
	`CAT: .*`,
	// Disable
	`Shutting down hypervisor`,
	` Releasing CPU \d+`,
	// Faults, warnings and trace_error() of a CONFIG_TRACE_ERROR build
	`FATAL: .*`,
	`WARNING?: .*`,
	`[\w/.-]+\.c:\d+: returning error -?E[A-Z0-9]+`,
}, "|") + `)$`

// IsHypervisorMessage reports whether line (with or without its trailing
// newline) is one the hypervisor prints, as opposed to output of a cell.
// Empty lines are not: the hypervisor prints one before "Initializing
// Jailhouse hypervisor", but so do inmates. The driver's "missed" line is
// not a hypervisor message either; see ParseMissedLine.
func IsHypervisorMessage(line string) bool {
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return false
	}
	return hypervisorLines().MatchString(line)
}
