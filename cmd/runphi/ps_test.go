package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runphi/runphi/pkg/jailhouse/sim"
	"github.com/runphi/runphi/pkg/partition"
)

// simHost is a simulator with one running partition "t1" in namespace
// "default", whose bundle (with the shim's state file) is under taskRoot.
type simHost struct {
	cfgPath, taskRoot string
}

func newSimHost(t *testing.T) simHost {
	t.Helper()
	dir := t.TempDir()
	h := simHost{cfgPath: filepath.Join(dir, "runphi.toml"), taskRoot: filepath.Join(dir, "tasks")}
	writeTestFile(t, h.cfgPath, strings.ReplaceAll(simConfig, "$DIR", dir))
	b, err := partition.LoadBoard("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	d, err := sim.Open(filepath.Join(dir, "sim"), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := b.SystemConfig().MarshalBinary()
	if err := d.Enable(blob); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	writeTestFile(t, filepath.Join(rootfs, "boot/config.json"), `{"os_var":"zephyr"}`)
	writeTestFile(t, filepath.Join(rootfs, "boot/boot.bin"), "#!runphi-sim\nloop 100000\nsleep 1s\nend\n")
	p, err := partition.Create(context.Background(), partition.Options{
		ID: "t1", Namespace: "default", Rootfs: rootfs, Spec: &specs.Spec{Linux: &specs.Linux{}},
		Board: b, Driver: d, Ledger: partition.OpenLedger(filepath.Join(dir, "state", "ledger.json")),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(h.taskRoot, "default", "t1")
	state, _ := json.Marshal(map[string]any{
		"version": 1, "id": "t1", "namespace": "default", "bundle": bundle, "shim_pid": os.Getpid(),
		"config":    map[string]any{"backend": "sim", "state_dir": filepath.Join(dir, "state"), "sim_dir": filepath.Join(dir, "sim"), "board": "qemu-arm64"},
		"partition": p.Record(),
	})
	writeTestFile(t, filepath.Join(bundle, "runphi.json"), string(state))
	return h
}

func TestPsCellsStatsJSON(t *testing.T) {
	h := newSimHost(t)

	code, out, errOut := runCmd(t, "ps", "--json", "--config", h.cfgPath, "--bundle-root", h.taskRoot)
	if code != 0 {
		t.Fatalf("ps: exit %d, %s", code, errOut)
	}
	var ps struct {
		Backend    string
		Partitions []struct {
			Namespace   string `json:"namespace"`
			ContainerID string `json:"container_id"`
			Cell        string `json:"cell"`
			CellID      int    `json:"cell_id"`
			State       string `json:"state"`
			CPUs        []int  `json:"cpus"`
			RAM         []struct{ Start, End string }
			RAMBytes    uint64 `json:"ram_bytes"`
			Bundle      string `json:"bundle"`
			Problems    []string
		}
	}
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatalf("ps --json: %v\n%s", err, out)
	}
	if len(ps.Partitions) != 1 {
		t.Fatalf("ps: %d partitions, want 1:\n%s", len(ps.Partitions), out)
	}
	p := ps.Partitions[0]
	if ps.Backend != "sim" || p.ContainerID != "t1" || p.Namespace != "default" || p.Cell != "t1" || p.CellID != 1 ||
		p.State != "running" || len(p.CPUs) != 1 || p.CPUs[0] != 2 || p.RAM[0].Start != "0x70000000" || p.RAMBytes != 64<<20 ||
		p.Bundle != filepath.Join(h.taskRoot, "default", "t1") {
		t.Errorf("ps row %+v", p)
	}

	code, out, errOut = runCmd(t, "cells", "--json", "--config", h.cfgPath)
	if code != 0 {
		t.Fatalf("cells: exit %d, %s", code, errOut)
	}
	var cells struct {
		Enabled bool
		Cells   []struct {
			ID    int    `json:"id"`
			Name  string `json:"name"`
			State string `json:"state"`
			CPUs  []int  `json:"cpus"`
			Root  bool   `json:"root"`
			Owner string `json:"owner"`
		}
	}
	if err := json.Unmarshal([]byte(out), &cells); err != nil {
		t.Fatal(err)
	}
	if !cells.Enabled || len(cells.Cells) != 2 || !cells.Cells[0].Root || len(cells.Cells[0].CPUs) != 15 ||
		cells.Cells[1].Name != "t1" || cells.Cells[1].Owner != "default/t1" || cells.Cells[1].State != "running" {
		t.Errorf("cells: %+v", cells)
	}

	code, out, errOut = runCmd(t, "stats", "t1", "--json", "--config", h.cfgPath)
	if code != 0 {
		t.Fatalf("stats: exit %d, %s", code, errOut)
	}
	var st struct {
		Cell   string
		ID     int
		Total  map[string]uint64
		PerCPU []struct {
			CPU      int
			Counters map[string]uint64
		} `json:"per_cpu"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if st.Cell != "t1" || st.ID != 1 || len(st.PerCPU) != 1 || st.PerCPU[0].CPU != 2 {
		t.Errorf("stats: %+v", st)
	}
	if _, ok := st.Total["vmexits_total"]; !ok {
		t.Errorf("stats: no vmexits_total in %v", st.Total)
	}
}

func TestHostCommandExitCodes(t *testing.T) {
	skipOnJailhouseHost(t)
	h := newSimHost(t)
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"ps table", []string{"ps", "--config", h.cfgPath, "--bundle-root", h.taskRoot}, 0, "t1", ""},
		{"cells table names owners", []string{"cells", "--config", h.cfgPath}, 0, "default/t1", ""},
		{"stats table has a column per CPU", []string{"stats", "--config", h.cfgPath, "t1"}, 0, "CPU2", ""},
		{"stats of an unknown cell exits 3", []string{"stats", "--config", h.cfgPath, "nope"}, 3, "", `cell "nope": cell not found`},
		{"stats needs a cell", []string{"stats", "--config", h.cfgPath}, 2, "", "want one cell name"},
		{"unreadable config exits 1 naming it", []string{"ps", "--config", "/nonexistent/runphi.toml"}, 1, "", "/nonexistent/runphi.toml"},
		{"no backend exits 1 saying how to pick the simulator", []string{"cells", "--config", writeConfig(t, "board = \"qemu-arm64\"\n")}, 1, "", `set backend = "sim"`},
		{"version --json", []string{"version", "--json"}, 0, `"version": "dev"`, ""},
		{"ps rejects arguments", []string{"ps", "x"}, 2, "", "usage: runphi ps"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("runphi %q = %d\nstdout: %s\nstderr: %s\nwant %d, stdout ∋ %q, stderr ∋ %q",
					tc.args, code, out, errOut, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

func writeConfig(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "runphi.toml")
	writeTestFile(t, p, body)
	return p
}

// skipOnJailhouseHost skips tests that rely on this machine having no
// /dev/jailhouse (a configuration without backend then selects none).
func skipOnJailhouseHost(t *testing.T) {
	if _, err := os.Stat("/dev/jailhouse"); err == nil {
		t.Skip("/dev/jailhouse exists: the jailhouse backend is the default here")
	}
}

// A corrupt ledger leaves the operator's tools working: ps lists what the
// task state files and the hypervisor show, cells names the owners it can,
// ledger says what it cannot read and what runphi still has, and each
// names the file and the offset of the damage.
func TestCommandsWithACorruptLedger(t *testing.T) {
	h := newSimHost(t)
	ledger := filepath.Join(filepath.Dir(h.cfgPath), "state", "ledger.json")
	writeTestFile(t, ledger, "{garbage\n")
	damage := ledger + ": invalid JSON at line 1, column 2 (offset 1)"
	saved := filepath.Join(filepath.Dir(ledger), "cells", "t1.cell")
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string
		stderr   []string
		noStdout string
	}{
		{"ps lists the partition from its state file and exits 1 naming the damage",
			[]string{"ps", "--config", h.cfgPath, "--bundle-root", h.taskRoot}, 1,
			[]string{"t1", "running"}, []string{"runphi ps: ledger " + damage, "listed only what"}, ""},
		{"ps --json has the rows and the ledger's error",
			[]string{"ps", "--json", "--config", h.cfgPath, "--bundle-root", h.taskRoot}, 1,
			[]string{`"container_id": "t1"`, `"state": "running"`, `"ledger_error": "ledger ` + damage}, []string{damage}, ""},
		{"cells names the owner its state file gives",
			[]string{"cells", "--config", h.cfgPath, "--bundle-root", h.taskRoot}, 0,
			[]string{"default/t1"}, []string{"warning: ledger " + damage}, "(not runphi)"},
		{"without its state file, cells still knows runphi made the cell from its saved configuration",
			[]string{"cells", "--config", h.cfgPath}, 0,
			[]string{"(runphi, container unknown)"}, []string{"warning: ledger " + damage}, "(not runphi)"},
		{"ledger says the error first, then the saved configurations",
			[]string{"ledger", "--config", h.cfgPath}, 1,
			nil, []string{"runphi ledger: ledger " + damage, "no entry of " + ledger + " can be read", saved}, ""},
		{"ledger --json carries the error and the saved configurations",
			[]string{"ledger", "--json", "--config", h.cfgPath}, 1,
			[]string{`"entries": []`, `"error": "ledger ` + damage, saved}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.args...)
			ok := code == tc.code && (tc.noStdout == "" || !strings.Contains(out, tc.noStdout))
			for _, s := range tc.stdout {
				ok = ok && strings.Contains(out, s)
			}
			for _, s := range tc.stderr {
				ok = ok && strings.Contains(errOut, s)
			}
			if !ok {
				t.Errorf("runphi %q = %d\nstdout: %s\nstderr: %s\nwant %d, stdout ∋ %q ∌ %q, stderr ∋ %q",
					tc.args, code, out, errOut, tc.code, tc.stdout, tc.noStdout, tc.stderr)
			}
		})
	}
	// The ledger's error comes before what it shows.
	_, _, errOut := runCmd(t, "ledger", "--config", h.cfgPath)
	if !strings.HasPrefix(errOut, "runphi ledger: ledger "+ledger) {
		t.Errorf("ledger's stderr does not start with the error:\n%s", errOut)
	}
}
