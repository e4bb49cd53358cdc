package partition

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
)

const mib = 1 << 20

func newLedger(t *testing.T) *Ledger {
	t.Helper()
	return OpenLedger(filepath.Join(t.TempDir(), "state", "ledger.json"))
}

func mustAllocate(t *testing.T, l *Ledger, owner string, b *Board, req Request) Allocation {
	t.Helper()
	a, err := l.Allocate(context.Background(), nil, owner, b, req)
	if err != nil {
		t.Fatalf("Allocate(%s, %+v): %v", owner, req, err)
	}
	return a
}

// checkDisjoint fails if two allocations share a CPU or a byte of RAM, or
// if any lies outside the board's partition CPUs and pool.
func checkDisjoint(t *testing.T, b *Board, as []Allocation) {
	t.Helper()
	cpuOwner := map[int]string{}
	for i, a := range as {
		for _, c := range a.CPUs {
			if !slices.Contains(b.PartitionCPUs, c) {
				t.Errorf("%s got CPU %d, not a partition CPU", a.Owner, c)
			}
			if o, ok := cpuOwner[c]; ok {
				t.Errorf("CPU %d given to %s and %s", c, o, a.Owner)
			}
			cpuOwner[c] = a.Owner
		}
		for _, r := range a.RAM {
			if !b.Pool.Contains(r) {
				t.Errorf("%s got RAM %s outside the pool %s", a.Owner, r, b.Pool)
			}
			if r.Start%b.Granule != 0 || r.Size()%b.Granule != 0 {
				t.Errorf("%s got RAM %s not aligned to the granule %#x", a.Owner, r, b.Granule)
			}
			for _, o := range as[i+1:] {
				for _, q := range o.RAM {
					if r.Overlaps(q) {
						t.Errorf("RAM %s of %s overlaps %s of %s", r, a.Owner, q, o.Owner)
					}
				}
			}
		}
	}
}

func TestLedgerAllocationsAreDisjoint(t *testing.T) {
	b := mustBoard(t)
	l := newLedger(t)
	var as []Allocation
	for i, req := range []Request{
		{NumCPUs: 1, Memory: 64 * mib},
		{NumCPUs: 2, Memory: 16 * mib},
		{CPUs: []int{9, 10}, NumCPUs: 2, Memory: 2 * mib},
		{NumCPUs: 3, Memory: 100 * mib},
	} {
		as = append(as, mustAllocate(t, l, fmt.Sprintf("default/c%d", i), b, req))
	}
	checkDisjoint(t, b, as)
	// First fit: the lowest free CPUs, the lowest free RAM.
	if !slices.Equal(as[0].CPUs, []int{2}) || !slices.Equal(as[1].CPUs, []int{3, 4}) ||
		!slices.Equal(as[2].CPUs, []int{9, 10}) || !slices.Equal(as[3].CPUs, []int{5, 6, 7}) {
		t.Errorf("CPUs %v %v %v %v", as[0].CPUs, as[1].CPUs, as[2].CPUs, as[3].CPUs)
	}
	if as[0].RAM[0] != (Range{0x70000000, 0x74000000}) || as[1].RAM[0] != (Range{0x74000000, 0x75000000}) {
		t.Errorf("RAM %s %s", as[0].RAM[0], as[1].RAM[0])
	}
	entries, err := l.Entries()
	if err != nil || len(entries) != 4 {
		t.Fatalf("Entries = %d, %v", len(entries), err)
	}
	if entries[0].Board != "qemu-arm64" || entries[0].Created.IsZero() || entries[0].PID != os.Getpid() {
		t.Errorf("entry metadata %+v", entries[0])
	}
}

