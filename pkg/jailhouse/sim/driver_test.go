package sim

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// testX86System is an x86 system with root CPUs 0-3.
func testX86System(t testing.TB) *jailhouse.System {
	t.Helper()
	return &jailhouse.System{
		Arch:             jailhouse.ArchX86,
		Flags:            jailhouse.SysVirtualDebugConsole,
		HypervisorMemory: jailhouse.Memory{PhysStart: 0x3a000000, Size: 0x600000},
		Platform:         jailhouse.Platform{X86: jailhouse.X86Platform{PMTimerAddress: 0x608}},
		RootCell: jailhouse.Cell{
			Name:   "RootCell",
			CPUSet: cpuSet(t, 0, 1, 2, 3),
			MemoryRegions: []jailhouse.Memory{
				{PhysStart: 0, VirtStart: 0, Size: 0x3a000000, Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemDMA},
			},
		},
	}
}

func x86Cell(t testing.TB, name string, cpus ...int) *jailhouse.Cell {
	return testCell(t, name, cpus, func(c *jailhouse.Cell) { c.Arch = jailhouse.ArchX86 })
}

// corrupt returns a copy of b with bytes at off replaced.
func corrupt(b []byte, off int, with ...byte) []byte {
	b = slices.Clone(b)
	copy(b[off:], with)
	return b
}

func wantCells(t *testing.T, d *Driver, want ...string) {
	t.Helper()
	cells, err := d.Cells()
	must(t, err)
	var got []string
	for _, c := range cells[1:] {
		got = append(got, c.Name)
	}
	if !slices.Equal(got, want) {
		t.Errorf("cells besides root = %q, want %q", got, want)
	}
}

func wantState(t *testing.T, d *Driver, name string, want jailhouse.CellState) {
	t.Helper()
	if got := stateOf(t, d, name); got != want {
		t.Errorf("cell %q is %v, want %v", name, got, want)
	}
}

