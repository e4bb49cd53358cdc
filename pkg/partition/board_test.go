package partition

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

func mustBoard(t *testing.T) *Board {
	t.Helper()
	b, err := LoadBoard("qemu-arm64")
	if err != nil {
		t.Fatalf("LoadBoard(qemu-arm64): %v", err)
	}
	return b
}

func TestBuiltinQEMUProfile(t *testing.T) {
	b := mustBoard(t)
	if b.Arch != jailhouse.ArchARM64 || b.Revision != jailhouse.Revision14 {
		t.Errorf("arch/revision = %v/%v, want arm64/14", b.Arch, b.Revision)
	}
	if got := jailhouse.FormatCPUList(b.PartitionCPUs); got != "2-15" {
		t.Errorf("partition CPUs = %s, want 2-15", got)
	}
	if b.Pool != (Range{0x70000000, 0x7f800000}) {
		t.Errorf("pool = %s", b.Pool)
	}
	if b.ConsoleSPI != 33 || b.VPCIIRQBase != 108 || b.CommRegion != 0x80000000 || b.CPUResetAddress != 0 {
		t.Errorf("spi %d vpci %d comm %#x reset %#x", b.ConsoleSPI, b.VPCIIRQBase, b.CommRegion, b.CPUResetAddress)
	}
	want := jailhouse.Console{Address: 0x09000000, Size: 0x1000, Type: jailhouse.ConsolePL011,
		Flags: jailhouse.ConsoleAccessMMIO | jailhouse.ConsoleRegDist4}
	if b.Console != want {
		t.Errorf("console = %+v, want %+v", b.Console, want)
	}
	if got := jailhouse.FormatCPUList(b.RootCPUs()); got != "0-15" {
		t.Errorf("root CPUs = %s, want 0-15", got)
	}
}

// The system config is what the simulator (and a real board) is enabled
// with: it must encode to upstream's qemu-arm64.cell size (1024 bytes, 12
// regions, 1 irqchip, 2 PCI devices) and decode back to the same values.
func TestSystemConfigEncodesLikeUpstream(t *testing.T) {
	b := mustBoard(t)
	sys := b.SystemConfig()
	data, err := sys.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	if len(data) != 1024 {
		t.Errorf("system config is %d bytes, want 1024 (upstream qemu-arm64.cell)", len(data))
	}
	got, err := jailhouse.DecodeSystem(data)
	if err != nil {
		t.Fatalf("DecodeSystem: %v", err)
	}
	if got.Flags&jailhouse.SysVirtualDebugConsole == 0 {
		t.Error("VIRTUAL_DEBUG_CONSOLE not set")
	}
	if got.HypervisorMemory.PhysStart != 0x7fc00000 || got.HypervisorMemory.Size != 0x400000 {
		t.Errorf("hypervisor memory = %+v", got.HypervisorMemory)
	}
	arm := got.Platform.ARM
	if arm.GICVersion != 3 || arm.GICDBase != 0x08000000 || arm.GICRBase != 0x080a0000 || arm.MaintenanceIRQ != 25 {
		t.Errorf("GIC = %+v", arm)
	}
	rc := got.RootCell
	if rc.Name != "qemu-arm64" || len(rc.CPUSet) != 8 || rc.CPUSet[0] != 0xff || rc.CPUSet[1] != 0xff || rc.CPUSet[2] != 0 {
		t.Errorf("root cell %q cpu set % x, want 0xffff in 8 bytes", rc.Name, rc.CPUSet)
	}
	if len(rc.MemoryRegions) != 12 || len(rc.IRQChips) != 1 || len(rc.PCIDevices) != 2 {
		t.Errorf("root cell has %d regions, %d irqchips, %d pci devices; want 12, 1, 2",
			len(rc.MemoryRegions), len(rc.IRQChips), len(rc.PCIDevices))
	}
	if rc.VPCIIRQBase != 96 {
		t.Errorf("root vpci_irq_base = %d, want 96", rc.VPCIIRQBase)
	}
	ram := rc.MemoryRegions[10]
	if ram.PhysStart != 0x40000000 || ram.Size != 0x3fa10000 {
		t.Errorf("root RAM = %+v", ram)
	}
	// SystemConfig hands out copies: changing one leaves the board intact.
	sys.RootCell.MemoryRegions[0].Size = 1
	if b.SystemConfig().RootCell.MemoryRegions[0].Size == 1 {
		t.Error("SystemConfig shares its slices with the board")
	}
}

