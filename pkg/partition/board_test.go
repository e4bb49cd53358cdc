package partition

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
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
	if b.Arch != jailhouse.ArchARM64 || b.Revision != jailhouse.Revision14 || b.Flavour != FlavourUpstream {
		t.Errorf("arch/revision/flavour = %v/%v/%s, want arm64/14/upstream", b.Arch, b.Revision, b.Flavour)
	}
	if got := jailhouse.FormatCPUList(b.PartitionCPUs); got != "2-15" {
		t.Errorf("partition CPUs = %s, want 2-15", got)
	}
	if !slices.Equal(b.Pools, []Range{{0x70000000, 0x7e800000}}) || b.Pool != b.Pools[0] {
		t.Errorf("pools = %v (pool %s)", b.Pools, b.Pool)
	}
	if b.ConsoleSPI != 33 || b.VPCIIRQBase != 108 || b.CommRegion != 0x80000000 || b.CPUResetAddress != 0 || b.LoaderArea != 0x10000 {
		t.Errorf("spi %d vpci %d comm %#x reset %#x loader %#x", b.ConsoleSPI, b.VPCIIRQBase, b.CommRegion, b.CPUResetAddress, b.LoaderArea)
	}
	want := jailhouse.Console{Address: 0x09000000, Size: 0x1000, Type: jailhouse.ConsolePL011,
		Flags: jailhouse.ConsoleAccessMMIO | jailhouse.ConsoleRegDist4}
	if b.Console != want || len(b.UARTs) != 1 || !b.UARTs[0].Shared || b.UARTs[0].Console != want {
		t.Errorf("console = %+v, UARTs %+v, want %+v shared", b.Console, b.UARTs, want)
	}
	if b.IVSHMEM != (IVSHMEMWindow{Base: 0x7e800000, Size: 0x1000000, Slots: 16, FirstDevice: 2}) || len(b.slots) != 16 {
		t.Errorf("ivshmem window %+v with %d root slots", b.IVSHMEM, len(b.slots))
	}
	if formatPins(b.SPIs) != "140-159" || jailhouse.FormatCPUList(b.LinkDevices) != "18-25" || len(b.RPUs) != 0 {
		t.Errorf("SPIs %s link devices %v RPUs %v", formatPins(b.SPIs), b.LinkDevices, b.RPUs)
	}
	if got := jailhouse.FormatCPUList(b.RootCPUs()); got != "0-15" {
		t.Errorf("root CPUs = %s, want 0-15", got)
	}
}

// Every shipped profile loads, passes its own checks, encodes a system
// config that decodes back to the same values, and says what its source
// values are.
func TestBuiltinProfiles(t *testing.T) {
	tests := []struct {
		name        string
		cpus        string
		pool        Range
		gicd        uint64
		hv          Range
		uart        uint64
		spis        string
		slots       int
		firstDevice int
		rpus        []int
		flavour     string
	}{
		{"qemu-arm64", "2-15", Range{0x70000000, 0x7e800000}, 0x08000000, Range{0x7fc00000, 0x80000000}, 0x09000000, "140-159", 16, 2, nil, FlavourUpstream},
		{"zcu104", "1-3", Range{0x3ed00000, 0x46d00000}, 0xf9010000, Range{0x7f000000, 0x80000000}, 0xff010000, "140-159", 16, 1, []int{0, 1}, FlavourOmnivisor},
		{"kria-kv260", "1-3", Range{0x3ed00000, 0x46d00000}, 0xf9010000, Range{0x7f000000, 0x80000000}, 0xff010000, "140-159", 16, 1, []int{0}, FlavourOmnivisor},
		{"rpi4", "1-3", Range{0x20000000, 0x2f000000}, 0xff841000, Range{0x1fc00000, 0x20000000}, 0xfe215040, "186-188", 16, 2, nil, FlavourUpstream},
	}
	if got := BuiltinBoards(); !slices.Equal(got, []string{"kria-kv260", "qemu-arm64", "rpi4", "zcu104"}) {
		t.Errorf("BuiltinBoards() = %v", got)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := LoadBoard(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if b.Name != tt.name || b.Flavour != tt.flavour || jailhouse.FormatCPUList(b.PartitionCPUs) != tt.cpus ||
				!slices.Equal(b.Pools, []Range{tt.pool}) || b.GICAddress != tt.gicd || formatPins(b.SPIs) != tt.spis ||
				b.IVSHMEM.Slots != tt.slots || b.IVSHMEM.FirstDevice != tt.firstDevice || !slices.Equal(b.RPUs, tt.rpus) {
				t.Errorf("profile %+v", b)
			}
			if len(b.UARTs) != 1 || b.UARTs[0].Region.PhysStart != tt.uart || !b.UARTs[0].Shared {
				t.Errorf("UARTs %+v, want one at %#x shared with root", b.UARTs, tt.uart)
			}
			sys := b.SystemConfig()
			if hv := memRange(sys.HypervisorMemory); hv != tt.hv {
				t.Errorf("hypervisor memory %s, want %s", hv, tt.hv)
			}
			data, err := sys.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			back, err := jailhouse.DecodeSystem(data)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.CheckSystemConfig(back, "decoded"); err != nil {
				t.Errorf("the profile does not fit its own encoded system config: %v", err)
			}
			if fs := jailhouse.Check(back); jailhouse.HasErrors(fs) {
				t.Errorf("jailhouse.Check of the system config: %v", fs)
			}
			// The root cell has the peer-0 end of every window slot.
			if len(b.slots) != b.IVSHMEM.Slots {
				t.Errorf("%d root slots for %d window slots", len(b.slots), b.IVSHMEM.Slots)
			}
		})
	}
}

