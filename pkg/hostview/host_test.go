package hostview

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/taskstate"
)

func TestPartitionsJoinLedgerCellsAndState(t *testing.T) {
	h := newHost(t)
	podBundle := h.run(t, "k8s.io", "web", partitionOpts{started: true, annotations: map[string]string{
		"io.kubernetes.cri.sandbox-name":      "plc",
		"io.kubernetes.cri.sandbox-namespace": "factory",
		"io.kubernetes.cri.container-name":    "controller",
		"io.kubernetes.cri.container-type":    "container",
	}})
	// A bundle outside every task root is still found through its shim's
	// working directory.
	root := h.taskRoot
	h.taskRoot = filepath.Join(t.TempDir(), taskDir)
	ctrBundle := h.run(t, "default", "t1", partitionOpts{shimAlive: true, console: "none"})
	h.taskRoot = root

	parts, warns, err := h.view().Partitions()
	if err != nil || len(warns) > 0 {
		t.Fatalf("Partitions: %v, warnings %v", err, warns)
	}
	if len(parts) != 2 {
		t.Fatalf("%d partitions, want 2: %+v", len(parts), parts)
	}
	web, t1 := parts[0], parts[1]
	checks := []struct {
		name      string
		got, want any
	}{
		{"first row is the first allocation", web.Owner(), "k8s.io/web"},
		{"cell name is the container id", web.Cell, "web"},
		{"started cell runs", web.State, "running"},
		{"created cell is shut down until started", t1.State, "shut down"},
		{"cell ids are the hypervisor's", [2]int{web.CellID, t1.CellID}, [2]int{1, 2}},
		{"CPUs come from the ledger", [2]string{jailhouse.FormatCPUList(web.CPUs), jailhouse.FormatCPUList(t1.CPUs)}, [2]string{"2", "3"}},
		{"RAM is the default 64 MiB", web.RAMBytes, uint64(64 << 20)},
		{"RAM ranges are disjoint", web.RAM[0].Overlaps(t1.RAM[0]), false},
		{"board is recorded", web.Board, "qemu-arm64"},
		{"console kind defaults to ivshmem", web.Console, "ivshmem"},
		{"console kind from the boot description", t1.Console, "none"},
		{"pod from CRI annotations", web.Pod != nil && web.Pod.Name == "plc" && web.Pod.Namespace == "factory" && web.Pod.ContainerName == "controller", true},
		{"ctr containers have no pod", t1.Pod == nil, true},
		{"bundle found under the task root", web.Bundle, podBundle},
		{"bundle found through the shim's cwd", t1.Bundle, ctrBundle},
		{"the live shim is seen", t1.ShimAlive, true},
		{"created time is set", web.Created.IsZero(), false},
		{"a consistent partition with a live shim has no problems", len(t1.Problems), 0},
	}
	for _, c := range checks {
		if !equalAny(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	// web's shim is not in the fake /proc: that is its only problem.
	if len(web.Problems) != 1 || !strings.Contains(web.Problems[0], "is gone") {
		t.Errorf("web problems = %q, want only the dead shim", web.Problems)
	}
}

func equalAny(a, b any) bool {
	switch a := a.(type) {
	case []string:
		return slices.Equal(a, b.([]string))
	}
	return a == b
}

func TestPartitionsNameEachInconsistency(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, h *host)
		owner string
		want  string // substring of a problem
		only  bool   // and the row has no other problem
	}{
		{"cell destroyed behind the ledger's back", func(t *testing.T, h *host) {
			h.run(t, "default", "gone", partitionOpts{shimAlive: true})
			if err := h.driver.DestroyCell("gone"); err != nil {
				t.Fatal(err)
			}
		}, "default/gone", `the hypervisor has no cell "gone"`, false},
		{"shim died", func(t *testing.T, h *host) {
			h.run(t, "default", "orphan", partitionOpts{})
		}, "default/orphan", "(pid 4001) is gone", false},
		{"no state file", func(t *testing.T, h *host) {
			h.run(t, "default", "nostate", partitionOpts{noState: true})
		}, "default/nostate", "no task state file found", false},
		{"a cell whose ledger entry is lost", func(t *testing.T, h *host) {
			h.run(t, "default", "lost", partitionOpts{shimAlive: true})
			if err := h.ledger.Release("default/lost"); err != nil {
				t.Fatal(err)
			}
		}, "default/lost", "has no entry for it", false},
		{"an orphaned entry: its container gave up a cell that would not go", func(t *testing.T, h *host) {
			h.run(t, "default", "stuck", partitionOpts{noState: true})
			if err := h.ledger.MarkOrphaned("default/stuck", "destroy cell: operation not permitted"); err != nil {
				t.Fatal(err)
			}
		}, "default/stuck", "the entry is orphaned since", true},
		{"state file of a create in progress", func(t *testing.T, h *host) {
			h.writeState(t, filepath.Join(h.taskRoot, "default", "half"), taskstate.State{ID: "half", Namespace: "default", ShimPid: 1})
		}, "default/half", "has not created a cell", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			tc.setup(t, h)
			parts, _, err := h.view().Partitions()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range parts {
				if p.Owner() != tc.owner {
					continue
				}
				for _, pr := range p.Problems {
					if strings.Contains(pr, tc.want) {
						if tc.only && len(p.Problems) > 1 {
							t.Errorf("%s problems %q, want only that one", tc.owner, p.Problems)
						}
						return
					}
				}
				t.Fatalf("%s problems %q, want one containing %q", tc.owner, p.Problems, tc.want)
			}
			t.Fatalf("no row for %s in %+v", tc.owner, parts)
		})
	}
}