func TestLedgerReleaseFreesForReuse(t *testing.T) {
	b := mustBoard(t)
	l := newLedger(t)
	a := mustAllocate(t, l, "default/a", b, Request{NumCPUs: 2, Memory: 64 * mib})
	mustAllocate(t, l, "default/b", b, Request{NumCPUs: 1, Memory: 64 * mib})
	if err := l.Release("default/a"); err != nil {
		t.Fatal(err)
	}
	// Releasing again, or releasing a stranger, is fine.
	if err := l.Release("default/a"); err != nil {
		t.Errorf("second Release: %v", err)
	}
	if err := l.Release("default/nobody"); err != nil {
		t.Errorf("Release of an unknown owner: %v", err)
	}
	c := mustAllocate(t, l, "default/c", b, Request{NumCPUs: 2, Memory: 32 * mib})
	if !slices.Equal(c.CPUs, a.CPUs) || c.RAM[0].Start != a.RAM[0].Start {
		t.Errorf("after release got %v %s, want the freed %v at %#x", c.CPUs, c.RAM[0], a.CPUs, a.RAM[0].Start)
	}
	if _, found, _ := l.Lookup("default/a"); found {
		t.Error("released owner still in the ledger")
	}
}

func TestLedgerExhaustion(t *testing.T) {
	b := mustBoard(t)
	tests := []struct {
		name     string
		before   []Request
		req      Request
		resource string
		text     string
	}{
		{
			name:     "memory larger than what is left",
			before:   []Request{{NumCPUs: 1, Memory: 128 * mib}},
			req:      Request{NumCPUs: 1, Memory: 106 * mib},
			resource: "memory",
			text:     "memory: asked 106 MiB, largest free block 104 MiB in pool 0x70000000-0x7e800000",
		},
		{
			name:     "more CPUs than left",
			before:   []Request{{NumCPUs: 12, Memory: 2 * mib}},
			req:      Request{NumCPUs: 3, Memory: 2 * mib},
			resource: "cpu",
			text:     "cpu: asked 3 CPUs, 2 free (14-15) of partition CPUs 2-15",
		},
		{
			name:     "explicit CPU already held",
			before:   []Request{{NumCPUs: 2, Memory: 2 * mib}},
			req:      Request{CPUs: []int{3, 4}, NumCPUs: 2, Memory: 2 * mib},
			resource: "cpu",
			text:     "cpu: asked CPUs 3-4, CPU 3 is held by default/before0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLedger(t)
			for i, r := range tt.before {
				mustAllocate(t, l, fmt.Sprintf("default/before%d", i), b, r)
			}
			_, err := l.Allocate(context.Background(), nil, "default/new", b, tt.req)
			if err == nil {
				t.Fatal("Allocate succeeded")
			}
			if !errdefs.IsResourceExhausted(err) {
				t.Errorf("error %v is not ResourceExhausted", err)
			}
			var ee *ExhaustedError
			if !errors.As(err, &ee) || ee.Resource != tt.resource {
				t.Errorf("error %v is not an ExhaustedError for %s", err, tt.resource)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q\ndoes not say %q", err, tt.text)
			}
			// All or nothing: the failed owner holds nothing.
			if _, found, _ := l.Lookup("default/new"); found {
				t.Error("failed allocation left an entry")
			}
			entries, _ := l.Entries()
			if len(entries) != len(tt.before) {
				t.Errorf("%d entries, want %d", len(entries), len(tt.before))
			}
		})
	}
}

func TestLedgerRejects(t *testing.T) {
	b := mustBoard(t)
	l := newLedger(t)
	mustAllocate(t, l, "default/a", b, Request{NumCPUs: 1, Memory: 2 * mib})
	tests := []struct {
		name  string
		owner string
		req   Request
		is    func(error) bool
	}{
		{"owner already allocated", "default/a", Request{NumCPUs: 1, Memory: 2 * mib}, errdefs.IsAlreadyExists},
		{"owner without namespace", "a", Request{NumCPUs: 1, Memory: 2 * mib}, errdefs.IsInvalidArgument},
		{"CPU kept for Linux", "default/b", Request{CPUs: []int{1}, NumCPUs: 1, Memory: 2 * mib}, errdefs.IsInvalidArgument},
		{"no CPU", "default/b", Request{NumCPUs: 0, Memory: 2 * mib}, errdefs.IsInvalidArgument},
		{"no memory", "default/b", Request{NumCPUs: 1}, errdefs.IsInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.Allocate(context.Background(), nil, tt.owner, b, tt.req)
			if err == nil || !tt.is(err) {
				t.Errorf("Allocate: %v", err)
			}
		})
	}
	if entries, _ := l.Entries(); len(entries) != 1 {
		t.Errorf("%d entries after rejected allocations, want 1", len(entries))
	}
}

