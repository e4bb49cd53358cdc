package taskstate

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runphi/runphi/pkg/config"
)

func TestRoundTrip(t *testing.T) {
	bundle := t.TempDir()
	want := &State{
		ID: "t1", Namespace: "default", Bundle: bundle, ShimPid: 42,
		Rootfs: filepath.Join(bundle, "rootfs"), Mounted: true,
		Config:    config.Config{Backend: config.BackendSim, StateDir: "/s", SimDir: "/x", Board: "qemu-arm64", Source: "/c.toml"},
		Partition: &Record{Owner: "default/t1", Cell: "t1", Ledger: "/s/ledger.json"},
	}
	if err := Write(want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(Path(bundle))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600 (it names host paths and resources)", fi.Mode().Perm())
	}
	got, err := Read(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != want.ID || got.ShimPid != 42 || !got.Mounted || got.Config != want.Config || *got.Partition != *want.Partition {
		t.Fatalf("read %+v, want %+v", got, want)
	}
	if got.Owner() != "default/t1" {
		t.Errorf("Owner() = %q, want default/t1", got.Owner())
	}
	// No temporary files are left beside it.
	entries, _ := os.ReadDir(bundle)
	if len(entries) != 1 {
		t.Errorf("bundle holds %d entries, want only %s", len(entries), FileName)
	}

	if err := Remove(bundle); err != nil {
		t.Fatal(err)
	}
	if err := Remove(bundle); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := Read(bundle); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read after Remove = %v, want ErrNotExist", err)
	}
}

func TestReadRejects(t *testing.T) {
	for _, tc := range []struct {
		name, content, text string
	}{
		{"another version", `{"version": 99, "id": "t1"}`, "version 99"},
		{"not JSON", `{`, FileName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bundle := t.TempDir()
			if err := os.WriteFile(Path(bundle), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Read(bundle)
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Read = %v, want an error naming %q", err, tc.text)
			}
		})
	}
}
