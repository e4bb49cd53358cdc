package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/runphi/runphi/cmd/internal/backend"
	"github.com/runphi/runphi/pkg/hostview"
	"github.com/runphi/runphi/pkg/jailhouse"
)

func init() {
	register(&command{
		name:    "stats",
		summary: "show a cell's vmexit counters per CPU (sysfs statistics)",
		usage:   "stats [--config FILE] [--json] CELL",
		run:     runStats,
	})
}

// statsOutput is `runphi stats --json CELL`.
type statsOutput struct {
	Cell  string `json:"cell"`
	ID    int    `json:"id"`
	State string `json:"state"`
	// Total is each counter summed over the cell's CPUs
	// (statistics/<name>).
	Total map[string]uint64 `json:"total"`
	// PerCPU are statistics/cpu<N>/<name>, by ascending CPU. The kernel
	// resets a CPU's counters whenever the CPU changes cells.
	PerCPU []cpuCounters `json:"per_cpu"`
}

type cpuCounters struct {
	CPU      int               `json:"cpu"`
	Counters map[string]uint64 `json:"counters"`
}

func runStats(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "stats", commands["stats"].usage)
	cf := addConfigFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one cell name or id, got %d arguments", len(pos))
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	h := hostview.Open(cfg, hostview.Options{OpenSimulator: backend.OpenSimulator})
	cell, st, err := h.Statistics(pos[0])
	if errors.Is(err, jailhouse.ErrCellNotFound) {
		return &codeError{code: exitNoSuchCell, err: fmt.Errorf("%w (runphi cells lists them)", err)}
	}
	if err != nil {
		return err
	}
	out := statsOutput{Cell: cell.Name, ID: cell.ID, State: cell.State.String(), Total: st.Total, PerCPU: []cpuCounters{}}
	for _, cpu := range slices.Sorted(maps.Keys(st.PerCPU)) {
		out.PerCPU = append(out.PerCPU, cpuCounters{CPU: cpu, Counters: st.PerCPU[cpu]})
	}
	if *asJSON {
		return emitJSON(env, out)
	}
	// One row per counter, as jailhouse-cell-stats shows them, with a
	// column per CPU.
	fmt.Fprintf(env.stdout, "cell %q (id %d, %s)\n", cell.Name, cell.ID, out.State)
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	header := []string{"COUNTER", "TOTAL"}
	for _, c := range out.PerCPU {
		header = append(header, fmt.Sprintf("CPU%d", c.CPU))
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, name := range statNames(st) {
		row := []string{name, fmt.Sprint(st.Total[name])}
		for _, c := range out.PerCPU {
			row = append(row, fmt.Sprint(c.Counters[name]))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// statNames lists every counter name, vmexits_total first, the rest sorted.
func statNames(st jailhouse.CellStatistics) []string {
	set := map[string]bool{}
	for n := range st.Total {
		set[n] = true
	}
	for _, c := range st.PerCPU {
		for n := range c {
			set[n] = true
		}
	}
	names := slices.Sorted(maps.Keys(set))
	if i := slices.Index(names, "vmexits_total"); i > 0 {
		names = append([]string{"vmexits_total"}, slices.Delete(names, i, i+1)...)
	}
	return names
}
