package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	if code, _, errOut := sim("clear"); code != 0 {
		t.Fatalf("clear: %d %s", code, errOut)
	}
	if code, out, _ := sim("faults"); code != 0 || out != "" {
		t.Errorf("faults after clear: %d %q, want none", code, out)
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
