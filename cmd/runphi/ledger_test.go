package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runphi/runphi/pkg/partition"
)

func TestLedgerCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.json")
	code, out, errOut := runCmd(t, "ledger", "--ledger", path)
	if code != 0 || out != "" || !strings.Contains(errOut, "no entries") {
		t.Errorf("empty ledger: %d %q %q", code, out, errOut)
	}
	b, err := partition.LoadBoard("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	l := partition.OpenLedger(path)
	req, err := partition.RequestFromSpec(nil, b)
	if err != nil {
		t.Fatal(err)
	}
	req.Net = true
	if _, err := l.Allocate(context.Background(), nil, "default/web", b, req); err != nil {
		t.Fatal(err)
	}

	code, out, errOut = runCmd(t, "ledger", "--ledger", path)
	if code != 0 {
		t.Fatalf("ledger: %d %s", code, errOut)
	}
	for _, s := range []string{"OWNER", "default/web", "web", "0x70000000-0x74000000 (64M)", "140", "net:slot 0", "pl011 (shared)"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}

	code, out, _ = runCmd(t, "ledger", "--ledger", path, "--json")
	var got ledgerOutput
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("ledger --json: %d %s", code, out)
	}
	if got.Ledger != path || len(got.Entries) != 1 {
		t.Fatalf("%+v", got)
	}
	e := got.Entries[0]
	if e.Owner != "default/web" || len(e.Slots) != 1 || !e.OwnerAlive || e.Config != l.ConfigPath("web") {
		t.Errorf("entry %+v", e)
	}

	if code, _, errOut := runCmd(t, "ledger", "extra"); code != 2 || !strings.Contains(errOut, "usage") {
		t.Errorf("ledger extra: %d %s", code, errOut)
	}
}
