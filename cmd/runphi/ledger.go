package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/partition"
)

func init() {
	register(&command{
		name:    "ledger",
		summary: "show the node-wide resource ledger: what every partition holds",
		usage:   "ledger [--config FILE | --ledger PATH] [--json]",
		run:     runLedger,
	})
}

// ledgerOutput is `runphi ledger --json`.
type ledgerOutput struct {
	// Ledger is the file read.
	Ledger string `json:"ledger"`
	// Entries is never null.
	Entries []ledgerRow `json:"entries"`
}

// ledgerRow is one entry with what an operator needs besides the record:
// where the cell's configuration is kept, and whether its owner shim runs.
type ledgerRow struct {
	partition.Entry
	// Config is the saved cell configuration (`runphi config inspect`).
	Config string `json:"config"`
	// OwnerAlive is false for an entry the next allocation reclaims if its
	// cell is gone too.
	OwnerAlive bool `json:"owner_alive"`
}

func runLedger(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "ledger", commands["ledger"].usage)
	cf := addConfigFlag(fs)
	path := fs.String("ledger", "", "read this ledger `file` instead of <state_dir>/ledger.json of the configuration")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() != 0 {
		return usagef("ledger takes no arguments")
	}
	if *path == "" {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		*path = cfg.LedgerPath()
	}
	l := partition.OpenLedger(*path)
	entries, err := l.Entries()
	if err != nil {
		return err
	}
	out := ledgerOutput{Ledger: *path, Entries: []ledgerRow{}}
	for _, e := range entries {
		out.Entries = append(out.Entries, ledgerRow{Entry: e, Config: l.ConfigPath(e.Cell), OwnerAlive: e.OwnerAlive()})
	}
	if *asJSON {
		return emitJSON(env, out)
	}
	if len(out.Entries) == 0 {
		fmt.Fprintf(env.stderr, "no entries (ledger %s)\n", *path)
		return nil
	}
	w := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "OWNER\tCELL\tCPUS\tRAM\tINTERRUPTS\tIVSHMEM\tUART\tSHIM\tAGE")
	for _, r := range out.Entries {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Owner, r.Cell, dash(jailhouse.FormatCPUList(r.CPUs)),
			ramText(r.RAM), interruptsText(r.Pins), ivshmemText(r.Entry), uartText(r.Entry), shimText(r), ageText(r.Created))
	}
	return w.Flush()
}

func interruptsText(pins []uint32) string {
	ns := make([]int, len(pins))
	for i, p := range pins {
		ns[i] = int(p)
	}
	return dash(jailhouse.FormatCPUList(ns))
}

// ivshmemText lists a partition's ivshmem links: "net:slot 3" for its
// network link to the root cell, "link:<peer>" for each partition link.
func ivshmemText(e partition.Entry) string {
	var parts []string
	for _, s := range e.Slots {
		parts = append(parts, fmt.Sprintf("net:slot %d", s))
	}
	for _, l := range e.Links {
		parts = append(parts, "link:"+l.Peer)
	}
	return dash(strings.Join(parts, ","))
}

func uartText(e partition.Entry) string {
	switch {
	case e.UART == "":
		return "-"
	case e.UARTDedicated:
		return e.UART + " (own)"
	}
	return e.UART + " (shared)"
}

func shimText(r ledgerRow) string {
	if r.PID == 0 {
		return "-"
	}
	if r.OwnerAlive {
		return fmt.Sprintf("%d", r.PID)
	}
	return fmt.Sprintf("%d (gone)", r.PID)
}

func ageText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}
