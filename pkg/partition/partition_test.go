package partition

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
)

// node is one simulated machine: an enabled simulator with the qemu-arm64
// board's system config, and a ledger.
type node struct {
	board  *Board
	driver *sim.Driver
	ledger *Ledger
}

func newNode(t *testing.T) *node {
	t.Helper()
	return newNodeOn(t, mustBoard(t))
}

// newNodeOn is newNode on board b.
func newNodeOn(t *testing.T, b *Board) *node {
	t.Helper()
	d, err := sim.Open(filepath.Join(t.TempDir(), "sim"), sim.Options{})
	if err != nil {
		t.Fatalf("sim.Open: %v", err)
	}
	sys, err := b.SystemConfig().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Enable(sys); err != nil {
		t.Fatalf("Enable: %v", err)
	}
	return &node{board: b, driver: d, ledger: OpenLedger(filepath.Join(t.TempDir(), "state", "ledger.json"))}
}

func (n *node) options(id, rootfs string, spec *specs.Spec) Options {
	return Options{ID: id, Namespace: "default", Rootfs: rootfs, Spec: spec,
		Board: n.board, Driver: n.driver, Ledger: n.ledger}
}

// checkEmpty fails unless only the root cell exists and the ledger is empty.
func (n *node) checkEmpty(t *testing.T) {
	t.Helper()
	cells, err := n.driver.Cells()
	if err != nil {
		t.Fatal(err)
	}
	if len(cells) != 1 {
		t.Errorf("%d cells exist, want only the root cell: %+v", len(cells), cells)
	} else if got := jailhouse.FormatCPUList(cells[0].CPUs); got != "0-15" {
		t.Errorf("root cell has CPUs %s, want all 0-15 back", got)
	}
	entries, err := n.ledger.Entries()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("ledger still has %+v", entries)
	}
}

func scriptRootfs(t *testing.T, config, script string) string {
	return makeRootfs(t, configJSON(config), rootfsFile{path: "/boot/boot.bin", data: script})
}

const helloScript = "#!runphi-sim\nprint hello from the cell\nexit\n"

func TestPartitionLifecycle(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	rootfs := scriptRootfs(t, `{"os_var":"zephyr"}`, helloScript)
	p, err := Create(ctx, n.options("demo", rootfs, specWith(&specs.LinuxCPU{Cpus: "4-5"}, nil)))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if p.Name() != "demo" {
		t.Errorf("name %q", p.Name())
	}
	info, err := n.driver.Cell("demo")
	if err != nil {
		t.Fatal(err)
	}
	if info.State != jailhouse.StateShutDown || !slices.Equal(info.CPUs, []int{4, 5}) {
		t.Errorf("after create: state %v CPUs %v, want shut down on 4-5", info.State, info.CPUs)
	}
	a := p.Allocation()
	if !slices.Equal(a.CPUs, []int{4, 5}) || len(a.RAM) != 1 || a.RAM[0].Size() != 64*mib {
		t.Errorf("allocation %+v", a)
	}
	if e, found, _ := n.ledger.Lookup("default/demo"); !found || e.Cell != "demo" {
		t.Errorf("ledger entry %+v found %v", e, found)
	}

	console, err := p.Console()
	if err != nil || console == nil {
		t.Fatalf("Console: %v, %v", console, err)
	}
	defer console.Close()
	if err := p.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	out := readAll(t, console)
	if !strings.Contains(out, "hello from the cell") {
		t.Errorf("console said %q", out)
	}
	if st, err := p.State(); err != nil || st != jailhouse.StateShutDown {
		t.Errorf("State after the inmate's exit = %v, %v; want shut down", st, err)
	}

	// Restart, then stop it from outside.
	if err := p.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if st, _ := p.State(); st != jailhouse.StateShutDown {
		t.Errorf("State after Shutdown = %v", st)
	}
	if err := p.Destroy(ctx); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	n.checkEmpty(t)
	if err := p.Destroy(ctx); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	if _, err := p.State(); !errdefs.IsNotFound(err) {
		t.Errorf("State after Destroy: %v, want NotFound", err)
	}
}

