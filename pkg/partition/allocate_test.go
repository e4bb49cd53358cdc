package partition

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

var propertySeed = flag.Uint64("property.seed", 0, "seed of the allocator property test (0: time-based, printed)")

// sharing lists every way live allocations break the allocator's promise:
// no CPU, byte of own RAM, interrupt, ivshmem slot, dedicated UART, RPU or
// link device shared between two partitions (a link's memory and device
// shared only by the link's two ends), no INTx line shared by two PCI
// devices of one cell, and nothing outside what the board gives partitions.
func sharing(b *Board, as []Allocation) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	cpus, pins, slots, uarts, rpus := map[int]string{}, map[uint32]string{}, map[int]string{}, map[string]string{}, map[int]string{}
	type linkEnd struct {
		owner string
		l     Link
	}
	devices := map[int][]linkEnd{}
	var ram []heldRange
	inPools := func(r Range) bool { return slices.ContainsFunc(b.Pools, func(p Range) bool { return p.Contains(r) }) }
	for _, a := range as {
		for _, c := range a.CPUs {
			if !slices.Contains(b.PartitionCPUs, c) {
				fail("%s has CPU %d, not a partition CPU", a.Owner, c)
			}
			if o, ok := cpus[c]; ok {
				fail("CPU %d given to %s and %s", c, o, a.Owner)
			}
			cpus[c] = a.Owner
		}
		for i, r := range a.RAM {
			if !inPools(r) || r.Start%pageSize != 0 || r.Size()%pageSize != 0 {
				fail("%s has RAM %s outside the pools or unaligned", a.Owner, r)
			}
			if i == 0 && !a.Prebuilt && (r.Start%b.Granule != 0 || r.Size()%b.Granule != 0) {
				fail("%s has main RAM %s not aligned to the granule %#x", a.Owner, r, b.Granule)
			}
			ram = append(ram, heldRange{r, a.Owner})
		}
		for _, p := range a.Pins {
			dedicated := a.UARTDedicated && b.uart(a.UART) != nil && b.uart(a.UART).SPI == p
			if !slices.Contains(b.SPIs, p) && !dedicated {
				fail("%s has interrupt %d, not one partitions may receive", a.Owner, p)
			}
			if o, ok := pins[p]; ok {
				fail("interrupt %d given to %s and %s", p, o, a.Owner)
			}
			pins[p] = a.Owner
		}
		for _, k := range a.Slots {
			if k < 0 || k >= b.IVSHMEM.Slots {
				fail("%s has ivshmem slot %d of %d", a.Owner, k, b.IVSHMEM.Slots)
			}
			if o, ok := slots[k]; ok {
				fail("ivshmem slot %d given to %s and %s", k, o, a.Owner)
			}
			slots[k] = a.Owner
		}
		if a.UARTDedicated {
			if o, ok := uarts[a.UART]; ok {
				fail("dedicated UART %s given to %s and %s", a.UART, o, a.Owner)
			}
			uarts[a.UART] = a.Owner
		}
		for _, r := range a.RPUs {
			if !slices.Contains(b.RPUs, r) {
				fail("%s has RPU %d, not one of the board's %v", a.Owner, r, b.RPUs)
			}
			if o, ok := rpus[r]; ok {
				fail("RPU %d given to %s and %s", r, o, a.Owner)
			}
			rpus[r] = a.Owner
		}
		for _, l := range a.Links {
			if !inPools(l.Mem) {
				fail("%s has link memory %s outside the pools", a.Owner, l.Mem)
			}
			devices[l.Device] = append(devices[l.Device], linkEnd{a.Owner, l})
		}
	}
	for _, a := range as {
		// Jailhouse raises device d's INTx on SPI 32 + vpci_irq_base +
		// (d & 3): two devices of one cell on one line leave the inmate
		// unable to tell which one interrupted.
		lines := map[uint32]int{}
		devs := slices.Clone(a.Slots)
		for i, k := range devs {
			devs[i] = b.IVSHMEM.Device(k)
		}
		for _, l := range a.Links {
			devs = append(devs, l.Device)
		}
		for _, d := range devs {
			line := 32 + a.VPCIIRQBase + uint32(d&3)
			if other, ok := lines[line]; ok {
				fail("%s: PCI devices %d and %d share INTx line %d", a.Owner, other, d, line)
			}
			lines[line] = d
			if !slices.Contains(a.Pins, line) {
				fail("%s: PCI device %d's INTx line %d is not among its interrupts %v", a.Owner, d, line, a.Pins)
			}
		}
	}
	for dev, ends := range devices {
		switch {
		case len(ends) > 2:
			fail("link device %d used by %d partitions", dev, len(ends))
		case len(ends) == 2:
			x, y := ends[0], ends[1]
			if x.l.Peer != y.owner || y.l.Peer != x.owner || x.l.Mem != y.l.Mem || x.l.ID == y.l.ID {
				fail("link device %d shared by %s and %s, which are not the two ends of one link: %+v %+v", dev, x.owner, y.owner, x.l, y.l)
			}
		}
		if len(ends) > 0 {
			// A link's memory is its own: no partition's RAM, no other link's.
			mem := ends[0].l.Mem
			for _, h := range ram {
				if h.r.Overlaps(mem) {
					fail("link memory %s of device %d overlaps RAM %s of %s", mem, dev, h.r, h.holder)
				}
			}
			for d2, e2 := range devices {
				if d2 != dev && e2[0].l.Mem.Overlaps(mem) {
					fail("link memory %s of device %d overlaps that of device %d", mem, dev, d2)
				}
			}
		}
	}
	for i, x := range ram {
		for _, y := range ram[i+1:] {
			if x.r.Overlaps(y.r) {
				fail("RAM %s of %s overlaps %s of %s", x.r, x.holder, y.r, y.holder)
			}
		}
	}
	return bad
}

