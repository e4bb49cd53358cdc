package main

import (
	"fmt"
	"path/filepath"
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
	// Error is why the file could not be read (naming it and the
	// position); Entries is then empty and the command exits 1.
	Error string `json:"error,omitempty"`
	// SavedConfigs are the cell configurations runphi keeps beside the
	// ledger (<state_dir>/cells/<cell>.cell, one per partition created
	// and not yet released), listed only when the file cannot be read:
	// with `runphi config inspect` they show what each partition holds.
	SavedConfigs []string `json:"saved_configs,omitempty"`
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
		return unreadableLedger(env, l, err, *asJSON)
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

// unreadableLedger reports a ledger file that cannot be read. No entry of
// it is shown: a half-parsed file would be guessed, not read. What runphi
// still has is the saved configuration of every partition's cell, so the
// report lists those and the commands that show what they hold; exit 1.
// The error comes first, then what can be shown.
func unreadableLedger(env *cmdEnv, l *partition.Ledger, readErr error, asJSON bool) error {
	saved, _ := filepath.Glob(l.ConfigPath("*"))
	if asJSON {
		out := ledgerOutput{Ledger: l.Path(), Entries: []ledgerRow{}, Error: readErr.Error(), SavedConfigs: saved}
		if err := emitJSON(env, out); err != nil {
			return err
		}
		return &codeError{code: 1, err: readErr}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "no entry of %s can be read, so none is shown.\n", l.Path())
	if len(saved) == 0 {
		fmt.Fprintf(&b, "%s holds no saved cell configuration; runphi saves one for each partition before creating its cell, so no partition seems to hold a cell (`runphi cells` shows what the hypervisor has).\n",
			filepath.Dir(l.ConfigPath("")))
	} else {
		fmt.Fprintf(&b, "runphi keeps each partition's cell configuration beside it; `runphi config inspect FILE` shows what each holds:\n")
		for _, f := range saved {
			fmt.Fprintf(&b, "  %s\n", f)
		}
	}
	b.WriteString("`runphi ps` lists the partitions from their task state files; `runphi doctor` says how to repair the file.")
	return &codeError{code: 1, err: fmt.Errorf("%w\n%s", readErr, b.String())}
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
