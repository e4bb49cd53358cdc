//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/partition"
)

// Issue 4 against real daemons: the partition ctr asks for is the cell the
// simulator runs and the configuration the planner generated.

// inspectJSON is the part of `runphi config inspect --json` read here.
type inspectJSON struct {
	Name       string `json:"name"`
	Cpus       []int  `json:"cpus"`
	MemRegions []struct {
		PhysStart string `json:"phys_start"`
		VirtStart string `json:"virt_start"`
		Size      string `json:"size"`
		Flags     string `json:"flags"`
	} `json:"mem_regions"`
	PCIDevices []struct {
		BDF           string `json:"bdf"`
		ShmemProtocol string `json:"shmem_protocol"`
	} `json:"pci_devices"`
}

func hexValue(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		t.Fatalf("%q is not a number: %v", s, err)
	}
	return n
}

// cellConfigPath is where the planner keeps a live cell's configuration
// (partition.Ledger.ConfigPath).
func (d *daemon) cellConfigPath(cell string) string {
	return partition.OpenLedger(d.ledgerPath()).ConfigPath(cell)
}

// Acceptance 5 of issue 4: `ctr run --cpus 2 --memory-limit 134217728`
// yields a cell with exactly 2 CPUs (in the simulator's sysfs and in the
// generated configuration, read back with `runphi config inspect`) and
// 128 MiB of loadable RAM inside the board's pool.
func TestRunCPUsAndMemoryLimit(t *testing.T) {
	b, err := partition.LoadBoard("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, foreverImage)
		d.mustCtr(t, d.runArgs("-d", "--cpus", "2", "--memory-limit", "134217728", ref, "sized")...)
		d.waitTaskStatus(t, "sized", "RUNNING", 20*time.Second)

		entries := d.ledger(t)
		if len(entries) != 1 {
			t.Fatalf("ledger has %d entries, want 1", len(entries))
		}
		e := entries[0]
		if len(e.CPUs) != 2 || len(e.RAM) != 1 || e.RAM[0].Size() != 128<<20 {
			t.Errorf("ledger entry CPUs %v RAM %v, want 2 CPUs and one 128 MiB block", e.CPUs, e.RAM)
		}

		// The simulator's sysfs: the cell owns exactly those 2 CPUs.
		var sysfs *jailhouse.CellInfo
		for _, c := range d.partitionCells(t) {
			if c.Name == e.Cell {
				sysfs = &c
			}
		}
		if sysfs == nil || !slices.Equal(sysfs.CPUs, e.CPUs) {
			t.Fatalf("sysfs cell %+v, want %q with CPUs %v", sysfs, e.Cell, e.CPUs)
		}

		// The generated configuration, as the operator reads it.
		path := d.cellConfigPath(e.Cell)
		var cfg inspectJSON
		runphiJSON(t, &cfg, "config", "inspect", "--json", path)
		if cfg.Name != e.Cell || !slices.Equal(cfg.Cpus, e.CPUs) {
			t.Errorf("config %s: name %q CPUs %v, want %q and %v", path, cfg.Name, cfg.Cpus, e.Cell, e.CPUs)
		}
		var loadable uint64
		for _, m := range cfg.MemRegions {
			if hexValue(t, m.Flags)&uint64(jailhouse.MemLoadable) == 0 {
				continue
			}
			loadable += hexValue(t, m.Size)
			r := partition.Range{Start: hexValue(t, m.PhysStart), End: hexValue(t, m.PhysStart) + hexValue(t, m.Size)}
			if !slices.ContainsFunc(b.Pools, func(p partition.Range) bool { return p.Contains(r) }) {
				t.Errorf("loadable region %s is outside the pools %v", r, b.Pools)
			}
		}
		if loadable != 128<<20 {
			t.Errorf("%d bytes of loadable RAM, want 128 MiB", loadable)
		}
		// The same file, decoded by the codec the hypervisor's view is
		// checked with.
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		c, err := jailhouse.DecodeCell(data)
		if err != nil || len(c.CPUs()) != 2 {
			t.Errorf("DecodeCell: %v, CPUs %v", err, c.CPUs())
		}

		d.mustCtr(t, "task", "kill", "-s", "SIGKILL", "sized")
		d.waitTaskStatus(t, "sized", "STOPPED", 20*time.Second)
		d.mustCtr(t, "task", "rm", "sized")
		d.mustCtr(t, "container", "rm", "sized")
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("the cell's configuration outlived the task: %v", err)
		}
	})
}