func allocations(f *ledgerFile) []Allocation {
	as := make([]Allocation, len(f.Entries))
	for i, e := range f.Entries {
		as[i] = e.Allocation
	}
	return as
}

// boardWith loads a built-in profile with text replacements applied.
func boardWith(t testing.TB, name string, replace ...string) *Board {
	t.Helper()
	data, err := BuiltinBoardSource(name)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for i := 0; i < len(replace); i += 2 {
		if !strings.Contains(text, replace[i]) {
			t.Fatalf("profile %s does not contain %q", name, replace[i])
		}
		text = strings.Replace(text, replace[i], replace[i+1], 1)
	}
	b, err := ParseBoard("test:"+name, []byte(text))
	if err != nil {
		t.Fatalf("ParseBoard: %v", err)
	}
	return b
}

// qemuWithDedicatedUART is qemu-arm64 with a second PL011 (QEMU's secure
// UART address) that partitions may have alone.
func qemuWithDedicatedUART(t testing.TB) *Board {
	return boardWith(t, "qemu-arm64", "[partitions.ivshmem]", `[[partitions.uarts]]
name = "pl011-2"
address = 0x09040000
size = 0x1000
spi = 40
[partitions.uarts.console]
type = "pl011"
flags = ["mmio", "regdist-4"]

[partitions.ivshmem]`)
}