// readAll reads a console until EOF, failing after a few seconds.
func readAll(t *testing.T, r io.Reader) string {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	select {
	case s := <-done:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("console did not reach EOF")
		return ""
	}
}

func TestPartitionLoadsAtStartingVAddress(t *testing.T) {
	n := newNode(t)
	rootfs := scriptRootfs(t, `{"starting_vaddress":"0x70000000"}`, "#!runphi-sim\n")
	p, err := Create(context.Background(), n.options("z", rootfs, nil))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer p.Destroy(context.Background())
	c := p.Config()
	if p.LoadAddress() != 0x70000000 || c.CPUResetAddress != 0x70000000 {
		t.Errorf("load %#x reset %#x", p.LoadAddress(), c.CPUResetAddress)
	}
}

// Every failure of Create leaves no cell and no ledger entry, and is
// classified with the errdefs sentinel the shim hands to containerd.
func TestCreateRollsBack(t *testing.T) {
	tests := []struct {
		name   string
		config string
		script string
		spec   *specs.Spec
		inject string // sim request to fail
		errno  unix.Errno
		is     func(error) bool
		also   error  // the chain must also match this
		text   string // and the message contain this
	}{
		{
			name:   "CREATE refused by the driver keeps the errno",
			inject: "create", errno: unix.EBUSY,
			is: errdefs.IsFailedPrecondition, also: unix.EBUSY, text: `create cell "c"`,
		},
		{
			name:   "hypervisor out of memory is resource exhausted",
			inject: "create", errno: unix.ENOMEM,
			is: errdefs.IsResourceExhausted, also: unix.ENOMEM,
		},
		{
			name:   "LOAD failure destroys the created cell",
			inject: "load", errno: unix.EINVAL,
			is: errdefs.IsFailedPrecondition, also: unix.EINVAL, text: `load cell "c"`,
		},
		{
			name:   "payload bigger than the partition RAM",
			spec:   specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](2 * mib)}),
			script: "#!runphi-sim\n" + strings.Repeat("#", 3*mib),
			is:     errdefs.IsInvalidArgument, text: "more than the partition's 2 MiB of RAM",
		},
		{
			name:   "malformed boot description",
			config: `{"os_var": "zephyr",}`,
			is:     errdefs.IsInvalidArgument, text: "/boot/config.json: invalid JSON at line 1, column 21",
		},
		{
			name: "memory limit larger than the pool",
			spec: specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](1 << 30)}),
			is:   errdefs.IsInvalidArgument, text: "more than board qemu-arm64's largest partition pool",
		},
		{
			name: "memory limit that does not fit below the GIC",
			spec: specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](200 * mib)}),
			is:   errdefs.IsInvalidArgument, text: "at most 128 MiB",
		},
		{
			name:   "Linux inmate without a device tree",
			config: `{"os_var":"linux","kernel":"/boot/boot.bin"}`,
			is:     errdefs.IsInvalidArgument, text: `key "dtb"`,
		},
		{
			name:   "truncated ELF payload",
			script: "\x7fELF\x02\x01\x01",
			is:     errdefs.IsInvalidArgument, text: "not a readable ELF file",
		},
		{
			name:   "RPU partitions are not implemented yet",
			config: `{"rpu_req": true}`,
			is:     errdefs.IsNotImplemented, text: "rpu_req",
		},
		{
			name:   "empty payload",
			script: "",
			is:     errdefs.IsInvalidArgument, text: "empty",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			config, script := tt.config, tt.script
			if config == "" {
				config = `{}`
			}
			if script == "" && !strings.HasPrefix(tt.name, "empty") {
				script = helloScript
			}
			if tt.inject != "" {
				if err := n.driver.InjectError(tt.inject, tt.errno); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Create(context.Background(), n.options("c", scriptRootfs(t, config, script), tt.spec))
			if err == nil {
				t.Fatal("Create succeeded")
			}
			if !tt.is(err) {
				t.Errorf("error %v has the wrong errdefs class", err)
			}
			if tt.also != nil && !errors.Is(err, tt.also) {
				t.Errorf("error %v does not match %v", err, tt.also)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not say %q", err, tt.text)
			}
			n.checkEmpty(t)
		})
	}
}

