package sim

import (
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// fakeClock is a clock tests step by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Addresses of the test board, modelled on QEMU virt (jailhouse-abi §2.8).
const (
	testGICD      = 0x08000000
	testIVSHMEMBD = 0x0008 // 00:01.0
	testCommVirt  = 0x80000000
)

func cpuSet(t testing.TB, cpus ...int) []byte {
	t.Helper()
	set, err := jailhouse.CPUSetFromList(cpus, 8)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// testSystem is an arm64 system with 16 root CPUs, the virtual debug
// console, a GICv3 and one ivshmem device in the root cell.
func testSystem(t testing.TB) *jailhouse.System {
	t.Helper()
	cpus := make([]int, 16)
	for i := range cpus {
		cpus[i] = i
	}
	return &jailhouse.System{
		Arch:             jailhouse.ArchARM64,
		Flags:            jailhouse.SysVirtualDebugConsole,
		HypervisorMemory: jailhouse.Memory{PhysStart: 0x7fc00000, Size: 0x400000},
		Platform: jailhouse.Platform{
			PCIMMConfigBase: 0x08e00000,
			PCIIsVirtual:    1,
			PCIDomain:       1,
			ARM: jailhouse.ARMPlatform{
				MaintenanceIRQ: 25, GICVersion: 3,
				GICDBase: testGICD, GICRBase: 0x080a0000,
			},
		},
		RootCell: jailhouse.Cell{
			Name:   "qemu-arm64",
			CPUSet: cpuSet(t, cpus...),
			MemoryRegions: []jailhouse.Memory{
				{PhysStart: 0x7faf0000, VirtStart: 0x7faf0000, Size: 0x1000, Flags: jailhouse.MemRead},
				{PhysStart: 0x7faf1000, VirtStart: 0x7faf1000, Size: 0x9000, Flags: jailhouse.MemRead | jailhouse.MemWrite},
				{PhysStart: 0x7fafa000, VirtStart: 0x7fafa000, Size: 0x2000, Flags: jailhouse.MemRead},
				{PhysStart: 0x7fafc000, VirtStart: 0x7fafc000, Size: 0x2000, Flags: jailhouse.MemRead | jailhouse.MemWrite},
				{PhysStart: 0x09000000, VirtStart: 0x09000000, Size: 0x1000, Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemIO},
				{PhysStart: 0x40000000, VirtStart: 0x40000000, Size: 0x3fb00000, Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute},
			},
			IRQChips: []jailhouse.IRQChip{{Address: testGICD, PinBase: 32, PinBitmap: [4]uint32{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}},
			PCIDevices: []jailhouse.PCIDevice{{
				Type: jailhouse.PCITypeIVSHMEM, Domain: 1, BDF: testIVSHMEMBD,
				BARMask: [6]uint32{0xfffff000}, ShmemRegionsStart: 0, ShmemDevID: 0, ShmemPeers: 2,
			}},
		},
	}
}

func marshal(t testing.TB, m interface{ MarshalBinary() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Guest-physical layout of a test cell: a loadable RAM region at 0, a
// non-loadable one after it, and the comm region.
const (
	testRAMSize   = 0x10000
	testPlainVirt = 0x10000
)

// testCell is an arm64 cell on the given CPUs; mods adjust it.
func testCell(t testing.TB, name string, cpus []int, mods ...func(*jailhouse.Cell)) *jailhouse.Cell {
	t.Helper()
	c := &jailhouse.Cell{
		Arch:   jailhouse.ArchARM64,
		Name:   name,
		CPUSet: cpuSet(t, cpus...),
		MemoryRegions: []jailhouse.Memory{
			{PhysStart: 0x70000000, VirtStart: 0, Size: testRAMSize,
				Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemLoadable},
			{PhysStart: 0x70010000, VirtStart: testPlainVirt, Size: 0x10000,
				Flags: jailhouse.MemRead | jailhouse.MemWrite},
			{VirtStart: testCommVirt, Size: 0x1000,
				Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemCommRegion},
		},
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func passive(c *jailhouse.Cell)   { c.Flags |= jailhouse.CellPassiveCommRegion }
func permitted(c *jailhouse.Cell) { c.Flags |= jailhouse.CellVirtualConsolePermitted }

// active makes the inmate print through the hypervisor's virtual console.
func active(c *jailhouse.Cell) { c.Flags |= jailhouse.CellVirtualConsoleActive }

// openSim opens a fresh simulator in a temp dir.
func openSim(t testing.TB, opts Options) *Driver {
	t.Helper()
	d, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// enabled opens a simulator and enables it with testSystem.
func enabled(t testing.TB, opts Options) *Driver {
	t.Helper()
	d := openSim(t, opts)
	must(t, d.Enable(marshal(t, testSystem(t))))
	return d
}

func create(t testing.TB, d *Driver, c *jailhouse.Cell) {
	t.Helper()
	must(t, d.CreateCell(marshal(t, c)))
}

func script(lines ...string) jailhouse.Image {
	return jailhouse.Image{Data: []byte(ScriptMagic + "\n" + strings.Join(lines, "\n") + "\n")}
}

// run creates, loads and starts a cell running the script.
func run(t testing.TB, d *Driver, c *jailhouse.Cell, lines ...string) {
	t.Helper()
	create(t, d, c)
	must(t, d.LoadCell(c.Name, script(lines...)))
	must(t, d.StartCell(c.Name))
}

func stateOf(t testing.TB, d *Driver, name string) jailhouse.CellState {
	t.Helper()
	info, err := d.Cell(name)
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

// hvConsoleText reads the whole hypervisor console without waiting.
func hvConsoleText(t testing.TB, d *Driver) string {
	t.Helper()
	r, err := d.OpenConsole(false)
	must(t, err)
	defer r.Close()
	b, err := io.ReadAll(r)
	must(t, err)
	return string(b)
}
