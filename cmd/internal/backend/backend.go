// Package backend is where the runphi binaries choose the hypervisor
// driver implementations they link in. It is the one non-test importer of
// pkg/jailhouse/sim outside cmd/runphi's fault-injection command: pkg/shim
// and pkg/hostview receive the simulator as an opener function, so that
// neither depends on it (docs/style.md).
package backend

import (
	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
)

// OpenSimulator opens the simulated hypervisor whose state lives in dir,
// creating the directory when it does not exist yet. It has the shape of
// shim.Info.OpenSimulator and hostview.Options.OpenSimulator.
func OpenSimulator(dir string) (jailhouse.Driver, error) {
	return sim.Open(dir, sim.Options{})
}
