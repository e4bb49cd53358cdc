package shim

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/config"
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