func TestLedgerFile(t *testing.T) {
	b := mustBoard(t)
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "ledger.json")
	l1, l2 := OpenLedger(path), OpenLedger(path)
	mustAllocate(t, l1, "default/a", b, Request{NumCPUs: 1, Memory: 2 * mib})
	// A second Ledger value on the same file sees and respects the first's entry.
	a2 := mustAllocate(t, l2, "default/b", b, Request{NumCPUs: 1, Memory: 2 * mib})
	if slices.Equal(a2.CPUs, []int{2}) {
		t.Errorf("second ledger value reused CPU 2")
	}
	entries, err := l1.Entries()
	if err != nil || len(entries) != 2 {
		t.Fatalf("Entries via the first value: %d, %v", len(entries), err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode(), want)
		}
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"start": "0x70000000"`) {
		t.Errorf("ledger does not show addresses in hex:\n%s", data)
	}
	// No temporary files are left behind.
	names, _ := filepath.Glob(filepath.Join(dir, "*tmp*"))
	if len(names) != 0 {
		t.Errorf("leftover files %v", names)
	}
}

func TestLedgerCorruptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.json")
	if err := os.WriteFile(path, []byte("{\"version\": 1, \"entries\": [}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenLedger(path).Entries()
	if err == nil || !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), "line 1") {
		t.Errorf("Entries on a corrupt ledger: %v", err)
	}
}

// Goroutines allocating at once (each Allocate takes its own flock) never
// get the same CPU or RAM, and exactly as many succeed as the board holds.
func TestLedgerConcurrentAllocations(t *testing.T) {
	b := mustBoard(t)
	path := filepath.Join(t.TempDir(), "ledger.json")
	const workers = 20 // 14 partition CPUs: 6 must fail
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		got []Allocation
		bad []error
	)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := OpenLedger(path) // a value per goroutine, like separate shims
			a, err := l.Allocate(context.Background(), nil, fmt.Sprintf("ns/c%d", i), b, Request{NumCPUs: 1, Memory: 8 * mib})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				bad = append(bad, err)
				return
			}
			got = append(got, a)
		}()
	}
	wg.Wait()
	if len(got) != len(b.PartitionCPUs) {
		t.Errorf("%d allocations succeeded, want %d", len(got), len(b.PartitionCPUs))
	}
	for _, err := range bad {
		if !errdefs.IsResourceExhausted(err) {
			t.Errorf("unexpected error %v", err)
		}
	}
	checkDisjoint(t, b, got)
	entries, err := OpenLedger(path).Entries()
	if err != nil || len(entries) != len(got) {
		t.Errorf("ledger has %d entries (%v), want %d", len(entries), err, len(got))
	}

	// And releasing concurrently empties it.
	for _, a := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := OpenLedger(path).Release(a.Owner); err != nil {
				t.Errorf("Release(%s): %v", a.Owner, err)
			}
		}()
	}
	wg.Wait()
	if entries, _ := OpenLedger(path).Entries(); len(entries) != 0 {
		t.Errorf("%d entries left after releasing all", len(entries))
	}
}

func TestCellName(t *testing.T) {
	long := "3f5c0c3b1f9d4e8a9b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"
	tests := []struct {
		name, ns, id, want string
	}{
		{"short id is the name", "default", "demo", "demo"},
		{"31 bytes still fit", "default", strings.Repeat("a", 31), strings.Repeat("a", 31)},
		{"64-char id is hashed", "k8s.io", long, long[:22] + "-"},
		{"odd bytes are replaced", "default", "a b", "a_b-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CellName(tt.ns, tt.id)
			if len(got) > 31 {
				t.Errorf("%q is %d bytes", got, len(got))
			}
			if strings.HasSuffix(tt.want, "-") {
				if !strings.HasPrefix(got, tt.want) || len(got) != len(tt.want)+8 {
					t.Errorf("CellName = %q, want %q + 8 hex digits", got, tt.want)
				}
			} else if got != tt.want {
				t.Errorf("CellName = %q, want %q", got, tt.want)
			}
		})
	}
	if CellName("a", long) == CellName("b", long) {
		t.Error("the hash does not depend on the namespace")
	}
}

// Two namespaces using the same container id get distinct cell names.
func TestLedgerCellNamesAreUnique(t *testing.T) {
	b := mustBoard(t)
	l := newLedger(t)
	a := mustAllocate(t, l, "default/web", b, Request{NumCPUs: 1, Memory: 2 * mib})
	c := mustAllocate(t, l, "k8s.io/web", b, Request{NumCPUs: 1, Memory: 2 * mib})
	if a.Cell != "web" || c.Cell == "web" || !strings.HasPrefix(c.Cell, "web-") {
		t.Errorf("cell names %q and %q", a.Cell, c.Cell)
	}
}

// A container named after the board would get the root cell's name, which
// CELL_CREATE refuses with EEXIST; it gets the hashed form instead.
func TestLedgerCellNameAvoidsTheRootCell(t *testing.T) {
	b := mustBoard(t)
	l := newLedger(t)
	root := b.system.RootCell.Name
	a := mustAllocate(t, l, "default/"+root, b, Request{NumCPUs: 1, Memory: 2 * mib})
	if want := hashedCellName("default", root); a.Cell != want {
		t.Errorf("container %q got cell %q, want %q (the root cell is %q)", root, a.Cell, want, root)
	}
}

// writeLedger replaces the ledger file with entries, as a shim of another
// time (or a hand edit) left them.
func writeLedger(t *testing.T, l *Ledger, entries ...Entry) {
	t.Helper()
	if err := l.locked(unix.LOCK_EX, func() error { return l.write(ledgerFile{Entries: entries}) }); err != nil {
		t.Fatal(err)
	}
}

// foreignCellConfig is a cell created behind the ledger's back.
func foreignCellConfig(t *testing.T, b *Board, name string, cpus []int, ram Range) []byte {
	t.Helper()
	c, err := Plan(b, Request{Memory: ram.Size()}, nil, Allocation{Cell: name, CPUs: cpus, RAM: []Range{ram}})
	if err != nil {
		t.Fatal(err)
	}
	data, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Self-healing: on every allocation, entries whose cell is gone and whose
// owner process is gone are reclaimed; an owner is identified by pid and
// start time, so a reused pid does not keep a dead shim's entry alive.
func TestLedgerHealsEntries(t *testing.T) {
	self, selfStart := self()
	tests := []struct {
		name      string
		entry     Entry
		cell      bool // the entry's cell exists in the hypervisor
		reclaimed bool
	}{
		{"dead owner, no cell", Entry{PID: 1 << 30, PIDStart: 1}, false, true},
		{"no owner recorded, no cell", Entry{}, false, true},
		{"reused pid, no cell", Entry{PID: self, PIDStart: selfStart + 1}, false, true},
		{"live owner, no cell yet", Entry{PID: self, PIDStart: selfStart}, false, false},
		{"live owner from an old ledger (no start time)", Entry{PID: self}, false, false},
		{"dead owner, cell still there", Entry{PID: 1 << 30, PIDStart: 1}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			e := tt.entry
			e.Allocation = Allocation{Owner: "ns/old", Cell: "old", CPUs: []int{2, 3}, RAM: []Range{{0x70000000, 0x72000000}}, UART: "pl011"}
			e.Board = "qemu-arm64"
			writeLedger(t, n.ledger, e)
			if err := os.MkdirAll(filepath.Dir(n.ledger.ConfigPath("old")), 0o700); err != nil {
				t.Fatal(err)
			}
			cfg := foreignCellConfig(t, n.board, "old", e.CPUs, e.RAM[0])
			if err := os.WriteFile(n.ledger.ConfigPath("old"), cfg, 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.cell {
				if err := n.driver.CreateCell(cfg); err != nil {
					t.Fatal(err)
				}
			}
			a, err := n.ledger.Allocate(context.Background(), n.driver, "ns/new", n.board, Request{NumCPUs: 2, Memory: 32 * mib})
			if err != nil {
				t.Fatal(err)
			}
			_, found, _ := n.ledger.Lookup("ns/old")
			if found == tt.reclaimed {
				t.Errorf("entry found %v, want reclaimed %v", found, tt.reclaimed)
			}
			_, statErr := os.Stat(n.ledger.ConfigPath("old"))
			if tt.reclaimed != os.IsNotExist(statErr) {
				t.Errorf("saved config: %v, want it gone exactly when the entry is reclaimed", statErr)
			}
			wantCPUs := []int{2, 3}
			if !tt.reclaimed {
				wantCPUs = []int{4, 5}
			}
			if !slices.Equal(a.CPUs, wantCPUs) {
				t.Errorf("new partition got CPUs %v, want %v", a.CPUs, wantCPUs)
			}
		})
	}
}

// A cell in the hypervisor that no entry names is reported and what it is
// known to hold is taken: its CPUs from sysfs always; its RAM, interrupts
// and devices too when runphi created it and kept its configuration. Its
// name is not reused.
func TestLedgerRespectsUnknownCells(t *testing.T) {
	for _, withConfig := range []bool{false, true} {
		t.Run(fmt.Sprintf("saved config %v", withConfig), func(t *testing.T) {
			n := newNode(t)
			cfg := foreignCellConfig(t, n.board, "new", []int{2, 3}, Range{0x70000000, 0x74000000})
			if err := n.driver.CreateCell(cfg); err != nil {
				t.Fatal(err)
			}
			if withConfig {
				if err := os.MkdirAll(filepath.Dir(n.ledger.ConfigPath("new")), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(n.ledger.ConfigPath("new"), cfg, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			a, err := n.ledger.Allocate(context.Background(), n.driver, "ns/new", n.board, Request{NumCPUs: 1, Memory: 32 * mib})
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(a.CPUs, 2) || slices.Contains(a.CPUs, 3) {
				t.Errorf("CPUs %v include the unknown cell's 2-3", a.CPUs)
			}
			if a.Cell == "new" {
				t.Errorf("the new partition got the unknown cell's name")
			}
			overlaps := a.RAM[0].Overlaps(Range{0x70000000, 0x74000000})
			if withConfig && overlaps {
				t.Errorf("RAM %s overlaps the unknown cell's, whose config runphi kept", a.RAM[0])
			}
			if !withConfig && !overlaps {
				t.Logf("RAM %s: without a config the unknown cell's RAM is invisible (documented)", a.RAM[0])
			}
			_, err = n.ledger.Allocate(context.Background(), n.driver, "ns/many", n.board, Request{NumCPUs: 13, Memory: 2 * mib})
			if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "13 CPUs, 11 free") {
				t.Errorf("13 CPUs with 3 taken: %v", err)
			}
		})
	}
}

// Release removes the entry's saved configuration; SaveConfig needs the
// entry.
func TestLedgerSavedConfigs(t *testing.T) {
	b := mustBoard(t)
	l := newLedger(t)
	a := mustAllocate(t, l, "default/a", b, Request{NumCPUs: 1, Memory: 2 * mib})
	if err := l.SaveConfig("default/a", []byte("cell")); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(l.ConfigPath(a.Cell)); err != nil || string(data) != "cell" {
		t.Fatalf("saved config: %q %v", data, err)
	}
	if err := l.SaveConfig("default/nobody", []byte("x")); !errdefs.IsNotFound(err) {
		t.Errorf("SaveConfig without an entry: %v", err)
	}
	if err := l.Release("default/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.ConfigPath(a.Cell)); !os.IsNotExist(err) {
		t.Errorf("config after Release: %v", err)
	}
}

// A ledger written by the skeleton (version 1) is read.
func TestLedgerReadsVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.json")
	v1 := `{"version": 1, "entries": [{"owner": "default/demo", "cell": "demo", "cpus": [2],
		"ram": [{"start": "0x70000000", "end": "0x74000000"}], "board": "qemu-arm64", "created": "2026-12-03T17:08:54Z", "pid": 4242}]}`
	if err := os.WriteFile(path, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	l := OpenLedger(path)
	entries, err := l.Entries()
	if err != nil || len(entries) != 1 || entries[0].Cell != "demo" || entries[0].RAM[0] != (Range{0x70000000, 0x74000000}) {
		t.Fatalf("v1 ledger: %+v %v", entries, err)
	}
	a := mustAllocate(t, l, "default/b", mustBoard(t), Request{NumCPUs: 1, Memory: 2 * mib})
	if a.CPUs[0] == 2 || a.RAM[0].Overlaps(entries[0].RAM[0]) {
		t.Errorf("allocation %v %v ignores the v1 entry", a.CPUs, a.RAM)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"version": 2`) {
		t.Errorf("rewritten ledger is not version 2:\n%s", data)
	}
}

