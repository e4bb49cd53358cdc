package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/runphi/runphi/cmd/internal/backend"
	"github.com/runphi/runphi/pkg/config"
	"github.com/runphi/runphi/pkg/hostview"
	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/partition"
)

func init() {
	register(&command{
		name:    "ps",
		summary: "list the partitions on this host (ledger + cells + shim state)",
		usage:   "ps [--config FILE] [--bundle-root DIR]... [--json]",
		run:     runPs,
	})
}

// psOutput is `runphi ps --json`.
type psOutput struct {
	// Config is the runphi configuration file that was read.
	Config  string `json:"config"`
	Backend string `json:"backend"`
	Ledger  string `json:"ledger"`
	// Partitions is never null, so `jq '.partitions | length'` works on an
	// empty host.
	Partitions []hostview.Partition `json:"partitions"`
	// Warnings are sources that could not be read (a corrupt state file,
	// the hypervisor); the rows are still listed.
	Warnings []string `json:"warnings,omitempty"`
	// LedgerError is why the ledger could not be read (the file and the
	// position); the rows then come from the task state files and the
	// cells, without the ledger's columns, and ps exits 1.
	LedgerError string `json:"ledger_error,omitempty"`
}

// Exit codes of ps, cells and stats: 0 listed, 1 something could not be
// read (the message says what), 2 usage; stats: 3 no such cell.
const exitNoSuchCell = 3

func runPs(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "ps", commands["ps"].usage)
	cf := addConfigFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON (fields: docs/cli.md)")
	var roots stringList
	fs.Var(&roots, "bundle-root", "also look for task bundles under this `dir` (a containerd state dir's io.containerd.runtime.v2.task; repeatable)")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() != 0 {
		return usagef("ps takes no arguments")
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	h := hostview.Open(cfg, hostview.Options{TaskRoots: roots, OpenSimulator: backend.OpenSimulator})
	parts, warns, ledgerErr := h.Partitions()
	out := psOutput{Config: cfg.Source, Backend: cfg.Backend, Ledger: cfg.LedgerPath(), Partitions: parts}
	if out.Partitions == nil {
		out.Partitions = []hostview.Partition{}
	}
	for _, w := range warns {
		out.Warnings = append(out.Warnings, w.Error())
	}
	// A ledger that cannot be read still lets ps list what the other
	// sources show; the exit status says the listing is incomplete.
	var result error
	if ledgerErr != nil {
		out.LedgerError = ledgerErr.Error()
		result = &codeError{code: 1, err: fmt.Errorf("%w; listed only what the task state files and the hypervisor show (no RAM, creation time or uptime); `runphi doctor` says how to repair the file", ledgerErr)}
	}
	if *asJSON {
		if err := emitJSON(env, out); err != nil {
			return err
		}
		return result
	}
	for _, w := range out.Warnings {
		fmt.Fprintf(env.stderr, "runphi ps: warning: %s\n", w)
	}
	if len(parts) == 0 {
		if ledgerErr != nil {
			fmt.Fprintf(env.stderr, "no partitions found in the task state files or the hypervisor\n")
		} else {
			fmt.Fprintf(env.stderr, "no partitions (ledger %s)\n", cfg.LedgerPath())
		}
		return result
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER\tNAMESPACE\tPOD\tCELL\tID\tSTATE\tCPUS\tRAM\tCONSOLE\tUPTIME")
	for _, p := range parts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			dash(p.ContainerID), dash(p.Namespace), podText(p.Pod), dash(p.Cell), cellIDText(p.CellID), dash(p.State),
			dash(jailhouse.FormatCPUList(p.CPUs)), ramText(p.RAM), p.Console, uptimeText(p))
	}
	tw.Flush()
	for _, p := range parts {
		name := p.Owner()
		if name == "" {
			name = "cell " + p.Cell
		}
		for _, pr := range p.Problems {
			fmt.Fprintf(env.stdout, "%s: %s\n", name, pr)
		}
	}
	return result
}

func podText(p *hostview.Pod) string {
	if p == nil || p.Name == "" {
		return "-"
	}
	return p.Namespace + "/" + p.Name
}

func cellIDText(id int) string {
	if id < 0 {
		return "-"
	}
	return fmt.Sprint(id)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ramText(rs []partition.Range) string {
	if len(rs) == 0 {
		return "-"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%#x-%#x (%s)", r.Start, r.End, sizeText(r.Size()))
	}
	return strings.Join(parts, ",")
}

// sizeText renders a byte count in the largest binary unit that divides it.
func sizeText(n uint64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n != 0 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n != 0 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func uptimeText(p hostview.Partition) string {
	if p.Created.IsZero() {
		return "-"
	}
	return (time.Duration(p.UptimeSeconds) * time.Second).String()
}

// The helpers below are shared by ps, cells, stats and doctor.

// configFlag is --config, which every command that reads the host has.
type configFlag struct{ path *string }

func addConfigFlag(fs *flag.FlagSet) configFlag {
	return configFlag{path: fs.String("config", "",
		"runphi configuration `file` (default: $RUNPHI_CONFIG, else /etc/runphi/runphi.toml, as the shim)")}
}

func (c configFlag) load() (config.Config, error) {
	return config.Load(config.LoadOptions{Path: *c.path, Origin: "--config"})
}

// emitJSON writes v as indented JSON with a trailing newline.
func emitJSON(env *cmdEnv, v any) error {
	enc := json.NewEncoder(env.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// flagError turns a flag-parsing error into a usage error (exit 2), keeping
// -h a success.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usagef("%v", err)
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// codeError is an error with a documented exit code (main.go's exitCoder).
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }
func (e *codeError) ExitCode() int { return e.code }