// Two rows without a cell are no inconsistency while their shim runs: a
// Create still allocating or waiting for CELL_CREATE, and a task whose
// cell was destroyed (killed) and that waits for its Delete. ps must not
// call them stale and send the user to `ctr task rm` a task being made.
func TestPartitionsWithoutACellWhileTheShimRuns(t *testing.T) {
	h := newHost(t)
	// Creating: the ledger entry is made, the cell not yet, and the state
	// file has no partition record.
	bundle := h.run(t, "default", "making", partitionOpts{shimAlive: true})
	if err := h.driver.DestroyCell("making"); err != nil {
		t.Fatal(err)
	}
	h.writeState(t, bundle, taskstate.State{ID: "making", Namespace: "default", ShimPid: h.nextPID})
	// Killed: the cell is destroyed and the entry released; the state file
	// stays until Delete.
	h.run(t, "default", "killed", partitionOpts{shimAlive: true, started: true})
	if err := h.driver.DestroyCell("killed"); err != nil {
		t.Fatal(err)
	}
	if err := h.ledger.Release("default/killed"); err != nil {
		t.Fatal(err)
	}
	// Before allocation: a state file only.
	h.nextPID++
	early := filepath.Join(h.taskRoot, "default", "early")
	h.writeState(t, early, taskstate.State{ID: "early", Namespace: "default", ShimPid: h.nextPID})
	h.fakeProcess(t, h.nextPID, "/usr/local/bin/"+ShimBinary, early, ShimBinary, "-namespace", "default", "-id", "early")

	parts, _, err := h.view().Partitions()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"default/making": "creating", "default/killed": "destroyed", "default/early": "creating"}
	for _, p := range parts {
		w, ok := want[p.Owner()]
		if !ok {
			t.Errorf("unexpected row %s", p.Owner())
			continue
		}
		delete(want, p.Owner())
		if p.State != w || len(p.Problems) != 0 {
			t.Errorf("%s: state %q, problems %q; want %q and no problem", p.Owner(), p.State, p.Problems, w)
		}
	}
	for owner := range want {
		t.Errorf("no row for %s", owner)
	}
}

