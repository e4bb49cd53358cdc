package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	simdrv "github.com/runphi/runphi/pkg/jailhouse/sim"
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
