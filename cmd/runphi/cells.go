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
		usage:   "cells [--config FILE] [--bundle-root DIR]... [--json]",
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
	// Warnings are what could not be read to name the owners (the ledger,
	// a task state file); the cells are still listed.
	Warnings []string `json:"warnings,omitempty"`
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
	// Owner is the "<namespace>/<container id>" holding the cell: the
	// ledger's, else the one a task state file names; empty for the root
	// cell, for cells runphi did not create, and when nothing names it.
	Owner string `json:"owner,omitempty"`
	// Runphi says whether runphi created the cell; absent when it cannot
	// tell (the ledger cannot be read and neither a task state file nor a
	// saved configuration names the cell).
	Runphi *bool `json:"runphi,omitempty"`
}

func runCells(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "cells", commands["cells"].usage)
	cf := addConfigFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var roots stringList
	fs.Var(&roots, "bundle-root", "also look for task bundles under this `dir` when the ledger cannot name a cell's owner (as for ps; repeatable)")
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
	h := hostview.Open(cfg, hostview.Options{TaskRoots: roots, OpenSimulator: backend.OpenSimulator})
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
	// The owners only label cells: a host whose ledger cannot be read
	// still lists its cells (exit 0), with a warning, and calls a cell
	// "not runphi" only when the ledger could have said otherwise.
	owners, warns, ledgerErr := h.CellOwners(cells)
	out := cellsOutput{Config: cfg.Source, Backend: cfg.Backend, Sysfs: root, Enabled: enabled, Cells: []cellRow{}}
	if ledgerErr != nil {
		out.Warnings = append(out.Warnings, fmt.Sprintf("%v; owners come from the task state files and runphi's saved cell configurations only", ledgerErr))
	}
	for _, w := range warns {
		out.Warnings = append(out.Warnings, w.Error())
	}
	for _, c := range cells {
		row := cellRow{ID: c.ID, Name: c.Name, State: c.State.String(), CPUs: c.CPUs, FailedCPUs: c.FailedCPUs, Root: c.ID == 0}
		if row.CPUs == nil {
			row.CPUs = []int{}
		}
		if row.FailedCPUs == nil {
			row.FailedCPUs = []int{}
		}
		switch o := owners[c.Name]; {
		case row.Root:
			row.Runphi = new(false)
		case !o.Unknown:
			row.Owner, row.Runphi = o.Owner, new(o.Runphi)
		}
		out.Cells = append(out.Cells, row)
	}
	for _, w := range out.Warnings {
		fmt.Fprintf(env.stderr, "runphi cells: warning: %s\n", w)
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
		case c.Runphi == nil:
			owner = "(unknown: the ledger cannot be read)"
		case owner == "" && *c.Runphi:
			owner = "(runphi, container unknown)"
		case owner == "":
			owner = "(not runphi)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Name, c.State,
			dash(jailhouse.FormatCPUList(c.CPUs)), dash(jailhouse.FormatCPUList(c.FailedCPUs)), owner)
	}
	return tw.Flush()
}