// An entry whose owner gave its cell up (the shim's delete could not
// destroy it) frees the container id at once, keeps what the cell holds,
// and is reclaimed by the first allocation after the cell can be destroyed.
func TestLedgerOrphanedEntries(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	req := Request{NumCPUs: 2, Memory: 32 * mib}
	old := mustAllocate(t, n.ledger, "ns/web", n.board, req)
	// An active comm region: the inmate answers shutdown requests itself.
	c, err := jailhouse.DecodeCell(foreignCellConfig(t, n.board, old.Cell, old.CPUs, old.RAM[0]))
	if err != nil {
		t.Fatal(err)
	}
	c.Flags &^= jailhouse.CellPassiveCommRegion
	cfg, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ledger.SaveConfig("ns/web", cfg); err != nil {
		t.Fatal(err)
	}
	if err := n.driver.CreateCell(cfg); err != nil {
		t.Fatal(err)
	}
	if err := n.driver.StartCell(old.Cell); err != nil {
		t.Fatal(err)
	}
	if err := n.driver.SetShutdownPolicy(old.Cell, sim.PolicyDeny); err != nil {
		t.Fatal(err)
	}
	if err := n.ledger.MarkOrphaned("ns/web", "destroy cell: EPERM"); err != nil {
		t.Fatal(err)
	}

	// The id is free again; the orphan's CPUs, RAM and name are not.
	again, err := n.ledger.Allocate(ctx, n.driver, "ns/web", n.board, req)
	if err != nil {
		t.Fatalf("allocation for the id of an orphaned entry: %v", err)
	}
	if again.Cell == old.Cell || slices.ContainsFunc(again.CPUs, func(c int) bool { return slices.Contains(old.CPUs, c) }) {
		t.Errorf("new allocation %s %v reuses the orphaned cell %s %v", again.Cell, again.CPUs, old.Cell, old.CPUs)
	}
	if e, found, _ := n.ledger.Lookup("ns/web"); !found || e.Cell != again.Cell {
		t.Errorf("Lookup gives %+v (found %v), want the live entry of cell %s", e, found, again.Cell)
	}
	// Releasing the new container leaves the orphan.
	if err := n.ledger.Release("ns/web"); err != nil {
		t.Fatal(err)
	}
	entries, err := n.ledger.Entries()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Cell != old.Cell || entries[0].Orphaned.IsZero() || entries[0].OrphanReason == "" || entries[0].PID != 0 {
		t.Fatalf("after release the ledger holds %+v, want only the orphaned entry of %s, marked, with no owner pid", entries, old.Cell)
	}

	// While the inmate denies, healing keeps the entry.
	if _, err := n.ledger.Allocate(ctx, n.driver, "ns/other", n.board, req); err != nil {
		t.Fatal(err)
	}
	if _, err := n.driver.Cell(old.Cell); err != nil {
		t.Fatalf("the orphaned cell went while its inmate denies shutdown: %v", err)
	}
	// Once it approves, the next allocation destroys the cell and reclaims it.
	if err := n.driver.SetShutdownPolicy(old.Cell, sim.PolicyApprove); err != nil {
		t.Fatal(err)
	}
	third, err := n.ledger.Allocate(ctx, n.driver, "ns/third", n.board, req)
	if err != nil {
		t.Fatal(err)
	}
	// The allocation that reclaimed the orphan may have all it held: the
	// destroyed cell is not mistaken for one the ledger does not know.
	if !slices.Equal(third.CPUs, old.CPUs) || !slices.Equal(third.RAM, old.RAM) {
		t.Errorf("the allocation that reclaimed the orphan got CPUs %v RAM %v, want the orphan's lowest-first CPUs %v and RAM %v",
			third.CPUs, third.RAM, old.CPUs, old.RAM)
	}
	if _, err := n.driver.Cell(old.Cell); !errors.Is(err, jailhouse.ErrCellNotFound) {
		t.Errorf("orphaned cell after healing: %v, want it destroyed", err)
	}
	entries, _ = n.ledger.Entries()
	for _, e := range entries {
		if e.Cell == old.Cell {
			t.Errorf("orphaned entry %+v still in the ledger after its cell was destroyed", e)
		}
	}
	if _, err := os.Stat(n.ledger.ConfigPath(old.Cell)); !os.IsNotExist(err) {
		t.Errorf("saved configuration of the reclaimed orphan: %v, want it removed", err)
	}
}