// A rollback that cannot destroy the cell it created leaves the cell with
// its ledger entry orphaned, not a cell the ledger forgot; the container's
// id is free at once, and the next allocation destroys the cell.
func TestCreateRollbackThatCannotDestroy(t *testing.T) {
	n := newNode(t)
	if err := n.driver.InjectError("load", unix.EINVAL); err != nil {
		t.Fatal(err)
	}
	if err := n.driver.InjectError("destroy", unix.EBUSY); err != nil {
		t.Fatal(err)
	}
	rootfs := scriptRootfs(t, `{}`, helloScript)
	_, err := Create(context.Background(), n.options("c", rootfs, nil))
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Create: %v, want the LOAD's EINVAL", err)
	}
	entries, err := n.ledger.Entries()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Orphaned.IsZero() || !strings.Contains(entries[0].OrphanReason, "device or resource busy") {
		t.Fatalf("ledger after the failed rollback: %+v, want one orphaned entry saying why", entries)
	}
	if _, err := n.driver.Cell(entries[0].Cell); err != nil {
		t.Fatalf("the cell the rollback could not destroy: %v", err)
	}
	// The same container id creates again; healing destroys the orphan.
	p, err := Create(context.Background(), n.options("c", rootfs, nil))
	if err != nil {
		t.Fatalf("Create after the orphaned rollback: %v", err)
	}
	if err := p.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.checkEmpty(t)
}

func TestCreateWithoutBootDescription(t *testing.T) {
	n := newNode(t)
	rootfs := makeRootfs(t, rootfsFile{path: "/bin/sh", data: "x"})
	_, err := Create(context.Background(), n.options("c", rootfs, nil))
	if !errors.Is(err, ErrNoBootDescription) || !errdefs.IsFailedPrecondition(err) ||
		!strings.Contains(err.Error(), "/boot/config.json") {
		t.Errorf("Create: %v", err)
	}
	n.checkEmpty(t)
}

// Two partitions at once get disjoint CPUs and RAM; one more that cannot
// fit fails with ResourceExhausted and leaves nothing behind.
func TestPartitionsShareTheBoard(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	mem := func(m int64) *specs.Spec { return specWith(nil, &specs.LinuxMemory{Limit: ptr(m)}) }
	p1, err := Create(ctx, n.options("one", scriptRootfs(t, `{}`, helloScript), mem(100*mib)))
	if err != nil {
		t.Fatal(err)
	}
	p2, err := Create(ctx, n.options("two", scriptRootfs(t, `{}`, helloScript), mem(100*mib)))
	if err != nil {
		t.Fatal(err)
	}
	checkDisjoint(t, n.board, []Allocation{p1.Allocation(), p2.Allocation()})
	i1, _ := n.driver.Cell("one")
	i2, _ := n.driver.Cell("two")
	if slices.ContainsFunc(i1.CPUs, func(c int) bool { return slices.Contains(i2.CPUs, c) }) {
		t.Errorf("sysfs shows shared CPUs: %v and %v", i1.CPUs, i2.CPUs)
	}
	_, err = Create(ctx, n.options("three", scriptRootfs(t, `{}`, helloScript), mem(100*mib)))
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "largest free block 32 MiB") {
		t.Errorf("third Create: %v", err)
	}
	if _, err := n.driver.Cell("three"); !errors.Is(err, jailhouse.ErrCellNotFound) {
		t.Errorf("third cell exists: %v", err)
	}
	for _, p := range []*Partition{p1, p2} {
		if err := p.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	n.checkEmpty(t)
}

func TestCreateTwiceForOneContainer(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	p, err := Create(ctx, n.options("c", scriptRootfs(t, `{}`, helloScript), nil))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Create(ctx, n.options("c", scriptRootfs(t, `{}`, helloScript), nil))
	if !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Create: %v, want AlreadyExists", err)
	}
	// The failed second Create must not have released the first's entry.
	if _, found, _ := n.ledger.Lookup("default/c"); !found {
		t.Error("the first partition lost its ledger entry")
	}
	if err := p.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	n.checkEmpty(t)
}