func TestTasksAreThisConfigsPartitionsOnly(t *testing.T) {
	h := newHost(t)
	other := h.cfg
	other.StateDir = "/elsewhere"
	h.writeState(t, filepath.Join(h.taskRoot, "default", "mine"), taskstate.State{ID: "mine", Namespace: "default"})
	st := taskstate.State{ID: "theirs", Namespace: "default", Version: taskstate.Version, Config: other}
	bundle := filepath.Join(h.taskRoot, "default", "theirs")
	h.writeState(t, bundle, st)
	// writeState stamps h.cfg; rewrite with the other configuration.
	data := strings.Replace(readTestFile(t, filepath.Join(bundle, taskstate.FileName)), h.cfg.StateDir, "/elsewhere", 1)
	writeTestFile(t, filepath.Join(bundle, taskstate.FileName), data)

	// A pod's pause container runs with runc under the same shim.
	h.writeState(t, filepath.Join(h.taskRoot, "default", "pause"), taskstate.State{ID: "pause", Namespace: "default", Kind: taskstate.KindRunc})

	tasks, errs := h.view().Tasks()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(tasks) != 1 || tasks[0].State.ID != "mine" {
		t.Fatalf("tasks = %+v, want only mine (not another state_dir's, not a runc container's)", tasks)
	}
}

func readTestFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCorruptStateFileIsAWarningNotAFailure(t *testing.T) {
	h := newHost(t)
	h.run(t, "default", "ok", partitionOpts{shimAlive: true})
	writeTestFile(t, filepath.Join(h.taskRoot, "default", "bad", taskstate.FileName), "{")
	parts, warns, err := h.view().Partitions()
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 1 || len(warns) != 1 || !strings.Contains(warns[0].Error(), "bad") {
		t.Fatalf("parts %d, warnings %v; want the good partition and one warning naming the bad file", len(parts), warns)
	}
}

func TestFindCellAndStatistics(t *testing.T) {
	h := newHost(t)
	h.run(t, "default", "t1", partitionOpts{started: true, shimAlive: true})
	v := h.view()
	for _, ref := range []string{"t1", "1"} {
		c, st, err := v.Statistics(ref)
		if err != nil {
			t.Fatalf("Statistics(%q): %v", ref, err)
		}
		if c.Name != "t1" || c.ID != 1 {
			t.Errorf("Statistics(%q) found cell %q id %d", ref, c.Name, c.ID)
		}
		if _, ok := st.Total["vmexits_total"]; !ok {
			t.Errorf("Statistics(%q): no vmexits_total in %v", ref, st.Total)
		}
		if _, ok := st.PerCPU[2]; !ok || len(st.PerCPU) != 1 {
			t.Errorf("Statistics(%q): per-CPU counters for %v, want CPU 2 only", ref, st.PerCPU)
		}
	}
	root, err := v.FindCell("0")
	if err != nil || root.Name != "qemu-arm64" {
		t.Errorf("FindCell(0) = %q, %v; want the root cell", root.Name, err)
	}
	if _, _, err := v.Statistics("nope"); !errors.Is(err, jailhouse.ErrCellNotFound) {
		t.Errorf("Statistics(nope) = %v, want ErrCellNotFound", err)
	}
}

func TestHypervisorBeforeAnyPartition(t *testing.T) {
	t.Run("simulator not created", func(t *testing.T) {
		v := Open(config.Config{Backend: config.BackendSim, SimDir: filepath.Join(t.TempDir(), "sim"), StateDir: t.TempDir()}, Options{OpenSimulator: openSimulator})
		on, err := v.Enabled()
		cells, err2 := v.Cells()
		if on || err != nil || cells != nil || err2 != nil {
			t.Fatalf("Enabled %v %v, Cells %v %v; want a disabled, empty host", on, err, cells, err2)
		}
		if _, err := os.Stat(v.Config().SimDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("reading created the simulator: %v", err)
		}
	})
	t.Run("simulator created but no opener given", func(t *testing.T) {
		h := newHost(t)
		v := Open(h.cfg, Options{ProcRoot: h.procRoot})
		if _, err := v.Cells(); err == nil || !strings.Contains(err.Error(), "OpenSimulator") {
			t.Fatalf("Cells = %v, want an error naming the missing Options.OpenSimulator", err)
		}
	})
	t.Run("no backend", func(t *testing.T) {
		v := Open(config.Config{Source: "/etc/runphi/runphi.toml"}, Options{})
		if _, err := v.Cells(); !errors.Is(err, ErrNoBackend) || !strings.Contains(err.Error(), `set backend = "sim"`) {
			t.Fatalf("Cells = %v, want ErrNoBackend saying how to select the simulator", err)
		}
	})
	t.Run("jailhouse module not loaded", func(t *testing.T) {
		v := Open(config.Config{Backend: config.BackendJailhouse}, Options{SysfsRoot: filepath.Join(t.TempDir(), "none")})
		if _, err := v.Cells(); !errors.Is(err, jailhouse.ErrNotLoaded) {
			t.Fatalf("Cells = %v, want ErrNotLoaded", err)
		}
	})
}