// A cell runphi created and whose entry was lost keeps its dedicated UART
// and its ivshmem window slot: a new partition given either would share a
// serial port or a network link with it.
func TestLedgerUnknownCellKeepsPortAndSlot(t *testing.T) {
	n := newNodeOn(t, qemuWithDedicatedUART(t))
	ctx := context.Background()
	req := Request{NumCPUs: 1, Memory: 32 * mib, UART: UARTDedicated, Net: true}
	old, err := n.ledger.Allocate(ctx, n.driver, "ns/old", n.board, req)
	if err != nil {
		t.Fatal(err)
	}
	if !old.UARTDedicated || len(old.Slots) != 1 {
		t.Fatalf("setup: old partition got uart %q dedicated %v, slots %v", old.UART, old.UARTDedicated, old.Slots)
	}
	c, err := Plan(n.board, req, nil, old)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ledger.SaveConfig("ns/old", cfg); err != nil {
		t.Fatal(err)
	}
	if err := n.driver.CreateCell(cfg); err != nil {
		t.Fatal(err)
	}
	writeLedger(t, n.ledger) // the entry is lost; the cell and its config stay

	_, err = n.ledger.Allocate(ctx, n.driver, "ns/port", n.board, Request{NumCPUs: 1, Memory: 2 * mib, UART: UARTDedicated})
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), fmt.Sprintf("%s (held by cell %q", old.UART, old.Cell)) {
		t.Errorf("dedicated UART while the unknown cell holds %s: %v", old.UART, err)
	}
	a, err := n.ledger.Allocate(ctx, n.driver, "ns/net", n.board, Request{NumCPUs: 1, Memory: 2 * mib, Net: true})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(a.Slots, old.Slots[0]) {
		t.Errorf("new partition got ivshmem slot %d, which the unknown cell %q holds", old.Slots[0], old.Cell)
	}
}

