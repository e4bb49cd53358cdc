// Command containerd-shim-runphi-v2 is the containerd shim v2 of runphi:
// containerd starts it for the runtime io.containerd.runphi.v2. Everything
// it does lives in package shim; see docs/shim.md.
package main

import (
	"context"
	"os"

	"github.com/runphi/runphi/cmd/internal/backend"
	"github.com/runphi/runphi/pkg/shim"
)

// Set with -ldflags "-X main.version=… -X main.revision=…".
var (
	version  = "dev"
	revision = "unknown"
)

func main() {
	os.Exit(shim.Run(context.Background(), os.Args, shim.Info{
		Version:       version,
		Revision:      revision,
		OpenSimulator: backend.OpenSimulator,
	}))
}