// TestRequestErrnos is the driver's errno table (jailhouse-abi §1.3 and
// issue 3): one row per check, each on a fresh simulated host.
func TestRequestErrnos(t *testing.T) {
	denyScript := []string{"on-shutdown deny"}
	tests := []struct {
		name     string
		opts     Options
		disabled bool // do not enable testSystem before setup
		setup    func(t *testing.T, d *Driver)
		call     func(t *testing.T, d *Driver) error
		want     unix.Errno // 0: the call succeeds
		check    func(t *testing.T, d *Driver)
	}{
		// ENABLE
		{
			name: "enable shorter than the system header", disabled: true,
			call: func(t *testing.T, d *Driver) error { return d.Enable(marshal(t, testSystem(t))[:400]) },
			want: unix.EFAULT,
		},
		{
			name: "enable with a bad signature", disabled: true,
			call: func(t *testing.T, d *Driver) error { return d.Enable(corrupt(marshal(t, testSystem(t)), 0, 'X')) },
			want: unix.EINVAL,
		},
		{
			name: "enable a cell config", disabled: true,
			call: func(t *testing.T, d *Driver) error {
				b := append(marshal(t, testCell(t, "c", []int{1})), make([]byte, 400)...)
				return d.Enable(b)
			},
			want: unix.EINVAL,
		},
		{
			name: "enable revision 13", disabled: true,
			call: func(t *testing.T, d *Driver) error {
				s := testSystem(t)
				s.Revision = jailhouse.Revision13
				return d.Enable(marshal(t, s))
			},
			want: unix.EINVAL,
		},
		{
			name: "enable a config for another architecture", disabled: true,
			call: func(t *testing.T, d *Driver) error {
				return d.Enable(corrupt(marshal(t, testSystem(t)), 5, byte(jailhouse.ArchARM)))
			},
			want: unix.EINVAL,
		},
		{
			name: "enable with an empty root cpu set", disabled: true,
			call: func(t *testing.T, d *Driver) error {
				s := testSystem(t)
				s.RootCell.CPUSet = make([]byte, 8)
				return d.Enable(marshal(t, s))
			},
			want: unix.EINVAL,
		},
		{
			name: "enable twice",
			call: func(t *testing.T, d *Driver) error { return d.Enable(marshal(t, testSystem(t))) },
			want: unix.EBUSY,
		},
		{
			name: "enable with a root CPU beyond nr_cpu_ids", disabled: true, opts: Options{NrCPUIDs: 8},
			call: func(t *testing.T, d *Driver) error { return d.Enable(marshal(t, testSystem(t))) },
			want: unix.EINVAL,
		},
		{
			name: "enable with hypervisor memory too small for the core", disabled: true,
			call: func(t *testing.T, d *Driver) error {
				s := testSystem(t)
				s.HypervisorMemory.Size = 0x10000
				return d.Enable(marshal(t, s))
			},
			want: unix.EINVAL,
		},
		{
			name: "enable fails in the irqchip unit and leaves its console readable", disabled: true,
			call: func(t *testing.T, d *Driver) error {
				s := testSystem(t)
				s.RootCell.IRQChips[0].PinBase = 40
				return d.Enable(marshal(t, s))
			},
			want: unix.EINVAL,
			check: func(t *testing.T, d *Driver) {
				if on, err := d.Enabled(); err != nil || on {
					t.Errorf("Enabled() = %v, %v after a failed enable", on, err)
				}
				if text := hvConsoleText(t, d); !strings.HasSuffix(text, "Initializing unit: irqchip\n") {
					t.Errorf("console after the failed enable %q, want it to end at the irqchip unit", text)
				}
			},
		},
		{
			name: "enable", disabled: true,
			call: func(t *testing.T, d *Driver) error { return d.Enable(marshal(t, testSystem(t))) },
			check: func(t *testing.T, d *Driver) {
				cells, err := d.Cells()
				must(t, err)
				if len(cells) != 1 || cells[0].ID != 0 || cells[0].Name != "qemu-arm64" || len(cells[0].CPUs) != 16 {
					t.Errorf("cells after enable = %+v, want only the root cell with 16 CPUs", cells)
				}
			},
		},

		// DISABLE
		{
			name: "disable while disabled", disabled: true,
			call: func(t *testing.T, d *Driver) error { return d.Disable() },
			want: unix.EINVAL,
		},
		{
			name: "disable destroys cells in creation order",
			setup: func(t *testing.T, d *Driver) {
				create(t, d, testCell(t, "b", []int{3}))
				create(t, d, testCell(t, "a", []int{2}))
			},
			call: func(t *testing.T, d *Driver) error { return d.Disable() },
			check: func(t *testing.T, d *Driver) {
				text := hvConsoleText(t, d)
				b, a, down := strings.Index(text, `Closing cell "b"`), strings.Index(text, `Closing cell "a"`), strings.Index(text, "Shutting down hypervisor")
				if b < 0 || a < b || down < a {
					t.Errorf("console does not close b, then a, then shut down:\n%s", text)
				}
				if on, err := d.Enabled(); err != nil || on {
					t.Errorf("Enabled() = %v, %v after disable", on, err)
				}
			},
		},
		{
			name: "disable stops at a cell that refuses; earlier cells stay destroyed",
			setup: func(t *testing.T, d *Driver) {
				create(t, d, testCell(t, "first", []int{2}))
				run(t, d, testCell(t, "refuser", []int{3}), denyScript...)
				create(t, d, testCell(t, "last", []int{4}))
			},
			call: func(t *testing.T, d *Driver) error { return d.Disable() },
			want: unix.EPERM,
			check: func(t *testing.T, d *Driver) {
				wantCells(t, d, "refuser", "last")
			},
		},

		// CELL_CREATE
		{
			name: "create from fewer than 132 bytes",
			call: func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, testCell(t, "c", []int{2}))[:131]) },
			want: unix.EINVAL,
		},
		{
			name: "create with a bad signature",
			call: func(t *testing.T, d *Driver) error {
				return d.CreateCell(corrupt(marshal(t, testCell(t, "c", []int{2})), 0, 'J', 'H', 'S', 'Y', 'S'))
			},
			want: unix.EINVAL,
		},
		{
			name: "create revision 12",
			call: func(t *testing.T, d *Driver) error {
				return d.CreateCell(marshal(t, testCell(t, "c", []int{2}, func(c *jailhouse.Cell) { c.Revision = jailhouse.Revision12 })))
			},
			want: unix.EINVAL,
		},
		{
			name: "create with another architecture returns nil and creates nothing",
			call: func(t *testing.T, d *Driver) error {
				return d.CreateCell(marshal(t, testCell(t, "c", []int{2}, func(c *jailhouse.Cell) { c.Arch = jailhouse.ArchX86 })))
			},
			check: func(t *testing.T, d *Driver) {
				wantCells(t, d)
				if _, err := d.Cell("c"); !errors.Is(err, jailhouse.ErrCellNotFound) {
					t.Errorf("Cell(c) after an arch-mismatched create: %v, want ErrCellNotFound", err)
				}
			},
		},
		{
			name: "create while disabled", disabled: true,
			call: func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, testCell(t, "c", []int{2}))) },
			want: unix.EINVAL,
		},
		{
			name:  "create a duplicate name",
			setup: func(t *testing.T, d *Driver) { create(t, d, testCell(t, "c", []int{2})) },
			call:  func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, testCell(t, "c", []int{3}))) },
			want:  unix.EEXIST,
		},
		{
			name: "create with the root cell's name",
			call: func(t *testing.T, d *Driver) error {
				return d.CreateCell(marshal(t, testCell(t, "qemu-arm64", []int{3})))
			},
			want: unix.EEXIST,
		},
		{
			name: "create takes the lowest free id, reusing destroyed ones",
			setup: func(t *testing.T, d *Driver) {
				create(t, d, testCell(t, "one", []int{2}))
				create(t, d, testCell(t, "two", []int{3}))
				create(t, d, testCell(t, "three", []int{4}))
				must(t, d.DestroyCell("one"))
			},
			call: func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, testCell(t, "four", []int{5}))) },
			check: func(t *testing.T, d *Driver) {
				ids := map[string]int{}
				cells, err := d.Cells()
				must(t, err)
				for _, c := range cells {
					ids[c.Name] = c.ID
				}
				if ids["four"] != 1 || ids["two"] != 2 || ids["three"] != 3 {
					t.Errorf("ids = %v, want four:1 two:2 three:3", ids)
				}
			},
		},
		{
			name:  "create with a CPU of another cell",
			setup: func(t *testing.T, d *Driver) { create(t, d, testCell(t, "a", []int{2, 3})) },
			call:  func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, testCell(t, "b", []int{3, 4}))) },
			want:  unix.EBUSY,
		},
		{
			name: "create with a CPU outside the system config",
			call: func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, testCell(t, "c", []int{16}))) },
			want: unix.EBUSY,
		},
		{
			name: "create with CPU 0 on x86", disabled: true, opts: Options{Arch: new(jailhouse.ArchX86)},
			setup: func(t *testing.T, d *Driver) { must(t, d.Enable(marshal(t, testX86System(t)))) },
			call:  func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, x86Cell(t, "c", 0, 1))) },
			want:  unix.EINVAL,
		},
		{
			name: "create on x86 without CPU 0", disabled: true, opts: Options{Arch: new(jailhouse.ArchX86)},
			setup: func(t *testing.T, d *Driver) { must(t, d.Enable(marshal(t, testX86System(t)))) },
			call:  func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, x86Cell(t, "c", 1))) },
		},
		{
			name: "create from a config larger than 64 KiB",
			call: func(t *testing.T, d *Driver) error {
				return d.CreateCell(marshal(t, testCell(t, "big", []int{2}, func(c *jailhouse.Cell) {
					for i := range 2048 {
						c.MemoryRegions = append(c.MemoryRegions, jailhouse.Memory{
							PhysStart: 0x60000000 + uint64(i)*0x1000, VirtStart: 0x100000 + uint64(i)*0x1000,
							Size: 0x1000, Flags: jailhouse.MemRead,
						})
					}
				})))
			},
			want: unix.E2BIG,
		},
		{
			name:  "create while another cell is running/locked",
			setup: func(t *testing.T, d *Driver) { run(t, d, testCell(t, "locker", []int{2}), "lock") },
			call:  func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, testCell(t, "c", []int{3}))) },
			want:  unix.EPERM,
		},
		{
			name: "create with the hypervisor page pool exhausted", disabled: true,
			setup: func(t *testing.T, d *Driver) {
				s := testSystem(t)
				s.HypervisorMemory.Size = 0x80000 // core, 16 per-CPU areas and a few pages
				must(t, d.Enable(marshal(t, s)))
			},
			call: func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, testCell(t, "c", []int{2}))) },
			want: unix.ENOMEM,
		},
		{
			name: "create moves the CPUs from the root cell and leaves the cell shut down",
			call: func(t *testing.T, d *Driver) error { return d.CreateCell(marshal(t, testCell(t, "c", []int{2, 3}))) },
			check: func(t *testing.T, d *Driver) {
				cells, err := d.Cells()
				must(t, err)
				if slices.Contains(cells[0].CPUs, 2) || slices.Contains(cells[0].CPUs, 3) || len(cells[0].CPUs) != 14 {
					t.Errorf("root CPUs = %v, want 0-15 without 2-3", cells[0].CPUs)
				}
				if !slices.Equal(cells[1].CPUs, []int{2, 3}) || cells[1].State != jailhouse.StateShutDown {
					t.Errorf("new cell = %+v, want CPUs 2-3, shut down", cells[1])
				}
			},
		},
		{
			name: "create with an irqchip pin_base that is not a multiple of 32",
			call: func(t *testing.T, d *Driver) error {
				return d.CreateCell(marshal(t, testCell(t, "c", []int{2}, func(c *jailhouse.Cell) {
					c.IRQChips = []jailhouse.IRQChip{{Address: testGICD, PinBase: 40}}
				})))
			},
			want: unix.EINVAL,
		},
		{
			name: "create with an ivshmem dev-id already linked",
			call: func(t *testing.T, d *Driver) error {
				// The root cell holds dev-id 0 of 00:01.0.
				return d.CreateCell(marshal(t, testCell(t, "c", []int{2}, func(c *jailhouse.Cell) {
					c.MemoryRegions = append(c.MemoryRegions, make([]jailhouse.Memory, 4)...)
					c.PCIDevices = []jailhouse.PCIDevice{{Type: jailhouse.PCITypeIVSHMEM, BDF: testIVSHMEMBD, ShmemRegionsStart: 3, ShmemDevID: 0, ShmemPeers: 2}}
				})))
			},
			want: unix.EBUSY,
		},

		// CELL_LOAD
		{
			name: "load while disabled", disabled: true,
			call: func(t *testing.T, d *Driver) error { return d.LoadCell("c") },
			want: unix.EINVAL,
		},
		{
			name: "load an unknown cell",
			call: func(t *testing.T, d *Driver) error { return d.LoadCell("nope") },
			want: unix.ENOENT,
		},
		{
			name: "load the root cell",
			call: func(t *testing.T, d *Driver) error { return d.LoadCell("qemu-arm64") },
			want: unix.EINVAL,
		},
		{
			name:  "load a cell that denies shutdown",
			setup: func(t *testing.T, d *Driver) { run(t, d, testCell(t, "c", []int{2}), denyScript...) },
			call:  func(t *testing.T, d *Driver) error { return d.LoadCell("c") },
			want:  unix.EPERM,
			check: func(t *testing.T, d *Driver) { wantState(t, d, "c", jailhouse.StateRunning) },
		},
		{
			name:  "load an image outside every region",
			setup: func(t *testing.T, d *Driver) { create(t, d, testCell(t, "c", []int{2})) },
			call: func(t *testing.T, d *Driver) error {
				return d.LoadCell("c", jailhouse.Image{Data: []byte("x"), Target: 0x40000000})
			},
			want: unix.EINVAL,
		},
		{
			name:  "load an image that does not fit in the rest of its region",
			setup: func(t *testing.T, d *Driver) { create(t, d, testCell(t, "c", []int{2})) },
			call: func(t *testing.T, d *Driver) error {
				return d.LoadCell("c", jailhouse.Image{Data: make([]byte, 0x100), Target: testRAMSize - 0x80})
			},
			want: unix.EINVAL,
		},
		{
			name:  "load into a region without LOADABLE",
			setup: func(t *testing.T, d *Driver) { create(t, d, testCell(t, "c", []int{2})) },
			call: func(t *testing.T, d *Driver) error {
				return d.LoadCell("c", jailhouse.Image{Data: []byte("x"), Target: testPlainVirt})
			},
			want: unix.EINVAL,
		},
		{
			name: "load matches the first region in config order",
			setup: func(t *testing.T, d *Driver) {
				// A second, loadable region overlapping the plain one
				// comes later and is never considered.
				create(t, d, testCell(t, "c", []int{2}, func(c *jailhouse.Cell) {
					c.MemoryRegions = append(c.MemoryRegions, jailhouse.Memory{PhysStart: 0x71000000, VirtStart: testPlainVirt, Size: 0x1000,
						Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemLoadable})
				}))
			},
			call: func(t *testing.T, d *Driver) error {
				return d.LoadCell("c", jailhouse.Image{Data: []byte("x"), Target: testPlainVirt})
			},
			want: unix.EINVAL,
		},
		{
			name:  "load keeps images before a bad one and skips empty ones",
			setup: func(t *testing.T, d *Driver) { create(t, d, testCell(t, "c", []int{2}, active)) },
			call: func(t *testing.T, d *Driver) error {
				return d.LoadCell("c",
					script("print loaded before the bad image"),
					jailhouse.Image{Target: 0xdead0000}, // size 0: skipped
					jailhouse.Image{Data: []byte("x"), Target: testPlainVirt})
			},
			want: unix.EINVAL,
			check: func(t *testing.T, d *Driver) {
				wantState(t, d, "c", jailhouse.StateShutDown)
				must(t, d.StartCell("c"))
				if text := hvConsoleText(t, d); !strings.Contains(text, "loaded before the bad image\n") {
					t.Errorf("the script loaded before the failing image did not run:\n%s", text)
				}
			},
		},
		{
			name:  "load with no images shuts a running cell down",
			setup: func(t *testing.T, d *Driver) { run(t, d, testCell(t, "c", []int{2}), "sleep 1h") },
			call:  func(t *testing.T, d *Driver) error { return d.LoadCell("c") },
			check: func(t *testing.T, d *Driver) { wantState(t, d, "c", jailhouse.StateShutDown) },
		},

		// CELL_START
		{
			name: "start while disabled", disabled: true,
			call: func(t *testing.T, d *Driver) error { return d.StartCell("c") },
			want: unix.EINVAL,
		},
		{
			name: "start an unknown cell",
			call: func(t *testing.T, d *Driver) error { return d.StartCell("nope") },
			want: unix.ENOENT,
		},
		{
			name: "start the root cell",
			call: func(t *testing.T, d *Driver) error { return d.StartCell("qemu-arm64") },
			want: unix.EINVAL,
		},
		{
			name:  "restart a cell that denies shutdown",
			setup: func(t *testing.T, d *Driver) { run(t, d, testCell(t, "c", []int{2}), denyScript...) },
			call:  func(t *testing.T, d *Driver) error { return d.StartCell("c") },
			want:  unix.EPERM,
		},
		{
			name:  "start a created cell without loading it",
			setup: func(t *testing.T, d *Driver) { create(t, d, testCell(t, "c", []int{2})) },
			call:  func(t *testing.T, d *Driver) error { return d.StartCell("c") },
			check: func(t *testing.T, d *Driver) { wantState(t, d, "c", jailhouse.StateRunning) },
		},

		// CELL_DESTROY
		{
			name: "destroy while disabled", disabled: true,
			call: func(t *testing.T, d *Driver) error { return d.DestroyCell("c") },
			want: unix.EINVAL,
		},
		{
			name: "destroy an unknown cell",
			call: func(t *testing.T, d *Driver) error { return d.DestroyCell("nope") },
			want: unix.ENOENT,
		},
		{
			name: "destroy the root cell",
			call: func(t *testing.T, d *Driver) error { return d.DestroyCell("qemu-arm64") },
			want: unix.EINVAL,
		},
		{
			name: "destroy while another cell is running/locked",
			setup: func(t *testing.T, d *Driver) {
				create(t, d, testCell(t, "c", []int{2}))
				run(t, d, testCell(t, "locker", []int{3}), "lock")
			},
			call: func(t *testing.T, d *Driver) error { return d.DestroyCell("c") },
			want: unix.EPERM,
		},
		{
			name:  "destroy a running/locked cell that approves",
			setup: func(t *testing.T, d *Driver) { run(t, d, testCell(t, "locker", []int{3}), "lock") },
			call:  func(t *testing.T, d *Driver) error { return d.DestroyCell("locker") },
			check: func(t *testing.T, d *Driver) { wantCells(t, d) },
		},
		{
			name:  "destroy a cell that denies shutdown",
			setup: func(t *testing.T, d *Driver) { run(t, d, testCell(t, "c", []int{2}), denyScript...) },
			call:  func(t *testing.T, d *Driver) error { return d.DestroyCell("c") },
			want:  unix.EPERM,
			check: func(t *testing.T, d *Driver) { wantCells(t, d, "c") },
		},
		{
			name:  "destroy gives the CPUs back to the root cell",
			setup: func(t *testing.T, d *Driver) { create(t, d, testCell(t, "c", []int{2, 3})) },
			call:  func(t *testing.T, d *Driver) error { return d.DestroyCell("c") },
			check: func(t *testing.T, d *Driver) {
				cells, err := d.Cells()
				must(t, err)
				if len(cells) != 1 || len(cells[0].CPUs) != 16 {
					t.Errorf("cells after destroy = %+v, want the root cell with 16 CPUs", cells)
				}
			},
		},

		// Approval (cell_shutdown_ok)
		{
			name:  "a passive cell is stopped whatever its inmate says",
			setup: func(t *testing.T, d *Driver) { run(t, d, testCell(t, "c", []int{2}, passive), denyScript...) },
			call:  func(t *testing.T, d *Driver) error { return d.DestroyCell("c") },
		},
		{
			name:  "a shut-down cell needs no approval",
			setup: func(t *testing.T, d *Driver) { run(t, d, testCell(t, "c", []int{2}), "on-shutdown deny", "exit") },
			call:  func(t *testing.T, d *Driver) error { return d.DestroyCell("c") },
		},
		{
			name:  "a failed cell needs no approval",
			setup: func(t *testing.T, d *Driver) { run(t, d, testCell(t, "c", []int{2}), "on-shutdown deny", "fail") },
			call:  func(t *testing.T, d *Driver) error { return d.LoadCell("c") },
		},
		{
			name:  "an ignored request with msg_reply_timeout 0 gives up after ReplyTimeout",
			opts:  Options{ReplyTimeout: 150 * time.Millisecond},
			setup: func(t *testing.T, d *Driver) { run(t, d, testCell(t, "c", []int{2}), "on-shutdown ignore") },
			call: func(t *testing.T, d *Driver) error {
				err := d.DestroyCell("c")
				if !errors.Is(err, ErrNoReply) {
					t.Errorf("error %v does not wrap ErrNoReply", err)
				}
				return err
			},
			want:  unix.EPERM,
			check: func(t *testing.T, d *Driver) { wantState(t, d, "c", jailhouse.StateRunning) },
		},
		{
			name: "an ignored request with msg_reply_timeout set fails the cell and goes ahead",
			setup: func(t *testing.T, d *Driver) {
				run(t, d, testCell(t, "c", []int{2}, func(c *jailhouse.Cell) { c.MsgReplyTimeout = 100000 }), "on-shutdown ignore")
			},
			call: func(t *testing.T, d *Driver) error { return d.LoadCell("c") },
			check: func(t *testing.T, d *Driver) {
				wantState(t, d, "c", jailhouse.StateShutDown)
				if text := hvConsoleText(t, d); !strings.Contains(text, "Timeout expired while waiting for reply from target cell\n") {
					t.Errorf("no timeout message on the console:\n%s", text)
				}
			},
		},

		// Test hooks
		{
			name:  "an injected error fails the next request once",
			setup: func(t *testing.T, d *Driver) { must(t, d.InjectError("create", unix.ENOMEM)) },
			call: func(t *testing.T, d *Driver) error {
				err := d.CreateCell(marshal(t, testCell(t, "c", []int{2})))
				if !errors.Is(err, ErrInjected) {
					t.Errorf("error %v does not wrap ErrInjected", err)
				}
				return err
			},
			want: unix.ENOMEM,
			check: func(t *testing.T, d *Driver) {
				wantCells(t, d)
				must(t, d.CreateCell(marshal(t, testCell(t, "c", []int{2}))))
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := openSim(t, tc.opts)
			if !tc.disabled {
				must(t, d.Enable(marshal(t, testSystem(t))))
			}
			if tc.setup != nil {
				tc.setup(t, d)
			}
			err := tc.call(t, d)
			switch {
			case tc.want == 0 && err != nil:
				t.Fatalf("got %v, want success", err)
			case tc.want != 0 && !errors.Is(err, tc.want):
				t.Fatalf("got %v, want %v (%s)", err, tc.want, unix.ErrnoName(tc.want))
			case tc.want != 0:
				var ioctlErr *jailhouse.IoctlError
				if !errors.As(err, &ioctlErr) || ioctlErr.Request == "" {
					t.Errorf("error %v is not a jailhouse.IoctlError naming the request", err)
				}
			}
			if tc.check != nil {
				tc.check(t, d)
			}
		})
	}
}

// TestRequestErrorNamesRequestAndCell checks what a user reads in an error.
func TestRequestErrorNamesRequestAndCell(t *testing.T) {
	d := enabled(t, Options{})
	create(t, d, testCell(t, "a", []int{2, 3}))
	err := d.CreateCell(marshal(t, testCell(t, "b", []int{3})))
	for _, want := range []string{"JAILHOUSE_CELL_CREATE", `"b"`, "CPU 3", `cell "a"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}