func TestAllocateResources(t *testing.T) {
	qemu := mustBoard(t)
	zcu, err := LoadBoard("zcu104")
	if err != nil {
		t.Fatal(err)
	}
	rpi, err := LoadBoard("rpi4")
	if err != nil {
		t.Fatal(err)
	}
	dedicated := qemuWithDedicatedUART(t)
	twoSlots := boardWith(t, "qemu-arm64", "slots = 16\nfirst_device = 2", "slots = 2\nfirst_device = 2",
		"size = 0x1000000\nslots", "size = 0x200000\nslots")

	type step struct {
		owner string
		req   Request
	}
	tests := []struct {
		name   string
		board  *Board
		before []step
		req    Request
		check  func(t *testing.T, a Allocation)
		err    func(error) bool
		text   string
	}{
		{
			name:  "network takes the lowest slot and one INTx line on an allocated SPI",
			board: qemu,
			req:   Request{NumCPUs: 1, Memory: 64 * mib, Net: true},
			check: func(t *testing.T, a Allocation) {
				// Slot 0 is device 2: INTx line 32 + base + (2 & 3) = 140.
				if !slices.Equal(a.Slots, []int{0}) || !slices.Equal(a.Pins, []uint32{140}) || a.VPCIIRQBase != 106 {
					t.Errorf("slots %v pins %v base %d, want [0] [140] 106", a.Slots, a.Pins, a.VPCIIRQBase)
				}
			},
		},
		{
			name:   "the second networked partition gets the next slot and its own line",
			board:  qemu,
			before: []step{{"ns/a", Request{NumCPUs: 1, Memory: 64 * mib, Net: true}}},
			req:    Request{NumCPUs: 1, Memory: 64 * mib, Net: true},
			check: func(t *testing.T, a Allocation) {
				if !slices.Equal(a.Slots, []int{1}) || !slices.Equal(a.Pins, []uint32{141}) || a.VPCIIRQBase != 106 {
					t.Errorf("slots %v pins %v base %d, want [1] [141] 106", a.Slots, a.Pins, a.VPCIIRQBase)
				}
			},
		},
		{
			name:  "no network, no slot and no interrupt",
			board: qemu,
			req:   Request{NumCPUs: 2, Memory: 64 * mib},
			check: func(t *testing.T, a Allocation) {
				if a.Slots != nil || a.Pins != nil || a.UART != "pl011" || a.UARTDedicated {
					t.Errorf("slots %v pins %v uart %q dedicated %v", a.Slots, a.Pins, a.UART, a.UARTDedicated)
				}
			},
		},
		{
			name:   "the loader area fills a leftover, not the next granule hole",
			board:  qemu,
			before: []step{{"ns/a", Request{NumCPUs: 1, Memory: 2 * mib, Loader: true}}},
			req:    Request{NumCPUs: 1, Memory: 2 * mib, Loader: true},
			check: func(t *testing.T, a Allocation) {
				// ns/a: main 0x70000000, loader 0x70200000 (64 KiB);
				// this one: main 0x70400000, loader right after ns/a's.
				want := []Range{{0x70400000, 0x70600000}, {0x70210000, 0x70220000}}
				if !a.Loader || !slices.Equal(a.RAM, want) {
					t.Errorf("RAM %v loader %v, want %v", a.RAM, a.Loader, want)
				}
			},
		},
		{
			name:  "a dedicated UART comes with its interrupt",
			board: dedicated,
			req:   Request{NumCPUs: 1, Memory: 2 * mib, UART: UARTDedicated},
			check: func(t *testing.T, a Allocation) {
				if a.UART != "pl011-2" || !a.UARTDedicated || !slices.Equal(a.Pins, []uint32{40}) {
					t.Errorf("uart %q dedicated %v pins %v", a.UART, a.UARTDedicated, a.Pins)
				}
			},
		},
		{
			name:   "a dedicated UART goes to one partition at a time",
			board:  dedicated,
			before: []step{{"ns/a", Request{NumCPUs: 1, Memory: 2 * mib, UART: UARTDedicated}}},
			req:    Request{NumCPUs: 1, Memory: 2 * mib, UART: UARTDedicated},
			err:    errdefs.IsResourceExhausted,
			text:   "uart: asked a dedicated UART, all are held: pl011-2 (held by ns/a)",
		},
		{
			name:  "no dedicated UART on the board",
			board: qemu,
			req:   Request{NumCPUs: 1, Memory: 2 * mib, UART: UARTDedicated},
			err:   errdefs.IsInvalidArgument,
			text:  "has no UART for one partition alone",
		},
		{
			name:  "no UART",
			board: qemu,
			req:   Request{NumCPUs: 1, Memory: 2 * mib, UART: UARTNone},
			check: func(t *testing.T, a Allocation) {
				if a.UART != "" {
					t.Errorf("uart %q", a.UART)
				}
			},
		},
		{
			name:   "as many network links as the window has slots",
			board:  twoSlots,
			before: []step{{"ns/a", Request{NumCPUs: 1, Memory: 2 * mib, Net: true}}, {"ns/b", Request{NumCPUs: 1, Memory: 2 * mib, Net: true}}},
			req:    Request{NumCPUs: 1, Memory: 2 * mib, Net: true},
			err:    errdefs.IsResourceExhausted,
			text:   "ivshmem: asked a network link, all 2 slots of the ivshmem window are held",
		},
		{
			name:  "a link opens on the first free link device with one granule of pool memory",
			board: qemu,
			req:   Request{NumCPUs: 1, Memory: 2 * mib, Links: []string{"b"}},
			check: func(t *testing.T, a Allocation) {
				// Device 18: INTx line 32 + base + (18 & 3) = 140.
				want := []Link{{Peer: "ns/b", Device: 18, Mem: Range{0x70200000, 0x70400000}, ID: 0}}
				if !slices.Equal(a.Links, want) || !slices.Equal(a.Pins, []uint32{140}) || a.VPCIIRQBase != 106 {
					t.Errorf("links %+v pins %v base %d, want %+v [140] 106", a.Links, a.Pins, a.VPCIIRQBase, want)
				}
			},
		},
		{
			name:   "the peer joins the same link as end 1, on its own interrupt",
			board:  qemu,
			before: []step{{"ns/a", Request{NumCPUs: 1, Memory: 2 * mib, Links: []string{"new"}}}},
			req:    Request{NumCPUs: 1, Memory: 2 * mib, Links: []string{"a"}},
			check: func(t *testing.T, a Allocation) {
				want := []Link{{Peer: "ns/a", Device: 18, Mem: Range{0x70200000, 0x70400000}, ID: 1}}
				if !slices.Equal(a.Links, want) || !slices.Equal(a.Pins, []uint32{141}) {
					t.Errorf("links %+v pins %v, want %+v [141]", a.Links, a.Pins, want)
				}
			},
		},
		{
			// The tester's case: network slot 0 is device 2 and the first
			// link device is 18, both on line 32 + base + 2.
			name:  "the network link and a partition link get INTx lines of their own",
			board: qemu,
			req:   Request{NumCPUs: 1, Memory: 2 * mib, Net: true, Links: []string{"b"}},
			check: func(t *testing.T, a Allocation) {
				if !slices.Equal(a.Slots, []int{0}) || len(a.Links) != 1 || a.Links[0].Device != 19 ||
					!slices.Equal(a.Pins, []uint32{140, 141}) || a.VPCIIRQBase != 106 {
					t.Errorf("slots %v links %+v pins %v base %d, want slot 0 (device 2), link device 19, pins [140 141], base 106",
						a.Slots, a.Links, a.Pins, a.VPCIIRQBase)
				}
			},
		},
		{
			name:  "a link to itself",
			board: qemu,
			req:   Request{NumCPUs: 1, Memory: 2 * mib, Links: []string{"new"}},
			err:   errdefs.IsInvalidArgument,
			text:  "cannot link to itself",
		},
		{
			name: "INTx lines run out before slots on rpi4",
			// rpi4 gives partitions interrupts 186-188 only.
			board: rpi,
			before: []step{
				{"ns/a", Request{NumCPUs: 1, Memory: 2 * mib, Net: true, Links: []string{"x"}}},
				{"ns/b", Request{NumCPUs: 1, Memory: 2 * mib, Net: true}},
			},
			req:  Request{NumCPUs: 1, Memory: 2 * mib, Net: true},
			err:  errdefs.IsResourceExhausted,
			text: "interrupt: asked an INTx line for the network link: none free of interrupts 186-188",
		},
		{
			name:  "RPUs on an Omnivisor board",
			board: zcu,
			req:   Request{Memory: 2 * mib, RPUs: 2},
			check: func(t *testing.T, a Allocation) {
				if !slices.Equal(a.RPUs, []int{0, 1}) || a.CPUs != nil {
					t.Errorf("rpus %v cpus %v", a.RPUs, a.CPUs)
				}
			},
		},
		{
			name:   "RPUs run out",
			board:  zcu,
			before: []step{{"ns/a", Request{Memory: 2 * mib, RPUs: 1}}},
			req:    Request{Memory: 2 * mib, RPUs: 2},
			err:    errdefs.IsResourceExhausted,
			text:   "rpu: asked 2 RPUs, 1 free (1) of RPUs 0-1",
		},
		{
			name:   "the last CPU taken: one CPU asked, none free, no empty list",
			board:  qemu,
			before: []step{{"ns/a", Request{NumCPUs: 14, Memory: 2 * mib}}},
			req:    Request{NumCPUs: 1, Memory: 2 * mib},
			err:    errdefs.IsResourceExhausted,
			text:   "cpu: asked 1 CPU, none free of partition CPUs 2-15",
		},
		{
			name:   "the last RPU taken",
			board:  zcu,
			before: []step{{"ns/a", Request{Memory: 2 * mib, RPUs: 2}}},
			req:    Request{Memory: 2 * mib, RPUs: 1},
			err:    errdefs.IsResourceExhausted,
			text:   "rpu: asked 1 RPU, none free of RPUs 0-1",
		},
		{
			name:  "no RPUs on the board",
			board: qemu,
			req:   Request{Memory: 2 * mib, RPUs: 1},
			err:   errdefs.IsInvalidArgument,
			text:  "has no Cortex-R5 RPUs",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f ledgerFile
			for _, s := range tt.before {
				if _, err := allocateEntry(&f, nil, s.owner, tt.board, s.req); err != nil {
					t.Fatalf("before: %s: %v", s.owner, err)
				}
			}
			n := len(f.Entries)
			a, err := allocateEntry(&f, nil, "ns/new", tt.board, tt.req)
			if tt.err != nil {
				if err == nil || !tt.err(err) || !strings.Contains(err.Error(), tt.text) {
					t.Fatalf("error %v, want one saying %q", err, tt.text)
				}
				if len(f.Entries) != n {
					t.Error("a failed allocation changed the ledger")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, a)
			if bad := sharing(tt.board, allocations(&f)); len(bad) > 0 {
				t.Errorf("sharing: %v", bad)
			}
		})
	}
}

