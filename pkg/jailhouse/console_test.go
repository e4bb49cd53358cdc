package jailhouse

import (
	"strings"
	"testing"
)

func TestParseMissedLine(t *testing.T) {
	tests := []struct {
		name   string
		line   string
		want   uint64
		wantOK bool
	}{
		{"driver line", "<missed 188 bytes of console log>\n", 188, true},
		{"truncated to the buffer, no newline", "<missed 4096 bytes of console log>", 4096, true},
		{"rendered by MissedLine", MissedLine(2049), 2049, true},
		{"inmate text", "hello world\n", 0, false},
		{"missing count", "<missed  bytes of console log>\n", 0, false},
		{"signed count", "<missed +5 bytes of console log>\n", 0, false},
		{"negative count", "<missed -5 bytes of console log>\n", 0, false},
		{"count beyond %u", "<missed 4294967296 bytes of console log>\n", 0, false},
		{"cut short by a small read buffer", "<missed 188 bytes of con", 0, false},
		{"text after the marker", "<missed 1 bytes of console log> and more\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseMissedLine(tt.line)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ParseMissedLine(%q) = %d, %v; want %d, %v", tt.line, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestHypervisorMessageFormats(t *testing.T) {
	// The exact text the simulator emits must be what the hypervisor prints.
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"initializing", MsgInitializing("v0.12 (5-gabcdef0)", 0), "\nInitializing Jailhouse hypervisor v0.12 (5-gabcdef0) on CPU 0\n"},
		{"code location", MsgCodeLocation(0xffffc0200800), "Code location: 0x0000ffffc0200800\n"},
		{"page pool", MsgPagePoolUsage(PoolAfterCellCreation, 39, 994, 0, 131072), "Page pool usage after cell creation: mem 39/994, remap 0/131072\n"},
		{"cpu ok", MsgCPUOK(3), " CPU 3... OK\n"},
		{"unit", MsgInitializingUnit("irqchip"), "Initializing unit: irqchip\n"},
		{"virtual pci", MsgAddingVirtualPCIDevice(0x0008, "inmate"), "Adding virtual PCI device 00:01.0 to cell \"inmate\"\n"},
		{"virtual pci bus", MsgAddingVirtualPCIDevice(0x0113, "x"), "Adding virtual PCI device 01:02.3 to cell \"x\"\n"},
		{"shared memory", MsgSharedMemoryEstablished("qemu-arm64"), "Shared memory connection established, peer cells:\n \"qemu-arm64\"\n"},
		{"created", MsgCreatedCell("demo"), "Created cell \"demo\"\n"},
		{"loadable", MsgCellLoadable("demo"), "Cell \"demo\" can be loaded\n"},
		{"started", MsgStartedCell("demo"), "Started cell \"demo\"\n"},
		{"closing", MsgClosingCell("demo"), "Closing cell \"demo\"\n"},
		{"names are not escaped", MsgCreatedCell(`a"b`), "Created cell \"a\"b\"\n"},
		{"releasing", MsgReleasingCPU(1), " Releasing CPU 1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

func TestIsHypervisorMessage(t *testing.T) {
	// Everything a typical session prints (jailhouse-abi §9), as rendered
	// by the Msg helpers, line by line.
	session := MsgInitializing("v0.12 (5-gabcdef0)", 0) +
		MsgCodeLocation(0xffffc0200800) +
		MsgPagePoolUsage(PoolAfterEarlySetup, 39, 994, 0, 131072) +
		MsgInitializingProcessors + MsgCPUOK(0) + MsgCPUOK(1) +
		MsgInitializingUnit("irqchip") + MsgInitializingUnit("PCI") +
		MsgAddingVirtualPCIDevice(0x0008, "qemu-arm64") +
		MsgPagePoolUsage(PoolAfterLateSetup, 45, 994, 2, 131072) +
		MsgActivating +
		MsgAddingVirtualPCIDevice(0x0008, "inmate") +
		MsgSharedMemoryEstablished("qemu-arm64") +
		MsgCreatedCell("inmate") +
		MsgPagePoolUsage(PoolAfterCellCreation, 60, 994, 2, 131072) +
		MsgCellLoadable("inmate") + MsgStartedCell("inmate") + MsgClosingCell("inmate") +
		MsgPagePoolUsage(PoolAfterCellDestruction, 45, 994, 2, 131072) +
		MsgShuttingDown + MsgReleasingCPU(1) + MsgReleasingCPU(0)
	for _, line := range strings.SplitAfter(session, "\n") {
		if line == "\n" || line == "" {
			continue // the empty line before "Initializing"
		}
		if !IsHypervisorMessage(line) {
			t.Errorf("IsHypervisorMessage(%q) = false, want true", line)
		}
	}

	tests := []struct {
		name string
		line string
		want bool
	}{
		{"x86 cpu line", " CPU 2... (APIC ID 4) OK", true},
		{"failed cpu", " CPU 1... FAILED\n", true},
		{"physical pci device", "Adding PCI device 00:1f.3 to cell \"RootCell\"", true},
		{"removing pci device", "Removing PCI device 00:02.0 from cell \"RootCell\"", true},
		{"interrupt reservation", "Reserving 120 interrupt(s) for device f0:1f.0 at index 0", true},
		{"fatal", "FATAL: Invalid MMIO/RAM read, addr: 0x70000000 size: 4", true},
		{"warning", "WARNING: Failed to re-assign memory region", true},
		{"parking", "Parking CPU 2 (Cell: \"inmate\")", true},
		{"trace_error", "ivshmem.c:407: returning error -EINVAL", true},
		{"crlf", "Started cell \"demo\"\r\n", true},
		{"empty line", "\n", false},
		{"inmate output", "Hello from the inmate\n", false},
		{"inmate that mentions a cell", "I started cell demo", false},
		{"missed marker is the driver's", "<missed 12 bytes of console log>\n", false},
		{"linux boot line", "[    0.000000] Booting Linux on physical CPU 0x2", false},
		{"prefix only", "Created cell", false},
		{"trailing text", "Started cell \"demo\" now", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsHypervisorMessage(tt.line); got != tt.want {
				t.Errorf("IsHypervisorMessage(%q) = %v, want %v", tt.line, got, tt.want)
			}
		})
	}
}