func TestLoadBoardFromFile(t *testing.T) {
	data, err := builtinBoards.ReadFile("boards/qemu-arm64.toml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "custom.toml")
	if err := os.WriteFile(p, []byte(strings.Replace(string(data), `name = "qemu-arm64"`, `name = "custom"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBoard(p)
	if err != nil {
		t.Fatalf("LoadBoard(%s): %v", p, err)
	}
	if b.Name != "custom" || b.Source != p {
		t.Errorf("name %q source %q", b.Name, b.Source)
	}
}

func TestBoardCheckFailures(t *testing.T) {
	base, err := builtinBoards.ReadFile("boards/qemu-arm64.toml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		old, new string // replace old by new in the built-in profile
		key      string // the key the error must name
		text     string // and a word of the problem
	}{
		{"pool outside root RAM", "pool = { start = 0x70000000, end = 0x7f800000 }",
			"pool = { start = 0x30000000, end = 0x38000000 }", "partitions.pool", "root cell's RAM"},
		{"pool overlapping hypervisor memory", "pool = { start = 0x70000000, end = 0x7f800000 }",
			"pool = { start = 0x7f000000, end = 0x7fe00000 }", "partitions.pool", "hypervisor memory"},
		{"pool on ivshmem memory", "pool = { start = 0x70000000, end = 0x7f800000 }",
			"pool = { start = 0x7f800000, end = 0x7fc00000 }", "partitions.pool", "root cell's RAM"},
		{"empty pool", "pool = { start = 0x70000000, end = 0x7f800000 }",
			"pool = { start = 0x70000000, end = 0x70000000 }", "partitions.pool", "empty"},
		{"partition CPU not in root cell", `cpus = "2-15"`, `cpus = "2-16"`, "partitions.cpus", "CPU 16"},
		{"no CPU left for Linux", `cpus = "2-15"`, `cpus = "0-15"`, "partitions.cpus", "no CPU"},
		{"granule not a power of two", "granule = 0x200000", "granule = 0x300000", "partitions.granule", "power of two"},
		{"GIC mismatch", "gic = 0x08000000", "gic = 0x08010000", "partitions.gic", "distributor"},
		{"console SPI the root does not own", "console_spi = 33", "console_spi = 200", "partitions.console_spi", "not the root cell's"},
		{"UART outside root I/O", "address = 0x09000000\nsize = 0x1000\ntype = \"pl011\"\nflags = [\"mmio\", \"regdist-4\"]\n\n# The root",
			"address = 0x01000000\nsize = 0x1000\ntype = \"pl011\"\nflags = [\"mmio\", \"regdist-4\"]\n\n# The root", "partitions.console", "I/O region"},
		{"reset address on the GIC", "cpu_reset_address = 0 ", "cpu_reset_address = 0x08000000 ", "partitions.cpu_reset_address", "GIC"},
		{"unknown key", `arch = "arm64"`, "arch = \"arm64\"\ncolour = 1", "", "unknown keys: colour"},
		{"unknown memory flag", `flags = ["read", "write", "execute"]`, `flags = ["read", "write", "exec"]`, "system.root_cell.memory[10]", "exec"},
		{"missing pool", "pool = { start = 0x70000000, end = 0x7f800000 }", "", "partitions.pool", "missing"},
		{"x86 is not supported", `arch = "arm64"`, `arch = "x86"`, "arch", "not supported"},
		{"bad TOML", `revision = 14`, `revision = = 14`, "", "line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := string(base)
			if !strings.Contains(text, tt.old) {
				t.Fatalf("profile does not contain %q", tt.old)
			}
			_, err := ParseBoard("test.toml", []byte(strings.Replace(text, tt.old, tt.new, 1)))
			if err == nil {
				t.Fatal("ParseBoard succeeded")
			}
			var be *BoardError
			if !errors.As(err, &be) {
				t.Fatalf("error %v is not a *BoardError", err)
			}
			if be.Key != tt.key {
				t.Errorf("key = %q, want %q (%v)", be.Key, tt.key, err)
			}
			if !strings.Contains(err.Error(), tt.text) || !strings.Contains(err.Error(), "test.toml") {
				t.Errorf("error %q does not name the file and %q", err, tt.text)
			}
			if !errors.Is(err, ErrInvalidBoard) || !errdefs.IsFailedPrecondition(err) {
				t.Errorf("error %v is not ErrInvalidBoard + FailedPrecondition", err)
			}
		})
	}
}

func TestLoadBoardUnknownName(t *testing.T) {
	_, err := LoadBoard("pdp-11")
	if err == nil || !strings.Contains(err.Error(), "qemu-arm64") {
		t.Fatalf("error %v should list the built-in boards", err)
	}
}