// A shim that died leaves a record; delete in a new process destroys the
// cell and frees the ledger from it alone.
func TestDestroyRecordAfterCrash(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	p, err := Create(ctx, n.options("c", scriptRootfs(t, `{}`, "#!runphi-sim\nsleep 1h\n"), nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	saved, err := json.Marshal(p.Record())
	if err != nil {
		t.Fatal(err)
	}
	var r Record
	if err := json.Unmarshal(saved, &r); err != nil {
		t.Fatal(err)
	}
	if r.Owner != "default/c" || r.Cell != "c" || r.Ledger != n.ledger.Path() {
		t.Errorf("record %+v", r)
	}
	// "A new process": its own driver and no Ledger value.
	d2, err := sim.Open(n.driver.Dir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := DestroyRecord(ctx, d2, nil, r); err != nil {
		t.Fatalf("DestroyRecord: %v", err)
	}
	n.checkEmpty(t)
	if err := DestroyRecord(ctx, d2, nil, r); err != nil {
		t.Errorf("second DestroyRecord: %v", err)
	}
}

// A stale record never destroys a cell that another container owns now.
func TestDestroyRecordLeavesOtherOwnersCell(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	p, err := Create(ctx, n.options("c", scriptRootfs(t, `{}`, helloScript), nil))
	if err != nil {
		t.Fatal(err)
	}
	stale := Record{Owner: "other/c", Cell: "c", Ledger: n.ledger.Path()}
	if err := DestroyRecord(ctx, n.driver, n.ledger, stale); err != nil {
		t.Fatalf("DestroyRecord: %v", err)
	}
	if _, err := n.driver.Cell("c"); err != nil {
		t.Errorf("the owner's cell is gone: %v", err)
	}
	if err := p.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	n.checkEmpty(t)
}

// Destroy of a cell that someone else already destroyed still frees the
// ledger; a destroy the driver refuses keeps it, since the cell still holds
// its resources.
func TestDestroy(t *testing.T) {
	ctx := context.Background()
	t.Run("cell already gone", func(t *testing.T) {
		n := newNode(t)
		p, err := Create(ctx, n.options("c", scriptRootfs(t, `{}`, helloScript), nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.driver.DestroyCell("c"); err != nil {
			t.Fatal(err)
		}
		if err := p.Destroy(ctx); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
		n.checkEmpty(t)
	})
	t.Run("driver refuses", func(t *testing.T) {
		n := newNode(t)
		p, err := Create(ctx, n.options("c", scriptRootfs(t, `{}`, helloScript), nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.driver.InjectError("destroy", unix.EPERM); err != nil {
			t.Fatal(err)
		}
		err = p.Destroy(ctx)
		if !errors.Is(err, unix.EPERM) || !errdefs.IsFailedPrecondition(err) {
			t.Errorf("Destroy: %v, want EPERM FailedPrecondition", err)
		}
		if _, found, _ := n.ledger.Lookup("default/c"); !found {
			t.Error("ledger entry released although the cell still exists")
		}
		if err := p.Destroy(ctx); err != nil {
			t.Fatalf("Destroy after the refusal: %v", err)
		}
		n.checkEmpty(t)
	})
}

// Shims on one node create partitions at the same time: each gets its own
// CPUs and RAM, and every cell is created.
func TestConcurrentCreates(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	const count = 6
	var wg sync.WaitGroup
	parts := make([]*Partition, count)
	errs := make([]error, count)
	for i := range count {
		rootfs := scriptRootfs(t, `{}`, helloScript)
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := string(rune('a' + i))
			parts[i], errs[i] = Create(ctx, n.options(id, rootfs, specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](16 * mib)})))
		}()
	}
	wg.Wait()
	var as []Allocation
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Create %d: %v", i, err)
		}
		as = append(as, parts[i].Allocation())
	}
	checkDisjoint(t, n.board, as)
	cells, _ := n.driver.Cells()
	if len(cells) != count+1 {
		t.Errorf("%d cells, want %d", len(cells), count+1)
	}
	for _, p := range parts {
		if err := p.Destroy(ctx); err != nil {
			t.Error(err)
		}
	}
	n.checkEmpty(t)
}
