package partition

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// prebuiltCell is a valid prebuilt cell for the qemu-arm64 board: CPU 4,
// 32 MiB of pool RAM at cell address 0, the shared PL011 and the comm
// region. Tests change it into hostile variants.
func prebuiltCell(t *testing.T, b *Board) *jailhouse.Cell {
	t.Helper()
	c, err := Plan(b, Request{Memory: 32 * mib}, nil, Allocation{Cell: "image-cell", CPUs: []int{4},
		RAM: []Range{{0x7c000000, 0x7e000000}}, UART: "pl011"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func prebuiltRootfs(t *testing.T, c *jailhouse.Cell) string {
	t.Helper()
	data, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return makeRootfs(t, configJSON(`{"cell": "/boot/x.cell"}`), rootfsFile{path: "/boot/x.cell", data: string(data)},
		rootfsFile{path: "/boot/boot.bin", data: helloScript})
}

// An image's prebuilt cell inside what the allocator may grant is taken
// as it is, renamed to the ledger's name, and the partition holds exactly
// what it names.
func TestPrebuiltCellAccepted(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	c := prebuiltCell(t, n.board)
	p, err := Create(ctx, n.options("pre", prebuiltRootfs(t, c), nil))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	a := p.Allocation()
	if !a.Prebuilt || !slices.Equal(a.CPUs, []int{4}) || !slices.Equal(a.RAM, []Range{{0x7c000000, 0x7e000000}}) ||
		a.UART != "pl011" || a.UARTDedicated {
		t.Errorf("allocation %+v", a)
	}
	if p.Config().Name != "pre" {
		t.Errorf("cell named %q, want the ledger's %q", p.Config().Name, "pre")
	}
	info, err := n.driver.Cell("pre")
	if err != nil || !slices.Equal(info.CPUs, []int{4}) {
		t.Errorf("sysfs: %+v %v", info, err)
	}
	// A generated partition now avoids what the prebuilt one holds.
	q, err := Create(ctx, n.options("gen", scriptRootfs(t, `{}`, helloScript), specWith(&specs.LinuxCPU{Cpus: "4"}, nil)))
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "CPU 4 is held by default/pre") {
		t.Errorf("a generated partition on the prebuilt one's CPU: %v", err)
	}
	if q != nil {
		q.Destroy(ctx)
	}
	if err := p.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	n.checkEmpty(t)
}

// A prebuilt cell may take as much RAM as the container was granted: its
// memory limit, or without one the default 64 MiB a generated partition
// gets. A small RAM region at cell address 0 (the loader's RAM0, as
// upstream's demo cells have) comes on top, as it does for a generated
// partition.
func TestPrebuiltCellRAMWithinTheRequest(t *testing.T) {
	resize := func(b *Board, size uint64, loader bool) *jailhouse.Cell {
		c := prebuiltCell(t, b)
		for i, m := range c.MemoryRegions {
			if m.Flags&jailhouse.MemLoadable != 0 {
				c.MemoryRegions[i].PhysStart, c.MemoryRegions[i].Size = 0x74000000, size
				c.MemoryRegions[i].VirtStart = 0x40000000
			}
		}
		if loader {
			c.MemoryRegions = append(c.MemoryRegions, jailhouse.Memory{PhysStart: 0x7c000000, VirtStart: 0, Size: b.LoaderArea,
				Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemLoadable})
		}
		c.CPUResetAddress = 0x40000000
		return c
	}
	tests := []struct {
		name   string
		size   uint64
		loader bool
		limit  int64
		ok     bool
	}{
		{name: "64 MiB without a limit", size: 64 * mib, ok: true},
		{name: "64 MiB and the loader's RAM0 without a limit", size: 64 * mib, loader: true, ok: true},
		{name: "66 MiB without a limit", size: 66 * mib},
		{name: "128 MiB with a 128 MiB limit", size: 128 * mib, limit: 128 * mib, ok: true},
		{name: "128 MiB with a 64 MiB limit", size: 128 * mib, limit: 64 * mib},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			n := newNode(t)
			var spec *specs.Spec
			if tt.limit != 0 {
				spec = specWith(nil, &specs.LinuxMemory{Limit: ptr(tt.limit)})
			}
			p, err := Create(ctx, n.options("pre", prebuiltRootfs(t, resize(n.board, tt.size, tt.loader)), spec))
			if tt.ok {
				if err != nil {
					t.Fatalf("Create: %v", err)
				}
				if err := p.Destroy(ctx); err != nil {
					t.Fatal(err)
				}
			} else {
				var pe *PrebuiltError
				if !errdefs.IsPermissionDenied(err) || !errors.As(err, &pe) || pe.Field != "memory_regions[1]" {
					t.Fatalf("Create: %v, want PermissionDenied naming memory_regions[1]", err)
				}
			}
			n.checkEmpty(t)
		})
	}
}

