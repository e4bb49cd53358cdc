//go:build bench

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// The markers between which `make bench` writes its results in
// docs/performance.md; everything outside them is written by hand.
const (
	beginMarker = "<!-- make bench: begin -->"
	endMarker   = "<!-- make bench: end -->"
)

// machine describes where and on what the run happened.
type machine struct {
	date, commit, cpu, kernel, memory, containerd, runc, goVersion string
	cores                                                          int
	loadStart, loadEnd                                             string
	load                                                           samples
	rounds, warmup                                                 int
	settleMS                                                       int
	tmpfs                                                          bool
}

// verdict is "met" or "**missed**".
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (r *results) findGoBench(pkg, name string) (goBenchResult, bool) {
	for _, g := range r.goBench {
		if g.pkg == pkg && g.name == name {
			return g, true
		}
	}
	return goBenchResult{}, false
}

// render writes the results section.
func render(r *results, m machine) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p(beginMarker)
	p("## Results of the last run")
	p("")
	p("Written by `make bench` on %s at commit `%s`. Machine: %s, %d cores, %s RAM, kernel %s; containerd %s, %s, %s.",
		m.date, m.commit, m.cpu, m.cores, m.memory, m.kernel, m.containerd, m.runc, m.goVersion)
	p("Load average (1, 5, 15 min) %s at the start and %s at the end; the 1-minute load sampled during the run: %s.",
		m.loadStart, m.loadEnd, m.load.cell("%.2f"))
	p("Each pair is measured interleaved (A B A B …) on one daemon; %d rounds after %d warm-up rounds; values are median (min–max).",
		m.rounds, m.warmup)
	if m.rounds < minReportRounds {
		p("**%d rounds is fewer than the %d the method asks for: a quick look, not a result to quote.**", m.rounds, minReportRounds)
	}
	if m.tmpfs {
		p("containerd's state dir, the FIFOs, runc's root and runphi's state_dir and sim_dir are on a tmpfs, as /run is on a production host (their defaults are all under /run); containerd's root (snapshots, content) is on ext4.")
	} else {
		p("Everything is on ext4 (`-tmpfs=false`), including what a production host keeps on the /run tmpfs.")
	}
	p("")

	// Targets.
	p("### Targets")
	p("")
	p("| target | runphi | runc | ratio | verdict |")
	p("|---|---|---|---|---|")
	if len(r.ctrPart) > 0 {
		q := r.ctrPart.median() / r.ctrRunc.median()
		p("| P1 start, `ctr run -d` until RUNNING: ≤ 0.5× runc | %.1f ms | %.1f ms | %.2f× | %s |",
			r.ctrPart.median(), r.ctrRunc.median(), q, verdict(q <= 0.5))
	}
	if len(r.criPart) > 0 {
		q := r.criPart.median() / r.criRunc.median()
		p("| P1 start, CRI pod (RunPodSandbox + CreateContainer + StartContainer): ≤ 0.7× runc | %.1f ms | %.1f ms | %.2f× | %s |",
			r.criPart.median(), r.criRunc.median(), q, verdict(q <= 0.7))
	} else if r.criSkipped != "" {
		p("| P1 start, CRI pod: ≤ 0.7× runc | – | – | – | skipped: %s |", r.criSkipped)
	}
	if len(r.rssPart) > 0 {
		q := r.rssPart.median() / r.rssRunc.median()
		p("| P2 shim RSS, one task: ≤ 0.8× runc's shim | %.1f MiB | %.1f MiB | %.2f× | %s |",
			r.rssPart.median()/1024, r.rssRunc.median()/1024, q, verdict(q <= 0.8))
	}
	if len(r.groupGrowthPart) > 0 {
		g := r.groupGrowthPart.median()
		p("| P2 RSS per extra partition in a grouped shim: ≤ +1 MiB | %+.0f KiB | %+.0f KiB | – | %s |",
			g, r.groupGrowthRunc.median(), verdict(g <= 1024))
	}
	if g, ok := r.findGoBench("partition", "GenerateCheckEncode"); ok {
		us := g.nsOp.median() / 1000
		p("| P3 config generation + checks (+ encode): ≤ 20 µs | %.1f µs | – | – | %s |", us, verdict(us <= 20))
	}
	if r.churnN > 0 {
		tp := float64(r.churnN) / r.churnPartTotal.Seconds()
		tr := float64(r.churnN) / r.churnRuncTotal.Seconds()
		p("| P4 churn, create → start → kill → delete: ≥ runc's tasks/s | %.2f tasks/s | %.2f tasks/s | %.2f× | %s |",
			tp, tr, tp/tr, verdict(tp >= tr))
	}
	if len(r.mbpsPart) > 0 {
		p("| P5 console, simulator → stdout FIFO reader: ≥ 50 MB/s | %.1f MB/s | %.1f MB/s | – | %s |",
			r.mbpsPart.median(), r.mbpsRunc.median(), verdict(r.mbpsPart.median() >= 50))
	}
	if len(r.stallPeakPart) > 0 {
		// Bounded: the inmate prints on at tens of MB/s into the stall,
		// so memory that kept it would grow by hundreds of MiB; what the pump may
		// hold (a 1 MiB ring, two 128 KiB chunks) plus GC slack (the
		// shim's GOGC is 40) and the simulator's garbage stays within a
		// few MiB, which RSS shows as noise of ±3 MiB between samples.
		// The verdict is the worst round's growth from its own RSS when
		// the reader stopped (the Method's definition), not a peak of one
		// round against the base of another.
		grow := r.stallGrowthPart().max()
		p("| P5 shim RSS with a stalled reader: bounded (≤ +8 MiB; the inmate prints on at full speed) | %+.0f KiB over %d s, the worst of %d rounds (peak %.1f MiB) | peak %.1f MiB | – | %s |",
			grow, r.stallSeconds, len(r.stallPeakPart), r.stallPeakPart.max()/1024, r.stallPeakRunc.max()/1024, verdict(grow <= 8192))
	}
	p("")

	// P1.
	p("### P1: start latency")
	p("")
	p("| path | runphi (partition) | runc (busybox) | ratio of medians |")
	p("|---|---|---|---|")
	if len(r.ctrPart) > 0 {
		p("| `ctr run -d` until it returns (task RUNNING), ms | %s | %s | %s |", r.ctrPart.cell("%.1f"), r.ctrRunc.cell("%.1f"), ratio(r.ctrPart.median(), r.ctrRunc.median()))
		p("| of which ctr itself (`ctr version`: exec, connect), ms | %s | %s | |", r.ctrFloor.cell("%.1f"), r.ctrFloor.cell("%.1f"))
	}
	if len(r.ctrPartGrouped) > 0 {
		p("| `ctr run -d` into a running grouped shim (a pod's next container), ms | %s | %s | %s |", r.ctrPartGrouped.cell("%.1f"), r.ctrRuncGrouped.cell("%.1f"), ratio(r.ctrPartGrouped.median(), r.ctrRuncGrouped.median()))
	}
	if len(r.apiPart) > 0 {
		p("| task API without ctr (container, snapshot, task Create, Start), ms | %s | %s | %s |", r.apiPart.cell("%.1f"), r.apiRunc.cell("%.1f"), ratio(r.apiPart.median(), r.apiRunc.median()))
	}
	if len(r.criPart) > 0 {
		p("| CRI `crictl run` (pod + container + start), ms | %s | %s | %s |", r.criPart.cell("%.1f"), r.criRunc.cell("%.1f"), ratio(r.criPart.median(), r.criRunc.median()))
	} else if r.criSkipped != "" {
		p("| CRI | skipped: %s | | |", r.criSkipped)
	}
	for j, step := range []string{"RunPodSandbox (`crictl runp`: the pause container on runc, both sides)", "CreateContainer (`crictl create`)", "StartContainer (`crictl start`: the partition or busybox starts)"} {
		if len(r.criStepsPart[j]) > 0 {
			p("| CRI, one crictl per step: %s, ms | %s | %s | %s |", step, r.criStepsPart[j].cell("%.1f"), r.criStepsRunc[j].cell("%.1f"), ratio(r.criStepsPart[j].median(), r.criStepsRunc[j].median()))
		}
	}
	if len(r.execPart) > 0 {
		p("| the shim binary's `-v` (exec + init), ms | %s | %s | %s |", r.execPart.cell("%.1f"), r.execRunc.cell("%.1f"), ratio(r.execPart.median(), r.execRunc.median()))
		p("| shim binary size | %.1f MB | %.1f MB | |", float64(r.sizePart)/1e6, float64(r.sizeRunc)/1e6)
	}
	p("")

	if len(r.phaseOrder) > 0 && len(r.phases) > 0 {
		p("#### Phases of one partition start (the shim's timing log, debug level)")
		p("")
		p("`ctr run -d --runtime-config-path runphi-debug.toml`, %d runs; each phase runs from the end of the previous one. \"shim start\" is from the shim process's Go init to the Create request; \"first console byte\" from CELL_START's return to the first byte read from the cell's console.", len(r.phases["mount"]))
		p("")
		p("| phase | ms |")
		p("|---|---|")
		var sum float64
		for _, ph := range r.phaseOrder {
			p("| %s | %s |", ph, r.phases[ph].cell("%.2f"))
			sum += r.phases[ph].median()
		}
		p("| sum of medians | %.2f |", sum)
		p("")
	}

	// P2.
	p("### P2: memory of the shim")
	p("")
	p("From `/proc/<shim pid>/smaps_rollup`, %d ms after the task was RUNNING. The runc side counts the shim only, not the busybox process.", m.settleMS)
	p("")
	p("| | runphi shim | runc shim | ratio of medians |")
	p("|---|---|---|---|")
	if len(r.rssPart) > 0 {
		p("| one task: RSS, KiB | %s | %s | %s |", r.rssPart.cell("%.0f"), r.rssRunc.cell("%.0f"), ratio(r.rssPart.median(), r.rssRunc.median()))
		p("| one task: PSS, KiB | %s | %s | %s |", r.pssPart.cell("%.0f"), r.pssRunc.cell("%.0f"), ratio(r.pssPart.median(), r.pssRunc.median()))
	}
	for k, size := range r.groupSizes {
		if k < len(r.groupPart) && len(r.groupPart[k]) > 0 {
			p("| grouped shim, %d containers: RSS (PSS), KiB | %s (%.0f) | %s (%.0f) | %s |", size,
				r.groupPart[k].cell("%.0f"), r.groupPartPss[k].median(), r.groupRunc[k].cell("%.0f"), r.groupRuncPss[k].median(),
				ratio(r.groupPart[k].median(), r.groupRunc[k].median()))
		}
	}
	if len(r.groupGrowthPart) > 0 {
		p("| RSS per extra container, (RSS(%d) − RSS(1)) / %d, KiB | %s | %s | |", r.groupSizes[len(r.groupSizes)-1], r.groupSizes[len(r.groupSizes)-1]-1,
			r.groupGrowthPart.cell("%+.0f"), r.groupGrowthRunc.cell("%+.0f"))
	}
	p("")
	p("Grouped partitions ask for 16 MiB each (`--memory-limit`) so that 8 fit the qemu-arm64 pool; containers join one shim with `ctr run --annotation io.containerd.runc.v2.group=<group>`.")
	p("")

	// P3.
	if len(r.goBench) > 0 {
		p("### P3: planning cost (Go benchmarks)")
		p("")
		p("`go test -run '^$' -bench . -benchmem -count 5 -benchtime 300ms %s`; ns/op is the median (min–max) of the 5 counts.", strings.Join(goBenchPackages, " "))
		p("")
		p("| benchmark | ns/op | B/op | allocs/op |")
		p("|---|---|---|---|")
		for _, g := range r.goBench {
			p("| %s.%s | %s | %.0f | %.0f |", g.pkg, g.name, g.nsOp.cell("%.0f"), g.bytesOp, g.alloc)
		}
		p("")
	}

	// P4.
	if r.churnN > 0 {
		p("### P4: churn")
		p("")
		p("%d cycles per runtime through the task API, alternating runphi and runc cycle by cycle: create (container, snapshot, task) → start → kill (SIGKILL, wait for the exit) → delete (task, container, snapshot).", r.churnN)
		p("")
		p("| | runphi (partition) | runc (busybox) | ratio |")
		p("|---|---|---|---|")
		tp := float64(r.churnN) / r.churnPartTotal.Seconds()
		tr := float64(r.churnN) / r.churnRuncTotal.Seconds()
		p("| tasks/s | %.2f | %.2f | %.2f× |", tp, tr, tp/tr)
		p("| one cycle, ms | %s | %s | %s |", r.churnPart.cell("%.1f"), r.churnRunc.cell("%.1f"), ratio(r.churnPart.median(), r.churnRunc.median()))
		for _, step := range []string{"create", "start", "kill", "delete"} {
			s := r.churnSteps[step]
			p("| %s, ms | %s | %s | %s |", step, s[0].cell("%.1f"), s[1].cell("%.1f"), ratio(s[0].median(), s[1].median()))
		}
		p("")
	}

	// P5.
	if len(r.mbpsPart) > 0 || len(r.stallPeakPart) > 0 {
		p("### P5: console")
		p("")
		p("The method of `test/e2e/console_test.go`: `ctr run --rm` of an inmate that prints %d lines of 1000 bytes (100 MB) as fast as it can, read from ctr's stdout, timed from the first byte to EOF; every byte is counted. The runc side is busybox `awk` printing the same lines.", floodLines)
		p("")
		p("| | runphi (simulator console → caronte → FIFO) | runc (process → FIFO) |")
		p("|---|---|---|")
		if len(r.mbpsPart) > 0 {
			p("| throughput, MB/s | %s | %s |", r.mbpsPart.cell("%.1f"), r.mbpsRunc.cell("%.1f"))
		}
		if len(r.stallPeakPart) > 0 {
			p("| stalled reader: shim RSS when the reader stops, KiB | %s | %s |", r.stallBasePart.cell("%.0f"), r.stallBaseRunc.cell("%.0f"))
			p("| stalled reader: peak shim RSS over %d s, KiB | %s | %s |", r.stallSeconds, r.stallPeakPart.cell("%.0f"), r.stallPeakRunc.cell("%.0f"))
			p("| stalled reader: peak − RSS when the reader stopped, per round, KiB | %s | |", r.stallGrowthPart().cell("%+.0f"))
			p("| stalled reader: last third's peak − middle third's, KiB | %s | |", r.stallTrendPart.cell("%+.0f"))
		}
		p("")
	}
	p(endMarker)
	return b.String()
}

// splice replaces the results section of the file at path (or appends
// one), keeping everything else.
func splice(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var out []byte
	i := bytes.Index(old, []byte(beginMarker))
	j := bytes.Index(old, []byte(endMarker))
	switch {
	case i >= 0 && j > i:
		out = append(out, old[:i]...)
		out = append(out, section...)
		rest := old[j+len(endMarker):]
		out = append(out, bytes.TrimPrefix(rest, []byte("\n"))...)
	case len(old) == 0:
		out = append([]byte("# Performance\n\n"), section...)
	default:
		out = append(bytes.TrimRight(old, "\n"), "\n\n"...)
		out = append(out, section...)
	}
	return os.WriteFile(path, out, 0o644)
}

// stallGrowthPart is, round by round, how far the partition shim's RSS
// rose above what it was when the reader stopped.
func (r *results) stallGrowthPart() samples {
	g := make(samples, len(r.stallPeakPart))
	for i := range g {
		g[i] = r.stallPeakPart[i] - r.stallBasePart[i]
	}
	return g
}
