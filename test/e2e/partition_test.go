//go:build e2e

package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
	"github.com/runphi/runphi/pkg/partition"
)

// The harness looks at the simulator and the ledger the way an operator
// would: through the same packages the shim uses, read-only.

// ledgerPath is where the shim keeps the resource ledger (pkg/shim Config.LedgerPath).
func (d *daemon) ledgerPath() string { return filepath.Join(d.stateDir, "ledger.json") }

// cells lists the simulator's cells, root cell included.
func (d *daemon) cells(t testing.TB) []jailhouse.CellInfo {
	t.Helper()
	cells, err := d.readCells()
	if err != nil {
		t.Fatalf("list simulator cells in %s: %v", d.simDir, err)
	}
	return cells
}

func (d *daemon) readCells() ([]jailhouse.CellInfo, error) {
	if empty, _ := dirEmpty(d.simDir); empty {
		// No partition ever ran on this daemon: the simulator is not set up.
		return nil, nil
	}
	drv, err := sim.Open(d.simDir, sim.Options{})
	if err != nil {
		return nil, err
	}
	return drv.Cells()
}

// partitionCells is cells without the root cell.
func (d *daemon) partitionCells(t testing.TB) []jailhouse.CellInfo {
	t.Helper()
	var out []jailhouse.CellInfo
	for _, c := range d.cells(t) {
		if c.ID != 0 {
			out = append(out, c)
		}
	}
	return out
}

// ledger lists the ledger's entries.
func (d *daemon) ledger(t testing.TB) []partition.Entry {
	t.Helper()
	entries, err := partition.OpenLedger(d.ledgerPath()).Entries()
	if err != nil {
		t.Fatalf("read ledger %s: %v", d.ledgerPath(), err)
	}
	return entries
}

// partitionLeaks reports cells other than the root cell and ledger entries.
func (d *daemon) partitionLeaks() []string {
	var problems []string
	cells, err := d.readCells()
	if err != nil {
		problems = append(problems, fmt.Sprintf("simulator unreadable: %v", err))
	}
	for _, c := range cells {
		if c.ID != 0 {
			problems = append(problems, fmt.Sprintf("cell %d %q (%s, cpus %v)", c.ID, c.Name, c.State, c.CPUs))
		}
	}
	entries, err := partition.OpenLedger(d.ledgerPath()).Entries()
	if err != nil {
		problems = append(problems, fmt.Sprintf("ledger unreadable: %v", err))
	}
	for _, e := range entries {
		problems = append(problems, fmt.Sprintf("ledger entry %s (cell %s, cpus %v, ram %v)", e.Owner, e.Cell, e.CPUs, e.RAM))
	}
	return problems
}

// stateFiles lists the files under the runphi state dir, relative to it,
// except the ledger itself (and its lock), which exists once anything ran.
func (d *daemon) stateFiles(t testing.TB) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(d.stateDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(d.stateDir, p)
		if rel == "." || strings.HasPrefix(filepath.Base(p), "ledger.json") {
			return nil
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", d.stateDir, err)
	}
	slices.Sort(out)
	return out
}

func dirEmpty(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	return len(ents) == 0, err
}

func loadBoard(name string) (*partition.Board, error) { return partition.LoadBoard(name) }
