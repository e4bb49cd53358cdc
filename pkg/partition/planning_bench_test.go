package partition

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
)

// The planning cost of a partition's start (issue 8, P3; numbers in
// docs/performance.md): what the shim computes between reading the
// container's spec and CELL_CREATE, step by step, on the qemu-arm64 board.

// benchDescription is a boot description with every key runPHI's images
// use, as ParseBootDescription sees it.
const benchDescription = `{
  "os_var": "zephyr",
  "inmate": "/boot/zephyr.bin",
  "starting_vaddress": "0x70000000",
  "netconf": "",
  "memory": "128",
  "vcpus": 1
}`

func benchBoard(b *testing.B) *Board {
	b.Helper()
	board, err := LoadBoard("qemu-arm64")
	if err != nil {
		b.Fatal(err)
	}
	return board
}

// benchRequest is what `ctr run` of a partitioned image asks for: one CPU
// and 64 MiB.
func benchRequest(b *testing.B, board *Board) Request {
	b.Helper()
	limit := int64(64 << 20)
	req, err := RequestFromSpec(&specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit}}}}, board)
	if err != nil {
		b.Fatal(err)
	}
	return req
}

func benchDesc(b *testing.B) *BootDescription {
	b.Helper()
	d, err := ParseBootDescription("/boot/config.json", []byte(`{"os_var":"zephyr","inmate":"/boot/zephyr.bin"}`))
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func BenchmarkParseBootDescription(b *testing.B) {
	data := []byte(benchDescription)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseBootDescription("/boot/config.json", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllocate is the allocator alone (no ledger file), on an empty
// board and beside 2 partitions (the pool has room for 3 blocks of 64 MiB).
func BenchmarkAllocate(b *testing.B) {
	board := benchBoard(b)
	req := benchRequest(b, board)
	for _, held := range []int{0, 2} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			h := newHoldings()
			for i := range held {
				a, err := board.allocate(h, nil, fmt.Sprintf("default/p%d", i), req)
				if err != nil {
					b.Fatal(err)
				}
				h.add(&a)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := board.allocate(h, nil, "default/new", req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLedgerAllocate is Allocate and Release through the ledger file
// (flock, read, write, rename), as the shim runs them.
func BenchmarkLedgerAllocate(b *testing.B) {
	board := benchBoard(b)
	req := benchRequest(b, board)
	l := OpenLedger(filepath.Join(b.TempDir(), "ledger.json"))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Allocate(ctx, nil, "default/bench", board, req); err != nil {
			b.Fatal(err)
		}
		if err := l.Release("default/bench"); err != nil {
			b.Fatal(err)
		}
	}
}

func benchAllocation(b *testing.B, board *Board, req Request) Allocation {
	b.Helper()
	a, err := board.allocate(newHoldings(), nil, "default/bench", req)
	if err != nil {
		b.Fatal(err)
	}
	a.Cell = "bench"
	return a
}

// BenchmarkPlan is the generation of the cell configuration from an
// allocation.
func BenchmarkPlan(b *testing.B) {
	board := benchBoard(b)
	req := benchRequest(b, board)
	desc := benchDesc(b)
	a := benchAllocation(b, board, req)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Plan(board, req, desc, a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGenerateCheckEncode is issue 8's P3 target (≤ 20 µs): plan the
// cell, check it as the shim does (jailhouse.CheckCell: the cell itself and
// against the board's system configuration), and encode the bytes
// CELL_CREATE takes.
func BenchmarkGenerateCheckEncode(b *testing.B) {
	board := benchBoard(b)
	req := benchRequest(b, board)
	desc := benchDesc(b)
	a := benchAllocation(b, board, req)
	b.ReportAllocs()
	for b.Loop() {
		cell, err := Plan(board, req, desc, a)
		if err != nil {
			b.Fatal(err)
		}
		if f := jailhouse.CheckCell(board.system, cell); jailhouse.HasErrors(f) {
			b.Fatal(f)
		}
		if _, err := cell.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateDestroy is the whole of package partition's part of a
// start and a delete against the simulator: read the boot description and
// payload from the rootfs, allocate in the ledger, plan, check, encode,
// keep the config, CELL_CREATE, CELL_LOAD; then CELL_DESTROY and release.
func BenchmarkCreateDestroy(b *testing.B) {
	board := benchBoard(b)
	dir := b.TempDir()
	d, err := sim.Open(filepath.Join(dir, "sim"), sim.Options{})
	if err != nil {
		b.Fatal(err)
	}
	sys, err := board.SystemConfig().MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	if err := d.Enable(sys); err != nil {
		b.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	for name, data := range map[string]string{
		"boot/config.json": `{"os_var":"zephyr","inmate":"/boot/boot.bin"}`,
		"boot/boot.bin":    "#!runphi-sim\nprint up\nsleep 1h\n",
	} {
		p := filepath.Join(rootfs, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	o := Options{ID: "bench", Namespace: "default", Rootfs: rootfs, Spec: &specs.Spec{},
		Board: board, Driver: d, Ledger: OpenLedger(filepath.Join(dir, "state", "ledger.json"))}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p, err := Create(ctx, o)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Destroy(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