// A partition joins every link opened towards it, on the devices their
// openers chose: links opened towards one peer must already be on INTx
// lines of their own, or the peer could never take them all.
func TestLinksTowardsOnePeerOnDistinctLines(t *testing.T) {
	b := mustBoard(t)
	var f ledgerFile
	alloc := func(owner string, req Request) Allocation {
		t.Helper()
		a, err := allocateEntry(&f, nil, owner, b, req)
		if err != nil {
			t.Fatalf("%s: %v", owner, err)
		}
		return a
	}
	link := func(peers ...string) Request { return Request{NumCPUs: 1, Memory: 2 * mib, Links: peers} }
	// w1-w4 take link devices 18-21, so a's link to p is on 22 (line 2);
	// with w1 gone, the lowest free device is 18, line 2 again.
	for _, w := range []string{"w1", "w2", "w3", "w4"} {
		alloc("ns/"+w, link("z"+w))
	}
	if a := alloc("ns/a", link("p")); a.Links[0].Device != 22 {
		t.Fatalf("a's link on device %d, want 22", a.Links[0].Device)
	}
	releaseEntry(&f, "ns/w1")
	bl := alloc("ns/b", link("p")).Links[0]
	if bl.Device&3 == 22&3 {
		t.Errorf("b's link to p on device %d, the line of a's link to p (device 22)", bl.Device)
	}
	p := alloc("ns/p", Request{NumCPUs: 1, Memory: 2 * mib, Net: true, Links: []string{"a", "b"}})
	if len(p.Links) != 2 || p.Links[0].ID != 1 || p.Links[1].ID != 1 || len(p.Pins) != 3 {
		t.Errorf("p: links %+v pins %v, want both links joined and 3 interrupts", p.Links, p.Pins)
	}
	if bad := sharing(b, allocations(&f)); len(bad) > 0 {
		t.Errorf("sharing: %v", bad)
	}
}

