package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/runphi/runphi/cmd/internal/backend"
	"github.com/runphi/runphi/pkg/hostview"
	"github.com/runphi/runphi/pkg/jailhouse"
)

func init() {
	register(&command{
		name:    "cells",
		summary: "list the hypervisor's cells, like `jailhouse cell list`, with their runphi owners",
		usage:   "cells [--config FILE] [--json]",
		run:     runCells,
	})
}

// cellsOutput is `runphi cells --json`.
type cellsOutput struct {
	Config  string `json:"config"`
	Backend string `json:"backend"`
	// Sysfs is the directory read (the simulator renders its own).
	Sysfs   string `json:"sysfs"`
	Enabled bool   `json:"enabled"`
	// Cells is never null; empty while the hypervisor is disabled.
	Cells []cellRow `json:"cells"`
}

// cellRow is one cell as sysfs shows it, plus who holds it in the ledger.
type cellRow struct {
	ID         int    `json:"id"`
	Name       string `json:"name"`
	State      string `json:"state"`
	CPUs       []int  `json:"cpus"`
	FailedCPUs []int  `json:"failed_cpus"`
	// Root is set for the root cell (id 0), which Linux runs in.
	Root bool `json:"root"`
	// Owner is the ledger's "<namespace>/<container id>" holding the cell;
	// empty for the root cell and for cells runphi did not create.
	Owner string `json:"owner,omitempty"`
}

func runCells(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "cells", commands["cells"].usage)
	cf := addConfigFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() != 0 {
		return usagef("cells takes no arguments")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	h := hostview.Open(cfg, hostview.Options{OpenSimulator: backend.OpenSimulator})
	root, err := h.SysfsRoot()
	if err != nil {
		return err
	}
	enabled, err := h.Enabled()
	if err != nil {
		return err
	}
	cells, err := h.Cells()
	if err != nil {
		return err
	}
	// The ledger only labels cells; a host without one (or a corrupt one,
	// which ps reports) still lists its cells.
	owners := map[string]string{}
	if entries, err := h.Ledger(); err == nil {
		for _, e := range entries {
			owners[e.Cell] = e.Owner
		}
	} else {
		fmt.Fprintf(env.stderr, "runphi cells: warning: %v\n", err)
	}
	out := cellsOutput{Config: cfg.Source, Backend: cfg.Backend, Sysfs: root, Enabled: enabled, Cells: []cellRow{}}
	for _, c := range cells {
		row := cellRow{ID: c.ID, Name: c.Name, State: c.State.String(), CPUs: c.CPUs, FailedCPUs: c.FailedCPUs, Root: c.ID == 0}
		if row.CPUs == nil {
			row.CPUs = []int{}
		}
		if row.FailedCPUs == nil {
			row.FailedCPUs = []int{}
		}
		if !row.Root {
			row.Owner = owners[c.Name]
		}
		out.Cells = append(out.Cells, row)
	}
	if *asJSON {
		return emitJSON(env, out)
	}
	if !enabled {
		fmt.Fprintf(env.stderr, "the hypervisor is not enabled (%s)\n", root)
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tASSIGNED CPUS\tFAILED CPUS\tOWNER")
	for _, c := range out.Cells {
		owner := c.Owner
		switch {
		case c.Root:
			owner = "(root cell)"
		case owner == "":
			owner = "(not runphi)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Name, c.State,
			dash(jailhouse.FormatCPUList(c.CPUs)), dash(jailhouse.FormatCPUList(c.FailedCPUs)), owner)
	}
	return tw.Flush()
}