// The qemu-arm64 system config is upstream's qemu-arm64.c (12 regions, 2
// PCI devices) with the RAM region split around the ivshmem window and the
// root cell's end of the window's 16 links appended.
func TestQEMUSystemConfigIsUpstreamPlusWindow(t *testing.T) {
	b := mustBoard(t)
	sys := b.SystemConfig()
	data, err := sys.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	// 1024 bytes upstream, + 1 region for the split, + 16 * (4 regions of
	// 32 bytes + a PCI device of 56 bytes).
	if want := 1024 + 32 + 16*(4*32+56); len(data) != want {
		t.Errorf("system config is %d bytes, want %d", len(data), want)
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
	if len(rc.MemoryRegions) != 13+64 || len(rc.IRQChips) != 1 || len(rc.PCIDevices) != 2+16 {
		t.Errorf("root cell has %d regions, %d irqchips, %d pci devices; want 77, 1, 18",
			len(rc.MemoryRegions), len(rc.IRQChips), len(rc.PCIDevices))
	}
	if rc.VPCIIRQBase != 96 {
		t.Errorf("root vpci_irq_base = %d, want 96", rc.VPCIIRQBase)
	}
	// Upstream's RAM 0x40000000 + 0x3fa10000, minus the window.
	if lo, hi := rc.MemoryRegions[10], rc.MemoryRegions[11]; memRange(lo) != (Range{0x40000000, 0x7e800000}) ||
		memRange(hi) != (Range{0x7f800000, 0x7fa10000}) {
		t.Errorf("root RAM = %s and %s", memRange(lo), memRange(hi))
	}
	// Slot 15: JAILHOUSE_SHMEM_NET_REGIONS(0x7f700000, 0), device 00:11.0.
	dev := rc.PCIDevices[17]
	if dev.BDF != 17<<3 || dev.ShmemDevID != 0 || dev.ShmemPeers != 2 || dev.ShmemProtocol != jailhouse.ShmemProtoVETH ||
		dev.ShmemRegionsStart != 13+60 {
		t.Errorf("last window device %+v", dev)
	}
	if m := rc.MemoryRegions[13+60]; m.PhysStart != 0x7f700000 || m.Size != 0x1000 || m.Flags != jailhouse.MemRead|jailhouse.MemRootShared {
		t.Errorf("state table of the last slot %+v", m)
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
	const pool = "start = 0x70000000\nend = 0x7e800000"
	tests := []struct {
		name     string
		old, new string // replace old by new in the built-in profile
		key      string // the key the error must name
		text     string // and a word of the problem
	}{
		{"pool outside root RAM", pool, "start = 0x30000000\nend = 0x38000000", "partitions.pools[0]", "root cell's RAM"},
		{"pool overlapping hypervisor memory", pool, "start = 0x7f000000\nend = 0x7fe00000", "partitions.pools[0]", "hypervisor memory"},
		{"pool on ivshmem memory", pool, "start = 0x7fa00000\nend = 0x7fc00000", "partitions.pools[0]", "root cell's RAM"},
		{"pool on the ivshmem window", pool, "start = 0x70000000\nend = 0x7f000000", "partitions.pools[0]", "root cell's RAM"},
		{"empty pool", pool, "start = 0x70000000\nend = 0x70000000", "partitions.pools[0]", "empty"},
		{"partition CPU not in root cell", `cpus = "2-15"`, `cpus = "2-16"`, "partitions.cpus", "CPU 16"},
		{"no CPU left for Linux", `cpus = "2-15"`, `cpus = "0-15"`, "partitions.cpus", "no CPU"},
		{"granule not a power of two", "granule = 0x200000", "granule = 0x300000", "partitions.granule", "power of two"},
		{"GIC mismatch", "gic = 0x08000000", "gic = 0x08010000", "partitions.gic", "distributor"},
		{"UART interrupt the root does not own", "spi = 33", "spi = 200", "partitions.uarts[0].spi", "not the root cell's"},
		{"UART outside root I/O", "address = 0x09000000\nsize = 0x1000\nspi", "address = 0x01000000\nsize = 0x1000\nspi",
			"partitions.uarts[0]", "I/O region"},
		{"SPI the root does not own", `spis = "140-159"`, `spis = "140-170"`, "partitions.spis", "interrupt 160 is not the root cell's"},
		{"SPI that is a root INTx line", `spis = "140-159"`, `spis = "128-159"`, "partitions.spis", "INTx line of the root cell's virtual PCI device"},
		{"SPI that is the UART's", `spis = "140-159"`, `spis = "33,140-159"`, "partitions.spis", "interrupt of UART pl011"},
		{"window slot without a root device", "slots = 16\nfirst_device = 2", "slots = 16\nfirst_device = 0",
			"partitions.ivshmem (slot 0)", "want VETH (0x1), 2 peers, dev id 0"},
		{"window slot past the root's devices", "slots = 16\nfirst_device = 2", "slots = 4\nfirst_device = 26",
			"partitions.ivshmem (slot 0)", "no ivshmem device 00:1a.0"},
		{"window slot the root maps elsewhere", "base = 0x7e800000\nsize", "base = 0x7e700000\nsize",
			"partitions.ivshmem (slot 0)", "not a state table"},
		{"link device the root uses", `link_devices = "18-25"`, `link_devices = "17-25"`, "partitions.link_devices", "also an ivshmem slot's device"},
		{"reset address on the GIC", "cpu_reset_address = 0 ", "cpu_reset_address = 0x08000000 ", "partitions.cpu_reset_address", "GIC"},
		{"unknown key", `arch = "arm64"`, "arch = \"arm64\"\ncolour = 1", "", "unknown keys: colour"},
		{"unknown memory flag", `flags = ["read", "write", "execute"]`, `flags = ["read", "write", "exec"]`, "system.root_cell.memory[10]", "exec"},
		{"missing pools", "[[partitions.pools]]", "[[partitions.notpools]]", "", "unknown keys"},
		{"unknown flavour", `flavour = "upstream"`, `flavour = "minerva"`, "flavour", "not a flavour"},
		{"system config and [system]", `flavour = "upstream"`, "flavour = \"upstream\"\nsystem_config = \"x.cell\"", "system_config", "not both"},
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

// CheckSystemConfig holds a profile against the system config the hypervisor
// really runs (`runphi board check`): every mismatch is reported with the
// key at fault.
func TestCheckSystemConfig(t *testing.T) {
	b := mustBoard(t)
	tests := []struct {
		name   string
		change func(s *jailhouse.System)
		keys   []string
	}{
		{"the profile's own", func(*jailhouse.System) {}, nil},
		{"another GIC", func(s *jailhouse.System) { s.Platform.ARM.GICDBase = 0x08010000 }, []string{"partitions.gic"}},
		{"hypervisor memory on the pool", func(s *jailhouse.System) { s.HypervisorMemory.PhysStart = 0x7e000000 },
			[]string{"partitions.pools[0]"}},
		{"fewer CPUs", func(s *jailhouse.System) { _ = s.RootCell.SetCPUs([]int{0, 1, 2, 3}) }, []string{"partitions.cpus"}},
		{"no root end for the window's links", func(s *jailhouse.System) { s.RootCell.PCIDevices = s.RootCell.PCIDevices[:2] },
			[]string{"partitions.ivshmem (slot 0)"}},
		{"another revision", func(s *jailhouse.System) { s.Revision = jailhouse.Revision13 }, []string{"revision"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := b.SystemConfig()
			tt.change(sys)
			err := b.CheckSystemConfig(sys, "sys.cell")
			var keys []string
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var be *BoardError
					if !errors.As(e, &be) || be.Source != "sys.cell" || !errdefs.IsFailedPrecondition(e) {
						t.Errorf("%v is not a FailedPrecondition *BoardError from sys.cell", e)
						continue
					}
					keys = append(keys, be.Key)
				}
			}
			keys = slices.Compact(keys)
			if len(keys) < len(tt.keys) || (len(tt.keys) == 0) != (len(keys) == 0) ||
				(len(tt.keys) > 0 && keys[0] != tt.keys[0]) {
				t.Errorf("keys %v (%v), want %v", keys, err, tt.keys)
			}
		})
	}
}

// A profile may name the system config file instead of carrying [system]:
// LoadBoard decodes it (relative to the profile) and checks against it.
func TestProfileWithSystemConfigFile(t *testing.T) {
	b := mustBoard(t)
	dir := t.TempDir()
	data, err := b.SystemConfig().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "qemu.cell"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	src, _ := builtinBoards.ReadFile("boards/qemu-arm64.toml")
	text := string(src)
	text = text[:strings.Index(text, "# The root cell system configuration")]
	text = strings.Replace(text, `flavour = "upstream"`, "flavour = \"upstream\"\nsystem_config = \"qemu.cell\"", 1)
	p := filepath.Join(dir, "qemu.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoadBoard(p)
	if err != nil {
		t.Fatalf("LoadBoard: %v", err)
	}
	if got.SystemConfigPath != filepath.Join(dir, "qemu.cell") || len(got.slots) != 16 {
		t.Errorf("system config %q, %d slots", got.SystemConfigPath, len(got.slots))
	}
	if err := os.Remove(filepath.Join(dir, "qemu.cell")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBoard(p); err == nil || !strings.Contains(err.Error(), "system_config") {
		t.Errorf("LoadBoard without the file: %v", err)
	}
}