// randomRequest draws a request a container could make on b.
func randomRequest(rng *rand.Rand, b *Board, live []string) Request {
	req := Request{NumCPUs: 1 + rng.IntN(3), Memory: uint64(1+rng.IntN(24)) * b.Granule}
	if rng.IntN(8) == 0 {
		req.Memory = uint64(1+rng.IntN(int(b.largestBlock()/b.Granule))) * b.Granule
	}
	if rng.IntN(6) == 0 {
		// An explicit cpuset of 1-2 partition CPUs.
		n := 1 + rng.IntN(2)
		perm := rng.Perm(len(b.PartitionCPUs))[:n]
		for _, i := range perm {
			req.CPUs = append(req.CPUs, b.PartitionCPUs[i])
		}
		slices.Sort(req.CPUs)
		req.NumCPUs = len(req.CPUs)
	}
	req.Net = b.IVSHMEM.Slots > 0 && rng.IntN(2) == 0
	req.Loader = b.LoaderArea > 0 && rng.IntN(3) == 0
	req.UART = UARTMode(rng.IntN(4))
	if rng.IntN(5) == 0 {
		// A link to a live partition (joining, if it opened one towards
		// us) or to one that does not exist yet.
		if len(live) > 0 && rng.IntN(2) == 0 {
			req.Links = []string{strings.TrimPrefix(live[rng.IntN(len(live))], "ns/")}
		} else {
			req.Links = []string{fmt.Sprintf("p%d", rng.IntN(40))}
		}
	}
	if len(b.RPUs) > 0 && rng.IntN(6) == 0 {
		req.RPUs = 1 + rng.IntN(len(b.RPUs))
		if rng.IntN(2) == 0 {
			req.CPUs, req.NumCPUs = nil, 0
		}
	}
	return req
}