// Acceptance 4 of issue 4: hostile inputs are refused with
// PermissionDenied or InvalidArgument, naming what is wrong, and nothing is
// allocated: no cell, no ledger entry beyond the victim's, no saved config.
func TestHostileInputs(t *testing.T) {
	cellWith := func(change func(c *jailhouse.Cell)) func(t *testing.T, b *Board) string {
		return func(t *testing.T, b *Board) string {
			c := prebuiltCell(t, b)
			change(c)
			return prebuiltRootfs(t, c)
		}
	}
	ram := func(start, size uint64) func(c *jailhouse.Cell) {
		return func(c *jailhouse.Cell) {
			for i, m := range c.MemoryRegions {
				if m.Flags&jailhouse.MemLoadable != 0 {
					c.MemoryRegions[i].PhysStart, c.MemoryRegions[i].Size = start, size
				}
			}
		}
	}
	plain := func(t *testing.T, b *Board) string { return scriptRootfs(t, `{}`, helloScript) }
	tests := []struct {
		name   string
		rootfs func(t *testing.T, b *Board) string
		spec   *specs.Spec
		victim bool // another partition runs first, at 0x70000000 on CPUs 2-3
		is     func(error) bool
		text   string
	}{
		{name: "prebuilt cell mapping root RAM", rootfs: cellWith(ram(0x40000000, 32*mib)),
			is: errdefs.IsPermissionDenied, text: "memory_regions[1]: RAM 0x40000000-0x42000000 is root cell RAM"},
		{name: "prebuilt cell mapping hypervisor memory", rootfs: cellWith(ram(0x7fc00000, 0x400000)),
			is: errdefs.IsPermissionDenied, text: "memory_regions[1]: RAM 0x7fc00000-0x80000000 overlaps the hypervisor's memory"},
		{name: "prebuilt cell mapping the GIC distributor", rootfs: cellWith(func(c *jailhouse.Cell) {
			c.MemoryRegions = append(c.MemoryRegions, jailhouse.Memory{PhysStart: 0x08000000, VirtStart: 0x08000000, Size: 0x10000,
				Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemIO})
		}), is: errdefs.IsPermissionDenied, text: "memory_regions[3]: I/O region 0x8000000-0x8010000 (READ|WRITE|IO) overlaps the GIC distributor"},
		{name: "prebuilt cell mapping another partition's RAM", rootfs: cellWith(ram(0x70000000, 32*mib)), victim: true,
			is: errdefs.IsPermissionDenied, text: "memory_regions[1]: RAM 0x70000000-0x72000000 overlaps memory held by default/victim"},
		{name: "prebuilt cell on another partition's CPU", rootfs: cellWith(func(c *jailhouse.Cell) { _ = c.SetCPUs([]int{3}) }), victim: true,
			is: errdefs.IsPermissionDenied, text: "cpus: CPU 3 is held by default/victim"},
		{name: "prebuilt cell with CPU 0", rootfs: cellWith(func(c *jailhouse.Cell) { _ = c.SetCPUs([]int{0, 4}) }),
			is: errdefs.IsPermissionDenied, text: "cpus: CPU 0 is not available to partitions on board qemu-arm64"},
		{name: "prebuilt cell taking the shared UART from root", rootfs: cellWith(func(c *jailhouse.Cell) {
			c.MemoryRegions[0].Flags &^= jailhouse.MemRootShared
		}), is: errdefs.IsPermissionDenied, text: "maps UART pl011 0x9000000-0x9001000 without ROOTSHARED"},
		{name: "prebuilt cell taking root Linux's UART interrupt", rootfs: cellWith(func(c *jailhouse.Cell) {
			c.IRQChips = gicChips(0x08000000, []uint32{33})
		}), is: errdefs.IsPermissionDenied, text: "irqchips[0]: interrupt 33 is UART pl011's, which stays with root Linux"},
		{name: "prebuilt cell with a physical PCI device", rootfs: cellWith(func(c *jailhouse.Cell) {
			c.PCIDevices = []jailhouse.PCIDevice{{Type: jailhouse.PCITypeDevice, Domain: 0, BDF: 0x100}}
		}), is: errdefs.IsPermissionDenied, text: "pci_devices[0]: a DEVICE; partitions get no physical PCI devices"},
		{name: "prebuilt cell with shared memory outside the window", rootfs: cellWith(func(c *jailhouse.Cell) {
			c.MemoryRegions = append(c.MemoryRegions, jailhouse.Memory{PhysStart: 0x7faf0000, VirtStart: 0x7faf0000, Size: 0x1000,
				Flags: jailhouse.MemRead | jailhouse.MemRootShared})
		}), is: errdefs.IsPermissionDenied, text: "memory_regions[3]: shared memory 0x7faf0000-0x7faf1000 is root cell memory"},
		{name: "prebuilt cell with two ivshmem devices on one INTx line", rootfs: func(t *testing.T, b *Board) string {
			// Slots 0 and 4 are devices 2 and 6: both on 32 + base + 2.
			c, err := Plan(b, Request{Memory: 32 * mib}, nil, Allocation{Cell: "image-cell", CPUs: []int{4},
				RAM: []Range{{0x7c000000, 0x7e000000}}, UART: "pl011", Slots: []int{0, 4}, Pins: []uint32{140}, VPCIIRQBase: 106})
			if err != nil {
				t.Fatal(err)
			}
			return prebuiltRootfs(t, c)
		}, is: errdefs.IsPermissionDenied, text: "pci_devices[1]: device 00:06.0 has the INTx line of device 00:02.0"},
		{name: "prebuilt cell for another architecture", rootfs: cellWith(func(c *jailhouse.Cell) { c.Arch = jailhouse.ArchARM }),
			is: errdefs.IsInvalidArgument, text: "board qemu-arm64 runs"},
		{name: "prebuilt cell that is not a cell", rootfs: func(t *testing.T, b *Board) string {
			return makeRootfs(t, configJSON(`{"cell": "/boot/x.cell"}`), rootfsFile{path: "/boot/x.cell", data: "JHCLL\x02garbage"},
				rootfsFile{path: "/boot/boot.bin", data: helloScript})
		}, is: errdefs.IsInvalidArgument, text: `key "cell": /boot/x.cell:`},
		{name: "prebuilt cell larger than the memory limit", rootfs: cellWith(func(*jailhouse.Cell) {}),
			spec: specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](16 * mib)}),
			is:   errdefs.IsPermissionDenied, text: "memory_regions[1]: RAM 0x7c000000-0x7e000000 brings the cell's RAM to 32 MiB, more than its memory limit of 16 MiB"},
		{name: "prebuilt cell larger than the default memory, without a limit", rootfs: cellWith(ram(0x74000000, 128*mib)),
			is: errdefs.IsPermissionDenied, text: "memory_regions[1]: RAM 0x74000000-0x7c000000 brings the cell's RAM to 128 MiB, more than the 64 MiB a partition gets without a memory limit"},
		{name: "cpuset naming a CPU kept for Linux", rootfs: plain, spec: specWith(&specs.LinuxCPU{Cpus: "1"}, nil),
			is: errdefs.IsInvalidArgument, text: "CPU 1 is not available to partitions on board qemu-arm64"},
		{name: "memory limit larger than the pool", rootfs: plain, spec: specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](4 << 30)}),
			is: errdefs.IsInvalidArgument, text: "more than board qemu-arm64's largest partition pool holds"},
		{name: "annotation naming an address", rootfs: plain, spec: withAnnotations(nil, "runphi.io/cpus", "0x70000000"),
			is: errdefs.IsPermissionDenied, text: "never addresses"},
		{name: "annotation naming an address key", rootfs: plain, spec: withAnnotations(nil, "runphi.io/ram-phys", "1879048192"),
			is: errdefs.IsPermissionDenied, text: "never addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			n := newNode(t)
			var victim *Partition
			if tt.victim {
				var err error
				victim, err = Create(ctx, n.options("victim", scriptRootfs(t, `{}`, helloScript), specWith(&specs.LinuxCPU{Cpus: "2-3"}, nil)))
				if err != nil {
					t.Fatal(err)
				}
			}
			before, _ := n.ledger.Entries()
			_, err := Create(ctx, n.options("hostile", tt.rootfs(t, n.board), tt.spec))
			if err == nil {
				t.Fatal("Create succeeded")
			}
			if !tt.is(err) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %v\nwant the right class and %q", err, tt.text)
			}
			var pe *PrebuiltError
			if errdefs.IsPermissionDenied(err) && strings.Contains(tt.name, "prebuilt") && (!errors.As(err, &pe) || pe.File != "/boot/x.cell") {
				t.Errorf("error %v is not a *PrebuiltError naming /boot/x.cell", err)
			}
			after, _ := n.ledger.Entries()
			if len(after) != len(before) {
				t.Errorf("the ledger went from %d to %d entries", len(before), len(after))
			}
			if _, err := n.driver.Cell("hostile"); !errors.Is(err, jailhouse.ErrCellNotFound) {
				t.Errorf("a hostile cell exists: %v", err)
			}
			if victim != nil {
				if st, err := victim.State(); err != nil || st != jailhouse.StateShutDown {
					t.Errorf("the victim's cell: %v %v", st, err)
				}
				if err := victim.Destroy(ctx); err != nil {
					t.Fatal(err)
				}
			}
			n.checkEmpty(t)
		})
	}
}