// A damaged ledger is when the operator needs ps most: the partitions the
// task state files and the cells show are still listed, and the error names
// the file and where it is broken.
func TestPartitionsWithAnUnreadableLedger(t *testing.T) {
	h := newHost(t)
	h.run(t, "default", "t1", partitionOpts{started: true, shimAlive: true})
	// Its container's bundle is nowhere to be found, but runphi saved the
	// configuration of its cell.
	h.run(t, "default", "lost", partitionOpts{noState: true})
	writeTestFile(t, h.cfg.LedgerPath(), "{garbage\n")

	parts, _, err := h.view().Partitions()
	if err == nil || !strings.Contains(err.Error(), h.cfg.LedgerPath()) || !strings.Contains(err.Error(), "offset 1") {
		t.Fatalf("Partitions error = %v, want one naming %s and offset 1", err, h.cfg.LedgerPath())
	}
	if len(parts) != 2 {
		t.Fatalf("%d rows, want t1 (its state file) and the cell lost (its saved configuration): %+v", len(parts), parts)
	}
	t1, lost := parts[0], parts[1]
	checks := []struct {
		name      string
		got, want any
	}{
		{"the task's row comes from its state file", t1.Owner(), "default/t1"},
		{"its cell is joined", [3]any{t1.Cell, t1.CellID, t1.State}, [3]any{"t1", 1, "running"}},
		{"its CPUs come from the cell", jailhouse.FormatCPUList(t1.CPUs), "2"},
		{"the ledger's columns are empty", [2]any{len(t1.RAM), t1.Created.IsZero()}, [2]any{0, true}},
		{"no problem is invented from the missing entry", len(t1.Problems), 0},
		{"a runphi cell nothing names has no owner", lost.Owner(), ""},
		{"but it is listed with its cell", [3]any{lost.Cell, lost.CellID, jailhouse.FormatCPUList(lost.CPUs)}, [3]any{"lost", 2, "3"}},
		{"and says how runphi knows it is its own", len(lost.Problems) == 1 && strings.Contains(lost.Problems[0], filepath.Join(h.cfg.StateDir, "cells", "lost.cell")), true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestCellOwners(t *testing.T) {
	h := newHost(t)
	h.run(t, "default", "t1", partitionOpts{shimAlive: true})
	h.run(t, "default", "kept", partitionOpts{noState: true})
	// A cell neither the ledger (once readable), a state file nor a saved
	// configuration names: someone else's, as far as runphi can tell.
	h.run(t, "default", "other", partitionOpts{noState: true})
	if err := h.ledger.Release("default/other"); err != nil {
		t.Fatal(err)
	}
	v := h.view()
	cells, err := v.Cells()
	if err != nil {
		t.Fatal(err)
	}
	owners, _, err := v.CellOwners(cells)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]CellOwner{
		"t1": {Owner: "default/t1", Runphi: true}, "kept": {Owner: "default/kept", Runphi: true}, "other": {},
	}
	if !maps.Equal(owners, want) {
		t.Errorf("readable ledger: owners %+v, want %+v", owners, want)
	}

	writeTestFile(t, h.cfg.LedgerPath(), "{garbage\n")
	owners, _, err = v.CellOwners(cells)
	if err == nil || !strings.Contains(err.Error(), "offset 1") {
		t.Fatalf("CellOwners error = %v, want the ledger's, with its offset", err)
	}
	want = map[string]CellOwner{
		"t1":    {Owner: "default/t1", Runphi: true}, // its task state file names it
		"kept":  {Runphi: true},                      // its saved configuration
		"other": {Unknown: true},                     // only the ledger could tell
	}
	if !maps.Equal(owners, want) {
		t.Errorf("unreadable ledger: owners %+v, want %+v", owners, want)
	}
}
