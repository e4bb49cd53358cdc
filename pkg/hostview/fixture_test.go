package hostview

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
	"github.com/runphi/runphi/pkg/partition"
	"github.com/runphi/runphi/pkg/taskstate"
)

// openSimulator is what cmd/internal/backend gives the CLI; tests may
// import the simulator themselves.
func openSimulator(dir string) (jailhouse.Driver, error) { return sim.Open(dir, sim.Options{}) }

// host is a simulated machine as a shim leaves it: an enabled simulator,
// a ledger, containerd bundles with state files and a fake /proc.
type host struct {
	cfg      config.Config
	board    *partition.Board
	driver   *sim.Driver
	ledger   *partition.Ledger
	taskRoot string // <containerd state>/io.containerd.runtime.v2.task
	procRoot string
	nextPID  int
}

func newHost(t *testing.T) *host {
	t.Helper()
	dir := t.TempDir()
	b, err := partition.LoadBoard("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{
		cfg: config.Config{Backend: config.BackendSim, StateDir: filepath.Join(dir, "state"), SimDir: filepath.Join(dir, "sim"),
			Board: "qemu-arm64", Source: filepath.Join(dir, "runphi.toml")},
		board: b, taskRoot: filepath.Join(dir, "containerd", taskDir), procRoot: filepath.Join(dir, "proc"),
		nextPID: 4000,
	}
	if h.driver, err = sim.Open(h.cfg.SimDir, sim.Options{}); err != nil {
		t.Fatal(err)
	}
	sys, err := b.SystemConfig().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.driver.Enable(sys); err != nil {
		t.Fatal(err)
	}
	h.ledger = partition.OpenLedger(h.cfg.LedgerPath())
	if err := os.MkdirAll(h.procRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *host) view() *Host {
	return Open(h.cfg, Options{ProcRoot: h.procRoot, TaskRoots: []string{h.taskRoot}, OpenSimulator: openSimulator})
}

const foreverScript = "#!runphi-sim\nloop 1000000\nsleep 1s\nend\n"

// partitionOpts says how run leaves a partition behind.
type partitionOpts struct {
	annotations map[string]string
	noState     bool // the shim never wrote its state file
	shimAlive   bool // a fake shim process serves it, its cwd the bundle
	started     bool
	console     string // the boot description's console key
}

// run creates a partition as the shim does and leaves its bundle, state
// file and (optionally) shim process behind. It returns the bundle.
func (h *host) run(t *testing.T, ns, id string, o partitionOpts) string {
	t.Helper()
	bundle := filepath.Join(h.taskRoot, ns, id)
	// The shim mounts the image at <bundle>/rootfs.
	rootfs := filepath.Join(bundle, "rootfs")
	desc := `{"os_var":"zephyr","inmate":"/boot/boot.bin"`
	if o.console != "" {
		desc += `,"console":"` + o.console + `"`
	}
	writeTestFile(t, filepath.Join(rootfs, "boot/config.json"), desc+"}")
	writeTestFile(t, filepath.Join(rootfs, "boot/boot.bin"), foreverScript)
	p, err := partition.Create(context.Background(), partition.Options{
		ID: id, Namespace: ns, Rootfs: rootfs, Spec: &specs.Spec{Linux: &specs.Linux{}},
		Board: h.board, Driver: h.driver, Ledger: h.ledger,
	})
	if err != nil {
		t.Fatalf("partition.Create %s/%s: %v", ns, id, err)
	}
	if o.started {
		if err := p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(map[string]any{"ociVersion": "1.2.0", "annotations": o.annotations})
	writeTestFile(t, filepath.Join(bundle, "config.json"), string(spec))
	h.nextPID++
	pid := h.nextPID
	if !o.noState {
		rec := p.Record()
		h.writeState(t, bundle, taskstate.State{ID: id, Namespace: ns, ShimPid: pid,
			Partition: &taskstate.Record{Owner: rec.Owner, Cell: rec.Cell, Ledger: rec.Ledger}})
	}
	if o.shimAlive {
		h.fakeProcess(t, pid, "/usr/local/bin/"+ShimBinary, bundle,
			ShimBinary, "-namespace", ns, "-id", id, "-address", "/run/containerd/containerd.sock")
	}
	return bundle
}

// writeState writes a state file in the shim's format (pkg/shim/state.go).
func (h *host) writeState(t *testing.T, bundle string, st taskstate.State) {
	t.Helper()
	st.Version, st.Bundle, st.Config = taskstate.Version, bundle, h.cfg
	st.Rootfs = filepath.Join(bundle, "rootfs")
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(bundle, taskstate.FileName), string(data))
}

// fakeProcess makes /proc/<pid> with a cmdline, exe and cwd.
func (h *host) fakeProcess(t *testing.T, pid int, exe, cwd string, args ...string) {
	t.Helper()
	fakeProcess(t, h.procRoot, pid, exe, cwd, nil, args...)
}

func fakeProcess(t *testing.T, procRoot string, pid int, exe, cwd string, env []string, args ...string) {
	t.Helper()
	dir := filepath.Join(procRoot, fmt.Sprint(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, "cmdline"), strings.Join(args, "\x00")+"\x00")
	writeTestFile(t, filepath.Join(dir, "environ"), strings.Join(env, "\x00")+"\x00")
	if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
		t.Fatal(err)
	}
	if cwd != "" {
		if err := os.Symlink(cwd, filepath.Join(dir, "cwd")); err != nil {
			t.Fatal(err)
		}
	}
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