// Generated cells go through jailhouse.CheckCell against the system config and
// the other live cells before anything is created: a cell the checks
// reject is FailedPrecondition naming the finding, and nothing is left.
func TestCreateRunsTheConfigChecks(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	// A cell created behind the ledger's back on CPU 2, whose config runphi
	// kept as another partition's: the ledger entry claims CPU 5, the
	// saved config says CPU 2, so the cross-cell check sees the clash the
	// allocator could not.
	other := Entry{Allocation: Allocation{Owner: "default/liar", Cell: "liar", CPUs: []int{5}, RAM: []Range{{0x7c000000, 0x7e000000}}}, Board: "qemu-arm64"}
	other.PID, other.PIDStart = self()
	writeLedger(t, n.ledger, other)
	if err := n.ledger.SaveConfig("default/liar", foreignCellConfig(t, n.board, "liar", []int{2}, Range{0x7c000000, 0x7e000000})); err != nil {
		t.Fatal(err)
	}
	_, err := Create(ctx, n.options("c", scriptRootfs(t, `{}`, helloScript), nil))
	var ce *CheckError
	if !errdefs.IsFailedPrecondition(err) || !errors.As(err, &ce) || !strings.Contains(err.Error(), `cpus: CPU 2 is also assigned to cell "liar"`) {
		t.Fatalf("Create: %v", err)
	}
	if _, err := n.driver.Cell("c"); !errors.Is(err, jailhouse.ErrCellNotFound) {
		t.Errorf("the cell was created: %v", err)
	}
	if _, found, _ := n.ledger.Lookup("default/c"); found {
		t.Error("the refused partition kept its ledger entry")
	}
}

