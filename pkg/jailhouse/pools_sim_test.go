package jailhouse_test

import (
	"os"
	"testing"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
)

// TestReadPoolsFromSimulator reads the pool files the simulator renders:
// the formats agree, and the counts move the way the hypervisor's do (zero
// while disabled, more pages used while a cell exists).
func TestReadPoolsFromSimulator(t *testing.T) {
	d, err := sim.Open(t.TempDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	read := func(when string) jailhouse.Pools {
		t.Helper()
		p, err := jailhouse.ReadPools(d.SysfsRoot())
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		return p
	}
	if p := read("disabled"); p != (jailhouse.Pools{}) {
		t.Errorf("disabled: %+v, want all zero", p)
	}
	sys, err := os.ReadFile("testdata/golden/rev14/qemu-arm64.cell")
	if err != nil {
		t.Fatal(err)
	}
	cell, err := os.ReadFile("testdata/golden/rev14/qemu-arm64-inmate-demo.cell")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Enable(sys); err != nil {
		t.Fatal(err)
	}
	enabled := read("enabled")
	if enabled.MemSize == 0 || enabled.MemUsed == 0 || enabled.MemUsed > enabled.MemSize || enabled.RemapSize == 0 {
		t.Errorf("enabled: %+v, want a non-empty, partly used memory pool and a remap pool", enabled)
	}
	if err := d.CreateCell(cell); err != nil {
		t.Fatal(err)
	}
	if p := read("cell created"); p.MemUsed <= enabled.MemUsed || p.MemSize != enabled.MemSize {
		t.Errorf("after create: %+v, want more pages used than %+v", p, enabled)
	}
	if err := d.DestroyCell("inmate-demo"); err != nil {
		t.Fatal(err)
	}
	if p := read("cell destroyed"); p != enabled {
		t.Errorf("after destroy: %+v, want %+v again", p, enabled)
	}
	if err := d.Disable(); err != nil {
		t.Fatal(err)
	}
}
