package hostview

import (
	"os"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/partition"
)

// CellOwner says who holds a cell, as far as this host can tell.
type CellOwner struct {
	// Owner is the "<namespace>/<container id>" holding the cell: the
	// ledger's, else the one a task state file names; empty when neither
	// names one.
	Owner string
	// Runphi is set when runphi created the cell: the ledger or a task
	// state file names it, or runphi's saved configuration of it is in
	// <state_dir>/cells.
	Runphi bool
	// Unknown is set when the ledger cannot be read and nothing else shows
	// that runphi created the cell: it may be runphi's or someone else's.
	Unknown bool
}

// CellOwners says who holds each cell but the root cell, by name. The
// ledger decides; a cell it does not name is runphi's if a task state file
// of this configuration names it (which gives its owner too) or if runphi
// saved its configuration, and otherwise not runphi's. The error is set
// when the ledger cannot be read: the owners are then what the other
// sources say, and a cell nothing names is Unknown rather than "not
// runphi", since only the ledger could have said so. The warnings are
// state files that could not be read.
func (h *Host) CellOwners(cells []jailhouse.CellInfo) (map[string]CellOwner, []error, error) {
	entries, ledgerErr := h.Ledger()
	owners := map[string]CellOwner{}
	for _, e := range entries {
		owners[e.Cell] = CellOwner{Owner: e.Owner, Runphi: true}
	}
	var (
		byTask   map[string]string
		warnings []error
	)
	for _, c := range cells {
		if c.ID == 0 {
			continue
		}
		if _, ok := owners[c.Name]; ok {
			continue
		}
		if byTask == nil {
			// Only a cell the ledger does not name needs the search of
			// /proc and the bundles.
			byTask = map[string]string{}
			tasks, errs := h.Tasks()
			warnings = errs
			for _, t := range tasks {
				if t.State.Partition != nil {
					byTask[t.State.Partition.Cell] = t.State.Owner()
				}
			}
		}
		switch owner, ok := byTask[c.Name]; {
		case ok:
			owners[c.Name] = CellOwner{Owner: owner, Runphi: true}
		case h.savedConfig(c.Name):
			owners[c.Name] = CellOwner{Runphi: true}
		default:
			owners[c.Name] = CellOwner{Unknown: ledgerErr != nil}
		}
	}
	return owners, warnings, ledgerErr
}

// configPath is where runphi keeps the configuration of its cell named
// cell (partition.Ledger.ConfigPath).
func (h *Host) configPath(cell string) string {
	return partition.OpenLedger(h.cfg.LedgerPath()).ConfigPath(cell)
}

// savedConfig reports whether runphi's saved configuration of the cell
// named cell exists and is a cell of that name, which shows that runphi
// created it (the ledger's heal trusts it the same way).
func (h *Host) savedConfig(cell string) bool {
	data, err := os.ReadFile(h.configPath(cell))
	if err != nil {
		return false
	}
	c, err := jailhouse.DecodeCell(data)
	return err == nil && c.Name == cell
}