// A saved configuration that no entry and no live cell names (its entry
// was lost, then its cell destroyed: Release found nothing to remove) goes
// at the next allocation; those of entries and of live unknown cells stay.
func TestLedgerSweepsLostConfigs(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	mustAllocate(t, n.ledger, "ns/kept", n.board, Request{NumCPUs: 1, Memory: 2 * mib})
	kept, _, _ := n.ledger.Lookup("ns/kept")
	if err := n.ledger.SaveConfig("ns/kept", []byte("entry's")); err != nil {
		t.Fatal(err)
	}
	live := foreignCellConfig(t, n.board, "live", []int{4}, Range{0x70000000, 0x72000000})
	if err := n.driver.CreateCell(live); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"live": live, "ghost": []byte("lost")} {
		if err := os.WriteFile(n.ledger.ConfigPath(name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.ledger.Allocate(ctx, n.driver, "ns/next", n.board, Request{NumCPUs: 1, Memory: 2 * mib}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(n.ledger.ConfigPath("ghost")); !os.IsNotExist(err) {
		t.Errorf("the lost cell's configuration: %v, want it removed", err)
	}
	for _, name := range []string{kept.Cell, "live"} {
		if _, err := os.Stat(n.ledger.ConfigPath(name)); err != nil {
			t.Errorf("configuration of %q: %v, want it kept", name, err)
		}
	}
}