// Networking off means no ivshmem regions and no PCI device (runPHI's
// net:"none" bug); on, the cell links up with the root cell in the
// simulator.
func TestCreateNetworking(t *testing.T) {
	tests := []struct {
		name   string
		config string
		spec   *specs.Spec
		net    bool
	}{
		{"net absent means on, as in runPHI", `{}`, nil, true},
		{"net none", `{"net": "none"}`, nil, false},
		{"annotation off wins", `{"net": "eth0"}`, withAnnotations(nil, "runphi.io/network", "off"), false},
		{"annotation on wins", `{"net": "none"}`, withAnnotations(nil, "runphi.io/network", "on"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			n := newNode(t)
			p, err := Create(ctx, n.options("c", scriptRootfs(t, tt.config, helloScript), tt.spec))
			if err != nil {
				t.Fatal(err)
			}
			c, a := p.Config(), p.Allocation()
			shared := slices.ContainsFunc(c.MemoryRegions, func(m jailhouse.Memory) bool {
				return m.Flags&jailhouse.MemRootShared != 0 && m.Flags&jailhouse.MemIO == 0
			})
			if tt.net != (len(c.PCIDevices) == 1) || tt.net != shared || tt.net != (len(a.Slots) == 1) || tt.net != (len(a.Pins) == 1) {
				t.Errorf("net %v: %d PCI devices, ivshmem regions %v, slots %v, pins %v", tt.net, len(c.PCIDevices), shared, a.Slots, a.Pins)
			}
			if !tt.net && (len(c.IRQChips) != 0 || len(c.MemoryRegions) != 3) {
				t.Errorf("without network: irqchips %v, %d regions (want UART, RAM, comm)", c.IRQChips, len(c.MemoryRegions))
			}
			if err := p.Destroy(ctx); err != nil {
				t.Fatal(err)
			}
			n.checkEmpty(t)
		})
	}
}
