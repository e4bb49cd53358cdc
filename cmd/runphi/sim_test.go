package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	simdrv "github.com/runphi/runphi/pkg/jailhouse/sim"
	"github.com/runphi/runphi/pkg/partition"
)

func TestSimCommand(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "runphi.toml")
	if err := os.WriteFile(config, []byte("backend = \"sim\"\nsim_dir = \""+filepath.Join(dir, "sim")+"\"\nstate_dir = \""+dir+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sim := func(args ...string) (int, string, string) {
		return runCmd(t, append([]string{"sim", "--config", config}, args...)...)
	}
	if code, _, errOut := sim("inject", "error", "create", "EBUSY"); code != 0 {
		t.Fatalf("inject error: %d %s", code, errOut)
	}
	if code, _, errOut := sim("inject", "delay", "destroy", "1m"); code != 0 {
		t.Fatalf("inject delay: %d %s", code, errOut)
	}
	code, out, _ := sim("faults")
	if code != 0 || !strings.Contains(out, "JAILHOUSE_CELL_CREATE\terror EBUSY (16)") || !strings.Contains(out, "JAILHOUSE_CELL_DESTROY\tdelay 1m0s") {
		t.Errorf("faults: %d %q, want the pending error and delay", code, out)
	}
	code, out, errOut := sim("clear")
	if code != 0 || !strings.Contains(out, "dropped JAILHOUSE_CELL_CREATE\terror EBUSY (16)") || !strings.Contains(out, "dropped JAILHOUSE_CELL_DESTROY\tdelay 1m0s") {
		t.Fatalf("clear: %d %q %s; want what it dropped", code, out, errOut)
	}
	if code, out, _ := sim("faults"); code != 0 || out != "" {
		t.Errorf("faults after clear: %d %q, want none", code, out)
	}
	if code, out, _ := sim("clear"); code != 0 || out != "nothing to clear\n" {
		t.Errorf("clear with nothing pending: %d %q", code, out)
	}

	// A request that took its delay is no longer pending, but hanging:
	// faults says so, and clear releases it.
	if code, _, errOut := sim("inject", "delay", "enable", "1h"); code != 0 {
		t.Fatalf("inject delay: %d %s", code, errOut)
	}
	d, err := simdrv.Open(filepath.Join(dir, "sim"), simdrv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	enabled := make(chan error, 1)
	go func() { enabled <- d.Enable(nil) }() // a wedged enable; what it enables does not matter
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, out, _ = sim("faults")
		if strings.Contains(out, "JAILHOUSE_ENABLE\thanging in pid "+strconv.Itoa(os.Getpid())+" until ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("faults during a wedged enable: %d %q; want it hanging in this process", code, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, out, _ := sim("clear"); code != 0 || !strings.HasPrefix(out, "released JAILHOUSE_ENABLE\thanging") {
		t.Errorf("clear of a wedged enable: %d %q; want it released", code, out)
	}
	select {
	case <-enabled:
	case <-time.After(2 * time.Second):
		t.Fatal("clear did not release the wedged enable")
	}
	if code, out, _ := sim("faults"); code != 0 || out != "" {
		t.Errorf("faults after the release: %d %q, want none", code, out)
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		text string
	}{
		{"unknown errno", []string{"inject", "error", "create", "EWHAT"}, 2, "EWHAT"},
		{"unknown request", []string{"inject", "error", "reboot", "EIO"}, 1, "reboot"},
		{"bad duration", []string{"inject", "delay", "start", "soon"}, 2, "soon"},
		{"unknown state", []string{"state", "c", "sleepy"}, 2, "sleepy"},
		{"a cell that does not exist", []string{"policy", "nope", "deny"}, 1, "nope"},
		{"no action", nil, 2, "needs an action"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := sim(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.text) {
				t.Errorf("sim %v: exit %d, %q; want exit %d naming %q", tc.args, code, errOut, tc.code, tc.text)
			}
		})
	}

	jh := filepath.Join(dir, "jailhouse.toml")
	if err := os.WriteFile(jh, []byte("backend = \"jailhouse\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCmd(t, "sim", "--config", jh, "clear"); code != 1 || !strings.Contains(errOut, "simulator only") {
		t.Errorf("sim on a jailhouse backend: %d %q, want a refusal", code, errOut)
	}
}

// startSimPartition enables the simulator of the runphi.toml in dir (if it
// is not yet) and starts a partition for container id whose inmate runs
// until killed; commRegion is its boot description's comm_region. It
// returns the simulator and the partition's cell name.
func startSimPartition(t *testing.T, dir, id, commRegion string) (*simdrv.Driver, string) {
	t.Helper()
	b, err := partition.LoadBoard("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	d, err := simdrv.Open(filepath.Join(dir, "sim"), simdrv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if on, err := d.Enabled(); err != nil {
		t.Fatal(err)
	} else if !on {
		blob, err := b.SystemConfig().MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Enable(blob); err != nil {
			t.Fatal(err)
		}
	}
	rootfs := filepath.Join(dir, "rootfs-"+id)
	writeTestFile(t, filepath.Join(rootfs, "boot/config.json"), `{"os_var":"zephyr","comm_region":"`+commRegion+`"}`)
	writeTestFile(t, filepath.Join(rootfs, "boot/boot.bin"), "#!runphi-sim\nsleep 1h\n")
	p, err := partition.Create(context.Background(), partition.Options{
		ID: id, Namespace: "default", Rootfs: rootfs, Spec: &specs.Spec{Linux: &specs.Linux{}},
		Board: b, Driver: d, Ledger: partition.OpenLedger(filepath.Join(dir, "state", "ledger.json")),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d, p.Name()
}

// The hypervisor approves a passive cell's shutdown without asking its
// inmate, so `sim policy` refuses deny and ignore there instead of doing
// nothing, and says why; on an active cell deny takes effect.
func TestSimPolicyNeedsAnActiveCommRegion(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "runphi.toml")
	writeTestFile(t, config, strings.ReplaceAll(simConfig, "$DIR", dir))
	d, passive := startSimPartition(t, dir, "p1", "passive")
	_, active := startSimPartition(t, dir, "a1", "active")
	policy := func(cell, p string) (int, string) {
		code, _, errOut := runCmd(t, "sim", "--config", config, "policy", cell, p)
		return code, errOut
	}

	for _, p := range []string{"deny", "ignore"} {
		code, errOut := policy(passive, p)
		if code != 1 || !strings.Contains(errOut, "passive comm region") || !strings.Contains(errOut, `"comm_region": "active"`) {
			t.Errorf("sim policy %s %s of a passive cell: exit %d, %q; want exit 1 saying it has a passive comm region", passive, p, code, errOut)
		}
	}
	if code, errOut := policy(passive, "approve"); code != 0 {
		t.Errorf("sim policy %s approve of a passive cell: exit %d, %q; want 0 (what the hypervisor does anyway)", passive, code, errOut)
	}
	if err := d.DestroyCell(passive); err != nil {
		t.Errorf("destroy of the passive cell: %v", err)
	}

	if code, errOut := policy(active, "deny"); code != 0 {
		t.Fatalf("sim policy %s deny of an active cell: exit %d, %q", active, code, errOut)
	}
	if err := d.DestroyCell(active); !errors.Is(err, unix.EPERM) {
		t.Errorf("destroy of an active cell whose inmate denies: %v, want EPERM", err)
	}
	if code, errOut := policy(active, "approve"); code != 0 {
		t.Fatalf("sim policy %s approve: exit %d, %q", active, code, errOut)
	}
	if err := d.DestroyCell(active); err != nil {
		t.Errorf("destroy of the active cell once its inmate approves: %v", err)
	}
}