// Acceptance 1 of issue 4: random create/destroy sequences with random
// sizes on every shipped profile never make two live partitions share a
// CPU, a byte of RAM, an interrupt or an ivshmem slot (nor a dedicated
// UART, an RPU or a link), and destroying everything gives back the empty
// ledger. It drives allocateEntry, the ledger's allocation without the
// file; every 500th sequence also plans every live cell and runs
// jailhouse.Check over all of them against the board's system config.
func TestAllocatorNeverShares(t *testing.T) {
	sequences := 10000
	if testing.Short() {
		sequences = 1000
	}
	seed := *propertySeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -property.seed=%d)", seed, seed)
	for bi, name := range BuiltinBoards() {
		t.Run(name, func(t *testing.T) {
			b, err := LoadBoard(name)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(seed, uint64(bi)))
			var creates, refusals, steps int
			empty, _ := json.Marshal(ledgerFile{Version: ledgerVersion})
			for seq := range sequences {
				f := ledgerFile{Version: ledgerVersion}
				var live []string
				n := 1 + rng.IntN(24)
				for step := range n {
					steps++
					if len(live) > 0 && rng.IntN(3) == 0 {
						i := rng.IntN(len(live))
						releaseEntry(&f, live[i])
						live = slices.Delete(live, i, i+1)
					} else {
						owner := fmt.Sprintf("ns/p%d", rng.IntN(40))
						if slices.Contains(live, owner) {
							continue
						}
						req := randomRequest(rng, b, live)
						before := len(f.Entries)
						_, err := allocateEntry(&f, nil, owner, b, req)
						switch {
						case err == nil:
							creates++
							live = append(live, owner)
						case errdefs.IsResourceExhausted(err) || errdefs.IsInvalidArgument(err):
							refusals++
							if len(f.Entries) != before {
								t.Fatalf("seq %d step %d: a refused allocation changed the ledger: %v", seq, step, err)
							}
							// ResourceExhausted means "not now": the request
							// fits the empty board; InvalidArgument means
							// "never": it does not. (Links are left out:
							// joining a live peer's link takes less than
							// opening it on an empty board.)
							if len(req.Links) == 0 {
								var empty ledgerFile
								_, alone := allocateEntry(&empty, nil, owner, b, req)
								if exhausted := errdefs.IsResourceExhausted(err); exhausted != (alone == nil) {
									t.Fatalf("seq %d step %d: %+v refused with %v, and on the empty board: %v", seq, step, req, err, alone)
								}
							}
						default:
							t.Fatalf("seq %d step %d: %+v: unexpected error %v", seq, step, req, err)
						}
					}
					if bad := sharing(b, allocations(&f)); len(bad) > 0 {
						t.Fatalf("seq %d step %d: %s", seq, step, strings.Join(bad, "\n"))
					}
				}
				if seq%500 == 0 {
					checkPlans(t, b, &f)
				}
				for _, i := range rng.Perm(len(live)) {
					releaseEntry(&f, live[i])
				}
				if len(f.Entries) == 0 {
					f.Entries = nil
				}
				if got, _ := json.Marshal(f); string(got) != string(empty) {
					t.Fatalf("seq %d: ledger after destroying all is %s, want %s", seq, got, empty)
				}
			}
			if creates == 0 || refusals == 0 {
				t.Errorf("%d creates and %d refusals: the draw does not reach both", creates, refusals)
			}
			t.Logf("%d sequences, %d steps, %d creates, %d refusals", sequences, steps, creates, refusals)
		})
	}
}

