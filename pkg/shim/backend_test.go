package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/jailhouse"
)

// A binary that passes no simulator opener (Info.OpenSimulator) cannot
// serve backend = "sim"; containerd must see a precondition, not a crash.
func TestOpenBackendWithoutSimulator(t *testing.T) {
	cfg := config.Config{Backend: config.BackendSim, SimDir: filepath.Join(t.TempDir(), "sim"),
		StateDir: t.TempDir(), Board: config.DefaultBoard, Source: "runphi.toml"}
	for _, enable := range []bool{true, false} {
		_, err := openBackend(context.Background(), cfg, nil, enable)
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !errors.Is(err, errNoSimulator) {
			t.Errorf("enable=%v: openBackend = %v, want errNoSimulator and FailedPrecondition", enable, err)
		}
	}
	if _, err := openBackend(context.Background(), cfg, openSimulator, true); err != nil {
		t.Fatalf("with the simulator: %v", err)
	}
}

// A new server opens the backend before its first task arrives, so the
// first partition's Create reuses it; a container forced onto runc opens
// nothing (no simulator is created or enabled for it).
func TestWarmBackendOpensAheadOfTheFirstTask(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations string
		wantOpens   int
	}{
		{name: "partition", wantOpens: 1},
		{name: "forced onto runc", annotations: `{"` + RuntimeAnnotation + `":"runc"}`, wantOpens: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			opens := 0
			h.svc.openSim = func(dir string) (jailhouse.Driver, error) {
				opens++
				return openSimulator(dir)
			}
			bundle := h.bundle(t, "t1", partitionImage(inmateForever), tc.annotations)
			h.svc.warmBackend(bundle)
			if opens != tc.wantOpens {
				t.Fatalf("warmBackend opened the simulator %d times, want %d", opens, tc.wantOpens)
			}
			if tc.wantOpens == 0 {
				if _, err := os.Stat(h.simDir); !os.IsNotExist(err) {
					t.Errorf("simulator directory after warming for a runc container: %v", err)
				}
				return
			}
			if on, err := h.sim(t).Enabled(); err != nil || !on {
				t.Errorf("simulated hypervisor enabled = %v, %v after warming; want true", on, err)
			}
			h.runTask(t, "t1", inmateForever)
			if opens != 1 {
				t.Errorf("Create opened the simulator again (%d opens in all)", opens)
			}
			// Stop the partition before the temp dir goes: its console
			// reader uses the simulator's files.
			h.removeTask(t, "t1")
		})
	}
}
