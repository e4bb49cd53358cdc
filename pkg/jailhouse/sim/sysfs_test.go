package sim

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/runphi/runphi/pkg/jailhouse"
)

func readTree(t *testing.T, root string, rels ...string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, rel := range rels {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			got[rel] = "<" + err.Error() + ">"
			continue
		}
		got[rel] = string(b)
	}
	return got
}

func TestSysfsTexts(t *testing.T) {
	cellFiles := func(id int) []string {
		dir := "cells/" + strconv.Itoa(id) + "/"
		return []string{dir + "name", dir + "state", dir + "cpus_assigned", dir + "cpus_assigned_list", dir + "cpus_failed", dir + "cpus_failed_list"}
	}
	tests := []struct {
		name  string
		opts  Options
		setup func(t *testing.T, d *Driver)
		want  map[string]string
	}{
		{
			name:  "loaded, not enabled",
			setup: func(t *testing.T, d *Driver) {},
			want: map[string]string{
				"enabled": "0\n", "console": "", "mem_pool_size": "0\n", "mem_pool_used": "0\n",
				"remap_pool_size": "0\n", "remap_pool_used": "0\n",
			},
		},
		{
			// nr_cpu_ids 16 (the root's CPUs 0-15): 4 hex digits.
			name: "a cell on CPUs 2-3 of 16",
			setup: func(t *testing.T, d *Driver) {
				must(t, d.Enable(marshal(t, testSystem(t))))
				create(t, d, testCell(t, "inmate-demo", []int{2, 3}))
			},
			want: map[string]string{
				"enabled":                    "1\n",
				"cells/0/name":               "qemu-arm64\n",
				"cells/0/state":              "running\n",
				"cells/0/cpus_assigned":      "fff3\n",
				"cells/0/cpus_assigned_list": "0-1,4-15\n",
				"cells/0/cpus_failed":        "0000\n",
				"cells/0/cpus_failed_list":   "\n",
				"cells/1/name":               "inmate-demo\n",
				"cells/1/state":              "shut down\n",
				"cells/1/cpus_assigned":      "000c\n",
				"cells/1/cpus_assigned_list": "2-3\n",
				"cells/1/cpus_failed":        "0000\n",
				"cells/1/cpus_failed_list":   "\n",
			},
		},
		{
			name: "nr_cpu_ids 64 puts a comma every 8 digits",
			opts: Options{NrCPUIDs: 64},
			setup: func(t *testing.T, d *Driver) {
				must(t, d.Enable(marshal(t, testSystem(t))))
				create(t, d, testCell(t, "c", []int{2, 3}))
			},
			want: map[string]string{
				"cells/0/cpus_assigned": "00000000,0000fff3\n",
				"cells/1/cpus_assigned": "00000000,0000000c\n",
			},
		},
		{
			name: "a failed CPU, a running/locked cell",
			setup: func(t *testing.T, d *Driver) {
				must(t, d.Enable(marshal(t, testSystem(t))))
				run(t, d, testCell(t, "c", []int{2, 3, 5}), "lock")
				must(t, d.FailCPU("c", 3))
				must(t, d.FailCPU("c", 5))
			},
			want: map[string]string{
				"cells/1/state":            "running/locked\n",
				"cells/1/cpus_failed":      "0028\n",
				"cells/1/cpus_failed_list": "3,5\n",
			},
		},
		{
			name: "every CPU failed: the cell is failed",
			setup: func(t *testing.T, d *Driver) {
				must(t, d.Enable(marshal(t, testSystem(t))))
				run(t, d, testCell(t, "c", []int{2}), "sleep 1h")
				must(t, d.FailCPU("c", 2))
			},
			want: map[string]string{"cells/1/state": "failed\n", "cells/1/cpus_failed_list": "2\n"},
		},
		{
			name: "disabled again: no cells",
			setup: func(t *testing.T, d *Driver) {
				must(t, d.Enable(marshal(t, testSystem(t))))
				create(t, d, testCell(t, "c", []int{2}))
				must(t, d.Disable())
			},
			want: map[string]string{"enabled": "0\n", "mem_pool_used": "0\n", "console": "", "cells/0/name": "<missing>"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := openSim(t, tc.opts)
			tc.setup(t, d)
			var rels []string
			for rel := range tc.want {
				rels = append(rels, rel)
			}
			got := readTree(t, d.SysfsRoot(), rels...)
			for rel, want := range tc.want {
				if want == "<missing>" {
					if _, err := os.Stat(filepath.Join(d.SysfsRoot(), rel)); !os.IsNotExist(err) {
						t.Errorf("%s exists (%v), want it gone", rel, err)
					}
					continue
				}
				if got[rel] != want {
					t.Errorf("%s = %q, want %q", rel, got[rel], want)
				}
			}
			// Every cell directory has all six files.
			cells, _ := os.ReadDir(filepath.Join(d.SysfsRoot(), "cells"))
			for _, e := range cells {
				id, _ := strconv.Atoi(e.Name())
				for rel, text := range readTree(t, d.SysfsRoot(), cellFiles(id)...) {
					if !strings.HasSuffix(text, "\n") {
						t.Errorf("%s = %q, want a newline-terminated value", rel, text)
					}
				}
			}
		})
	}
}

func TestSysfsStatistics(t *testing.T) {
	clk := newFakeClock()
	d := enabled(t, Options{Now: clk.Now})
	run(t, d, testCell(t, "c", []int{2, 3}, active), "print hello", "sleep 1s", "print again")
	statsDir := filepath.Join(d.SysfsRoot(), "cells/1/statistics")
	entries, err := os.ReadDir(statsDir)
	must(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"cpu2", "cpu3", "vmexits_hypercall", "vmexits_maintenance", "vmexits_management", "vmexits_mmio",
		"vmexits_psci", "vmexits_smccc", "vmexits_total", "vmexits_virt_irq", "vmexits_virt_sgi"}
	if !slices.Equal(names, want) {
		t.Errorf("statistics entries %q, want the arm64 set %q", names, want)
	}
	before, err := jailhouse.ReadStatistics(d.SysfsRoot(), 1)
	must(t, err)
	clk.Advance(time.Second)
	_, err = d.Cells()
	must(t, err)
	after, err := jailhouse.ReadStatistics(d.SysfsRoot(), 1)
	must(t, err)
	if after.Total["vmexits_total"] <= before.Total["vmexits_total"] {
		t.Errorf("vmexits_total went from %d to %d while the inmate printed", before.Total["vmexits_total"], after.Total["vmexits_total"])
	}
	var sum uint64
	for _, cpu := range []int{2, 3} {
		sum += after.PerCPU[cpu]["vmexits_total"]
	}
	if sum != after.Total["vmexits_total"] {
		t.Errorf("vmexits_total %d is not the sum %d of cpu2 and cpu3", after.Total["vmexits_total"], sum)
	}
}

func TestSysfsRestoredOnOpen(t *testing.T) {
	// The tree is derived state: removing it loses nothing.
	d := enabled(t, Options{})
	create(t, d, testCell(t, "c", []int{2}))
	must(t, os.RemoveAll(d.SysfsRoot()))
	d2, err := Open(d.Dir(), Options{})
	must(t, err)
	info, err := d2.Cell("c")
	must(t, err)
	if info.ID != 1 || !slices.Equal(info.CPUs, []int{2}) {
		t.Errorf("cell after re-render = %+v", info)
	}
}