// releaseEntry drops owner's entry from f, as Release does.
func releaseEntry(f *ledgerFile, owner string) {
	f.Entries = slices.DeleteFunc(f.Entries, func(e Entry) bool { return e.Owner == owner })
}

// checkPlans plans every live allocation (loaded at a cell address where
// any pool's worth of RAM fits, which is also one that needs the loader
// area) and runs
// the offline checks over all the cells together.
func checkPlans(t *testing.T, b *Board, f *ledgerFile) {
	t.Helper()
	var cells []*jailhouse.Cell
	for _, e := range f.Entries {
		if len(e.CPUs) == 0 {
			continue // an RPU partition: its cell arrives with issue 6
		}
		// RAM at 0x40000000 fits every pool below the comm region and
		// above the GIC of every shipped board.
		d := &BootDescription{File: "/boot/config.json", HasStartingVAddress: true, StartingVAddress: 0x40000000}
		req := Request{Memory: e.RAM[0].Size()}
		c, err := Plan(b, req, d, e.Allocation)
		if err != nil {
			t.Fatalf("Plan(%+v): %v", e.Allocation, err)
		}
		if got := Pins(c, b.GICAddress); !slices.Equal(got, e.Pins) {
			t.Errorf("%s: irqchip bitmap gives %v, the allocation %v", e.Owner, got, e.Pins)
		}
		if len(c.PCIDevices) != len(e.Slots)+len(e.Links) {
			t.Errorf("%s: %d PCI devices for %d slots and %d links", e.Owner, len(c.PCIDevices), len(e.Slots), len(e.Links))
		}
		cells = append(cells, c)
	}
	for _, fd := range jailhouse.Check(b.system, cells...) {
		if fd.Severity == jailhouse.SeverityError {
			t.Errorf("board %s, %d live cells: %v", b.Name, len(cells), fd)
		}
	}
}

func TestAllocateErrorsNameTheResource(t *testing.T) {
	b := mustBoard(t)
	var f ledgerFile
	if _, err := allocateEntry(&f, nil, "ns/a", b, Request{NumCPUs: 10, Memory: 2 * mib}); err != nil {
		t.Fatal(err)
	}
	_, err := allocateEntry(&f, nil, "ns/b", b, Request{NumCPUs: 5, Memory: 2 * mib})
	var ee *ExhaustedError
	if !errors.As(err, &ee) || ee.Resource != "cpu" {
		t.Errorf("5 CPUs with 4 free: %v", err)
	}
}