// runphi.io/ annotations reach the planner through ctr --annotation:
// networking off gives a cell without ivshmem regions or PCI device, on
// gives one VETH device; `runphi ledger --json` shows both; an annotation
// naming an address is PermissionDenied and leaves nothing.
func TestAnnotationsShapeTheCell(t *testing.T) {
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, foreverImage)
		d.mustCtr(t, d.runArgs("-d", "--annotation", "runphi.io/network=off", "--annotation", "runphi.io/cpus=5", ref, "nonet")...)
		d.mustCtr(t, d.runArgs("-d", ref, "withnet")...)
		d.waitTaskStatus(t, "nonet", "RUNNING", 20*time.Second)
		d.waitTaskStatus(t, "withnet", "RUNNING", 20*time.Second)

		var out struct {
			Ledger  string `json:"ledger"`
			Entries []struct {
				partition.Entry
				Config     string `json:"config"`
				OwnerAlive bool   `json:"owner_alive"`
			} `json:"entries"`
		}
		runphiJSON(t, &out, "ledger", "--config", d.runphiConfig(), "--json")
		if out.Ledger != d.ledgerPath() || len(out.Entries) != 2 {
			t.Fatalf("runphi ledger: %+v", out)
		}
		for _, e := range out.Entries {
			var cfg inspectJSON
			runphiJSON(t, &cfg, "config", "inspect", "--json", e.Config)
			switch e.Owner {
			case namespace + "/nonet":
				if !slices.Equal(e.CPUs, []int{5}) || len(e.Slots) != 0 || len(e.Pins) != 0 || len(cfg.PCIDevices) != 0 {
					t.Errorf("network off: CPUs %v slots %v pins %v, %d PCI devices", e.CPUs, e.Slots, e.Pins, len(cfg.PCIDevices))
				}
				for _, m := range cfg.MemRegions {
					if f := hexValue(t, m.Flags); f&uint64(jailhouse.MemRootShared) != 0 && f&uint64(jailhouse.MemIO) == 0 {
						t.Errorf("network off, yet a shared memory region %+v", m)
					}
				}
			case namespace + "/withnet":
				if len(e.Slots) != 1 || len(e.Pins) != 1 || len(cfg.PCIDevices) != 1 || hexValue(t, cfg.PCIDevices[0].ShmemProtocol) != 1 {
					t.Errorf("network on: slots %v pins %v PCI devices %+v", e.Slots, e.Pins, cfg.PCIDevices)
				}
			default:
				t.Errorf("unexpected entry %s", e.Owner)
			}
			if !e.OwnerAlive {
				t.Errorf("%s: its shim is reported gone", e.Owner)
			}
		}
		for _, id := range []string{"nonet", "withnet"} {
			d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
			d.waitTaskStatus(t, id, "STOPPED", 20*time.Second)
			d.mustCtr(t, "task", "rm", id)
			d.mustCtr(t, "container", "rm", id)
		}

		// An address in an annotation: refused before anything is taken.
		r := d.ctr(t, 30*time.Second, d.runArgs("--rm", "--annotation", "runphi.io/cpus=0x4", ref, "addr")...)
		if r.code == 0 || !strings.Contains(r.stderr, "never addresses") {
			t.Errorf("ctr run with an address annotation: %s", r)
		}
		d.mustCtr(t, "container", "create", "--runtime", runtimeName, "--annotation", "runphi.io/cpus=0x4", ref, "addr")
		// containerd 1.6 has no PermissionDenied class: the shim sends
		// FailedPrecondition, and the message keeps "permission denied".
		want := codes.PermissionDenied
		if d.major == 1 {
			want = codes.FailedPrecondition
		}
		if st := d.createTaskStatus(t, "addr"); st.Code() != want || !strings.Contains(st.Message(), "permission denied") {
			t.Errorf("Tasks.Create: %s %q; want %s saying permission denied", st.Code(), st.Message(), want)
		}
		if cells, entries := d.partitionCells(t), d.ledger(t); len(cells) != 0 || len(entries) != 0 {
			t.Errorf("the refused task left cells %v and entries %v", cells, entries)
		}
		waitNoShim(t, d, "addr")
		d.ctr(t, 10*time.Second, "container", "rm", "addr")
		if _, err := os.Stat(filepath.Join(d.stateDir, "cells")); err == nil {
			if left, _ := os.ReadDir(filepath.Join(d.stateDir, "cells")); len(left) != 0 {
				t.Errorf("saved cell configurations left: %v", left)
			}
		}
	})
}

// A container named after the board (the root cell's name, which
// CELL_CREATE refuses with EEXIST) runs, in a cell of the hashed name.
func TestContainerNamedAfterTheBoard(t *testing.T) {
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		const id = "qemu-arm64" // the board's root cell
		ref := d.ensureImage(t, foreverImage)
		d.mustCtr(t, d.runArgs("-d", ref, id)...)
		d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
		entries := d.ledger(t)
		if len(entries) != 1 || entries[0].Cell == id || !strings.HasPrefix(entries[0].Cell, id+"-") {
			t.Errorf("ledger %+v, want one entry whose cell is %q plus a hash", entries, id)
		}
		d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
		d.waitTaskStatus(t, id, "STOPPED", 20*time.Second)
		d.mustCtr(t, "task", "rm", id)
		d.mustCtr(t, "container", "rm", id)
	})
}
