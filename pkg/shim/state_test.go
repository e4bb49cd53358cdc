package shim

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runphi/runphi/pkg/partition"
)

func TestStateRoundTrip(t *testing.T) {
	bundle := t.TempDir()
	want := &taskState{
		ID: "t1", Namespace: "default", Bundle: bundle, ShimPid: 42,
		Rootfs: filepath.Join(bundle, "rootfs"), Mounted: true,
		Config:    Config{Backend: BackendSim, StateDir: "/s", SimDir: "/x", Board: "qemu-arm64", Source: "/c.toml"},
		Partition: &partition.Record{Owner: "default/t1", Cell: "t1", Ledger: "/s/ledger.json"},
	}
	if err := writeState(want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(statePath(bundle))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600 (it names host paths and resources)", fi.Mode().Perm())
	}
	got, err := readState(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != want.ID || got.ShimPid != 42 || !got.Mounted || got.Config != want.Config || *got.Partition != *want.Partition {
		t.Fatalf("read %+v, want %+v", got, want)
	}
	// No temporary files are left beside it.
	entries, _ := os.ReadDir(bundle)
	if len(entries) != 1 {
		t.Errorf("bundle holds %d entries, want only %s", len(entries), stateFileName)
	}

	if err := removeState(bundle); err != nil {
		t.Fatal(err)
	}
	if err := removeState(bundle); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := readState(bundle); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("readState after remove = %v, want ErrNotExist", err)
	}
}

func TestReadStateRejects(t *testing.T) {
	for _, tc := range []struct {
		name, content, text string
	}{
		{"another version", `{"version": 99, "id": "t1"}`, "version 99"},
		{"not JSON", `{`, stateFileName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bundle := t.TempDir()
			writeFile(t, statePath(bundle), tc.content)
			_, err := readState(bundle)
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("readState = %v, want an error naming %q", err, tc.text)
			}
		})
	}
}
