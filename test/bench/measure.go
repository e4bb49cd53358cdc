//go:build bench

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// bench holds what one run of `make bench` needs and what it measured.
type bench struct {
	d      *daemon
	api    *api
	n      int // measured rounds of each A/B pair
	warmup int // rounds run first and thrown away
	settle time.Duration
	logf   func(format string, args ...any)
	load   *loadSampler

	partTmpl, runcTmpl *template
	res                results
}

// results is everything the report prints.
type results struct {
	// P1
	ctrPart, ctrRunc samples // ms, ctr run -d until it returns (task RUNNING)
	ctrFloor         samples // ms, ctr version: ctr's own start and connect
	ctrPartGrouped   samples // ms, ctr run -d into a running grouped shim
	ctrRuncGrouped   samples
	apiPart, apiRunc samples // ms, container + snapshot + task create + start
	criPart, criRunc samples // ms, crictl run (RunPodSandbox + CreateContainer + StartContainer)
	criSkipped       string
	// ms per CRI step, each its own crictl: runp, create, start
	criStepsPart, criStepsRunc [3]samples
	execPart, execRunc         samples // ms, <shim> -v: exec and init of the shim binary
	sizePart, sizeRunc         int64   // bytes of each shim binary
	runcShim, runphiShim       string  // the shim binaries measured

	// P2
	rssPart, pssPart, rssRunc, pssRunc samples   // KiB, one task's shim
	groupSizes                         []int     // containers per grouped shim
	groupPart, groupRunc               []samples // KiB RSS per group size
	groupPartPss, groupRuncPss         []samples // KiB PSS per group size
	groupGrowthPart, groupGrowthRunc   samples   // KiB per extra container, (last-first)/(n-1)

	// P4
	churnN                         int
	churnPart, churnRunc           samples // ms per cycle
	churnSteps                     map[string][2]samples
	churnPartTotal, churnRuncTotal time.Duration

	// P5
	mbpsPart, mbpsRunc           samples // MB/s from the first byte to EOF
	stallBasePart, stallPeakPart samples // KiB
	stallBaseRunc, stallPeakRunc samples // KiB
	stallTrendPart               samples // KiB, peak of the stall's last third minus its middle third's
	stallSeconds                 int

	// phases
	phases     map[string]samples // ms per phase
	phaseOrder []string

	// P3
	goBench []goBenchResult
}

// runCtr times one `ctr run -d`.
func (b *bench) runCtr(args ...string) (time.Duration, error) {
	t0 := time.Now()
	_, err := b.d.ctr(60*time.Second, args...)
	return time.Since(t0), err
}

// memory is a process's resident and proportional set in KiB, from
// /proc/<pid>/smaps_rollup.
func memory(pid int) (rss, pss float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "Rss:":
			rss = v
		case "Pss:":
			pss = v
		}
	}
	return rss, pss, sc.Err()
}

// ensureRunning checks that containerd reports each task RUNNING.
func (b *bench) ensureRunning(ids ...string) error {
	for _, id := range ids {
		st, err := b.api.status(id)
		if err != nil {
			return err
		}
		if st != "RUNNING" {
			return fmt.Errorf("task %s is %s after start, want RUNNING", id, st)
		}
	}
	return nil
}

// P1 (ctr) and P2 (one task per shim), in the same rounds: each round
// starts a partition and a busybox with `ctr run -d`, timed, checks both
// RUNNING, lets them settle, reads both shims' memory and removes both.
func (b *bench) startAndMemory() error {
	for i := -b.warmup; i < b.n; i++ {
		b.load.sample()
		a, r := fmt.Sprintf("p1-part-%d", i+b.warmup), fmt.Sprintf("p1-runc-%d", i+b.warmup)
		ta, err := b.runCtr(b.d.run("-d", runtimeRunphi, partitionImage.ref, a)...)
		if err != nil {
			return err
		}
		tr, err := b.runCtr(b.d.run("-d", runtimeRunc, busyboxImage.ref, r)...)
		if err != nil {
			return err
		}
		tf, err := b.runCtr("version")
		if err != nil {
			return err
		}
		if err := b.ensureRunning(a, r); err != nil {
			return err
		}
		time.Sleep(b.settle)
		pa, err := b.d.shimPID(a)
		if err != nil {
			return err
		}
		pr, err := b.d.shimPID(r)
		if err != nil {
			return err
		}
		rssA, pssA, err := memory(pa)
		if err != nil {
			return err
		}
		rssR, pssR, err := memory(pr)
		if err != nil {
			return err
		}
		for _, id := range []string{a, r} {
			if err := b.api.stopAndRemove(id); err != nil {
				return err
			}
		}
		if i < 0 {
			continue
		}
		b.res.ctrPart = append(b.res.ctrPart, ms(ta))
		b.res.ctrRunc = append(b.res.ctrRunc, ms(tr))
		b.res.ctrFloor = append(b.res.ctrFloor, ms(tf))
		b.res.rssPart = append(b.res.rssPart, rssA)
		b.res.pssPart = append(b.res.pssPart, pssA)
		b.res.rssRunc = append(b.res.rssRunc, rssR)
		b.res.pssRunc = append(b.res.pssRunc, pssR)
		b.logf("P1/P2 round %d: ctr run -d partition %.1f ms, runc %.1f ms (ctr version %.1f ms); shim RSS %.0f / %.0f KiB",
			i, ms(ta), ms(tr), ms(tf), rssA, rssR)
	}
	return nil
}

// P1 into a running shim: each runtime gets an anchor container whose shim
// stays up, and each round times `ctr run -d` of one more container in the
// anchor's group (io.containerd.runc.v2.group), which skips the server
// process's exec and start-up: what a pod's second container, or a
// node-wide partition shim, costs.
func (b *bench) groupedStart() error {
	sides := []struct {
		runtime, ref, anchor string
		out                  *samples
	}{
		{runtimeRunphi, partitionImage.ref, "anchor-part", &b.res.ctrPartGrouped},
		{runtimeRunc, busyboxImage.ref, "anchor-runc", &b.res.ctrRuncGrouped},
	}
	group := func(anchor string) []string {
		return []string{"--annotation", "io.containerd.runc.v2.group=" + anchor, "--memory-limit", strconv.Itoa(16 << 20)}
	}
	for _, s := range sides {
		if _, err := b.d.ctr(60*time.Second, b.d.run("-d", s.runtime, append(group(s.anchor), s.ref, s.anchor)...)...); err != nil {
			return err
		}
	}
	defer func() {
		for _, s := range sides {
			b.api.stopAndRemove(s.anchor)
		}
	}()
	for i := -b.warmup; i < b.n; i++ {
		b.load.sample()
		var ids []string
		for _, s := range sides {
			id := fmt.Sprintf("%s-%d", s.anchor, i+b.warmup)
			t, err := b.runCtr(b.d.run("-d", s.runtime, append(group(s.anchor), s.ref, id)...)...)
			if err != nil {
				return err
			}
			if pids := b.d.shimPIDs(""); len(pids) != 2 {
				return fmt.Errorf("%s joined no existing shim: %d shims run, want the 2 anchors'", id, len(pids))
			}
			if i >= 0 {
				*s.out = append(*s.out, ms(t))
			}
			ids = append(ids, id)
		}
		if err := b.ensureRunning(ids...); err != nil {
			return err
		}
		for _, id := range ids {
			if err := b.api.stopAndRemove(id); err != nil {
				return err
			}
		}
		if i >= 0 {
			b.logf("P1 grouped round %d: partition %.1f ms, runc %.1f ms", i, b.res.ctrPartGrouped[i], b.res.ctrRuncGrouped[i])
		}
	}
	return nil
}

// P1 through the task API: the same start without ctr's process.
func (b *bench) apiStart() error {
	for i := -b.warmup; i < b.n; i++ {
		b.load.sample()
		var took [2]time.Duration
		ids := [2]string{fmt.Sprintf("api-part-%d", i+b.warmup), fmt.Sprintf("api-runc-%d", i+b.warmup)}
		for k, t := range []*template{b.partTmpl, b.runcTmpl} {
			t0 := time.Now()
			if err := b.api.create(t, ids[k]); err != nil {
				return err
			}
			if err := b.api.start(ids[k]); err != nil {
				return err
			}
			took[k] = time.Since(t0)
		}
		if err := b.ensureRunning(ids[:]...); err != nil {
			return err
		}
		for _, id := range ids {
			if err := b.api.stopAndRemove(id); err != nil {
				return err
			}
		}
		if i >= 0 {
			b.res.apiPart = append(b.res.apiPart, ms(took[0]))
			b.res.apiRunc = append(b.res.apiRunc, ms(took[1]))
			b.logf("P1 API round %d: partition %.1f ms, runc %.1f ms", i, ms(took[0]), ms(took[1]))
		}
	}
	return nil
}

// P1 through CRI: `crictl run` does RunPodSandbox, CreateContainer and
// StartContainer, for a runphi pod with a partition and a runc pod with a
// busybox.
func (b *bench) criStart() error {
	if !haveCrictl() {
		b.res.criSkipped = fmt.Sprintf("crictl (%s) or the loopback CNI plugin is not installed (make deps)", crictlBin())
		return nil
	}
	dir := filepath.Join(b.d.dir, "cri")
	writeJSON := func(name string, v any) (string, error) {
		p := filepath.Join(dir, name)
		data, err := json.Marshal(v)
		if err != nil {
			return "", err
		}
		return p, os.WriteFile(p, data, 0o644)
	}
	pod := func(name string) (string, error) {
		return writeJSON(name+".pod.json", map[string]any{
			"metadata":      map[string]any{"name": name, "namespace": "bench", "uid": name + "-uid", "attempt": 0},
			"log_directory": filepath.Join(dir, "logs", name),
			"linux": map[string]any{"security_context": map[string]any{
				"namespace_options": map[string]any{"network": 2}}}, // NODE: host network
		})
	}
	partCfg, err := writeJSON("part.json", map[string]any{
		"metadata": map[string]any{"name": "part"}, "image": map[string]any{"image": partitionImage.ref},
		"log_path": "part.log", "linux": map[string]any{}})
	if err != nil {
		return err
	}
	runcCfg, err := writeJSON("busybox.json", map[string]any{
		"metadata": map[string]any{"name": "busybox"}, "image": map[string]any{"image": busyboxImage.ref},
		"log_path": "busybox.log", "linux": map[string]any{}})
	if err != nil {
		return err
	}
	for i := -b.warmup; i < b.n; i++ {
		b.load.sample()
		var took [2]time.Duration
		for k, side := range []struct{ handler, cfg string }{{"runphi", partCfg}, {"runc", runcCfg}} {
			p, err := pod(fmt.Sprintf("%s-%d", side.handler, i+b.warmup))
			if err != nil {
				return err
			}
			t0 := time.Now()
			if _, err := b.d.crictl(60*time.Second, "run", "--no-pull", "--runtime", side.handler, side.cfg, p); err != nil {
				return err
			}
			took[k] = time.Since(t0)
		}
		b.d.removePods()
		if i >= 0 {
			b.res.criPart = append(b.res.criPart, ms(took[0]))
			b.res.criRunc = append(b.res.criRunc, ms(took[1]))
			b.logf("P1 CRI round %d: runphi pod %.1f ms, runc pod %.1f ms", i, ms(took[0]), ms(took[1]))
		}
	}
	// The same, one crictl per step, to see which step differs: the sandbox
	// (a runc pause container on both sides) or the container's start.
	for i := -b.warmup; i < b.n; i++ {
		b.load.sample()
		for k, side := range []struct{ handler, cfg string }{{"runphi", partCfg}, {"runc", runcCfg}} {
			p, err := pod(fmt.Sprintf("%s-step-%d", side.handler, i+b.warmup))
			if err != nil {
				return err
			}
			var took [3]time.Duration
			t0 := time.Now()
			out, err := b.d.crictl(60*time.Second, "runp", "--runtime", side.handler, p)
			if err != nil {
				return err
			}
			took[0] = time.Since(t0)
			podID := strings.TrimSpace(out)
			t0 = time.Now()
			out, err = b.d.crictl(60*time.Second, "create", "--no-pull", podID, side.cfg, p)
			if err != nil {
				return err
			}
			took[1] = time.Since(t0)
			t0 = time.Now()
			if _, err := b.d.crictl(60*time.Second, "start", strings.TrimSpace(out)); err != nil {
				return err
			}
			took[2] = time.Since(t0)
			if i >= 0 {
				steps := &b.res.criStepsPart
				if k == 1 {
					steps = &b.res.criStepsRunc
				}
				for j := range took {
					steps[j] = append(steps[j], ms(took[j]))
				}
			}
		}
		b.d.removePods()
	}
	return nil
}

// The cost of starting each shim binary at all: `-v` runs its init and
// prints the version.
func (b *bench) shimExec() error {
	runphi := filepath.Join(b.d.shimDir, "containerd-shim-runphi-v2")
	runc, err := exec.LookPath(filepath.Join(b.d.binDir, "containerd-shim-runc-v2"))
	if err != nil {
		return err
	}
	b.res.runphiShim, b.res.runcShim = runphi, runc
	for k, p := range []string{runphi, runc} {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if k == 0 {
			b.res.sizePart = st.Size()
		} else {
			b.res.sizeRunc = st.Size()
		}
	}
	for i := -b.warmup; i < b.n; i++ {
		var took [2]time.Duration
		for k, p := range []string{runphi, runc} {
			t0 := time.Now()
			if out, err := exec.Command(p, "-v").CombinedOutput(); err != nil {
				return fmt.Errorf("%s -v: %w: %s", p, err, out)
			}
			took[k] = time.Since(t0)
		}
		if i >= 0 {
			b.res.execPart = append(b.res.execPart, ms(took[0]))
			b.res.execRunc = append(b.res.execRunc, ms(took[1]))
		}
	}
	return nil
}

// P2, grouped: containers that share a group annotation share one shim.
// Each round starts 8 partitions (16 MiB each, so that 8 fit the board's
// pool) in one runphi shim and 8 busyboxes in one runc shim, reading the
// shim's memory after 1, 4 and 8.
func (b *bench) groupedMemory() error {
	b.res.groupSizes = []int{1, 4, 8}
	b.res.groupPart = make([]samples, len(b.res.groupSizes))
	b.res.groupRunc = make([]samples, len(b.res.groupSizes))
	b.res.groupPartPss = make([]samples, len(b.res.groupSizes))
	b.res.groupRuncPss = make([]samples, len(b.res.groupSizes))
	for i := 0; i < b.n; i++ {
		b.load.sample()
		for side, s := range []struct{ runtime, ref string }{{runtimeRunphi, partitionImage.ref}, {runtimeRunc, busyboxImage.ref}} {
			group := fmt.Sprintf("g%d-%d", i, side)
			var ids []string
			var first, last float64
			for k, size := range b.res.groupSizes {
				for len(ids) < size {
					id := fmt.Sprintf("%s-%d", group, len(ids))
					if _, err := b.d.ctr(60*time.Second, b.d.run("-d", s.runtime, "--annotation", "io.containerd.runc.v2.group="+group,
						"--memory-limit", strconv.Itoa(16<<20), s.ref, id)...); err != nil {
						return err
					}
					ids = append(ids, id)
				}
				if err := b.ensureRunning(ids...); err != nil {
					return err
				}
				time.Sleep(b.settle)
				pid, err := b.d.shimPID(ids[0])
				if err != nil {
					return err
				}
				if n := len(b.d.shimPIDs("")); n != 1 {
					return fmt.Errorf("group %s of %d containers: %d shims run, want 1 (grouping by io.containerd.runc.v2.group)", group, size, n)
				}
				rss, pss, err := memory(pid)
				if err != nil {
					return err
				}
				if side == 0 {
					b.res.groupPart[k] = append(b.res.groupPart[k], rss)
					b.res.groupPartPss[k] = append(b.res.groupPartPss[k], pss)
				} else {
					b.res.groupRunc[k] = append(b.res.groupRunc[k], rss)
					b.res.groupRuncPss[k] = append(b.res.groupRuncPss[k], pss)
				}
				if k == 0 {
					first = rss
				}
				last = rss
			}
			growth := (last - first) / float64(b.res.groupSizes[len(b.res.groupSizes)-1]-1)
			if side == 0 {
				b.res.groupGrowthPart = append(b.res.groupGrowthPart, growth)
			} else {
				b.res.groupGrowthRunc = append(b.res.groupGrowthRunc, growth)
			}
			for _, id := range ids {
				if err := b.api.stopAndRemove(id); err != nil {
					return err
				}
			}
		}
		b.logf("P2 grouped round %d: runphi +%.0f KiB, runc +%.0f KiB per extra container", i,
			b.res.groupGrowthPart[i], b.res.groupGrowthRunc[i])
	}
	return nil
}

// P4: churn. Cycles alternate between the runtimes; each is create → start
// → kill (SIGKILL, wait for the exit) → delete (task, container, snapshot)
// through the task API.
func (b *bench) churn(cycles int) error {
	b.res.churnN = cycles
	b.res.churnSteps = map[string][2]samples{}
	step := func(side int, name string, f func() error) error {
		t0 := time.Now()
		if err := f(); err != nil {
			return err
		}
		s := b.res.churnSteps[name]
		s[side] = append(s[side], ms(time.Since(t0)))
		b.res.churnSteps[name] = s
		return nil
	}
	for i := 0; i < cycles; i++ {
		if i%20 == 0 {
			b.load.sample()
		}
		for side, t := range []*template{b.partTmpl, b.runcTmpl} {
			id := fmt.Sprintf("churn-%d-%d", side, i)
			t0 := time.Now()
			for _, s := range []struct {
				name string
				f    func() error
			}{
				{"create", func() error { return b.api.create(t, id) }},
				{"start", func() error { return b.api.start(id) }},
				{"kill", func() error { return b.api.kill(id) }},
				{"delete", func() error { return b.api.remove(id) }},
			} {
				if err := step(side, s.name, s.f); err != nil {
					return fmt.Errorf("churn cycle %d: %w", i, err)
				}
			}
			d := time.Since(t0)
			if side == 0 {
				b.res.churnPart = append(b.res.churnPart, ms(d))
				b.res.churnPartTotal += d
			} else {
				b.res.churnRunc = append(b.res.churnRunc, ms(d))
				b.res.churnRuncTotal += d
			}
		}
		if (i+1)%50 == 0 {
			b.logf("P4 churn: %d cycles each", i+1)
		}
	}
	return nil
}

// P5: console throughput, the method of test/e2e's
// TestConsoleThroughputLossless: `ctr run --rm` of an inmate printing 100
// MB in 1000-byte lines, read from ctr's stdout, timed from the first byte
// to EOF; beside it busybox printing the same lines on runc.
func (b *bench) consoleThroughput(rounds int) error {
	awk := fmt.Sprintf(`BEGIN{s=sprintf("%%999s","");gsub(/ /,"x",s);for(i=0;i<%d;i++)print s}`, floodLines)
	for i := 0; i < rounds; i++ {
		b.load.sample()
		for side, args := range [][]string{
			b.d.run("--rm", runtimeRunphi, floodImage.ref, fmt.Sprintf("flood-part-%d", i)),
			b.d.run("--rm", runtimeRunc, busyboxImage.ref, fmt.Sprintf("flood-runc-%d", i), "awk", awk),
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
			cmd := b.d.ctrCommand(ctx, args...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				cancel()
				return err
			}
			if err := cmd.Start(); err != nil {
				cancel()
				return err
			}
			buf := make([]byte, 256<<10)
			var total int64
			var first time.Time
			for {
				n, err := stdout.Read(buf)
				if n > 0 && total == 0 {
					first = time.Now()
				}
				total += int64(n)
				if err == io.EOF {
					break
				}
				if err != nil {
					cancel()
					return fmt.Errorf("read ctr output: %w", err)
				}
			}
			end := time.Now()
			err = cmd.Wait()
			cancel()
			if err != nil {
				return fmt.Errorf("ctr %s: %w", strings.Join(args, " "), err)
			}
			if want := int64(floodLines * (len(floodLine) + 1)); total != want {
				return fmt.Errorf("ctr %s: %d bytes, want %d", strings.Join(args, " "), total, want)
			}
			mbps := float64(total) / 1e6 / end.Sub(first).Seconds()
			if side == 0 {
				b.res.mbpsPart = append(b.res.mbpsPart, mbps)
			} else {
				b.res.mbpsRunc = append(b.res.mbpsRunc, mbps)
			}
		}
		b.logf("P5 round %d: partition %.1f MB/s, runc %.1f MB/s", i, b.res.mbpsPart[i], b.res.mbpsRunc[i])
	}
	return nil
}

// P5, stalled reader (test/e2e's TestConsoleStalledReaderBoundedRSS): an
// attached `ctr run` of an endless printer is read for a second, then not
// at all; the shim's RSS is sampled every half second.
func (b *bench) consoleStall(rounds int, stall time.Duration) error {
	b.res.stallSeconds = int(stall.Seconds())
	awk := `BEGIN{s=sprintf("%999s","");gsub(/ /,"x",s);for(;;)print s}`
	for i := 0; i < rounds; i++ {
		b.load.sample()
		for side, args := range [][]string{
			b.d.run("", runtimeRunphi, floodForeverImage.ref, fmt.Sprintf("stall-part-%d", i)),
			b.d.run("", runtimeRunc, busyboxImage.ref, fmt.Sprintf("stall-runc-%d", i), "awk", awk),
		} {
			id := args[len(args)-1]
			if side == 1 {
				id = args[len(args)-3]
			}
			base, peak, trend, err := b.stallOne(args, id, stall)
			if err != nil {
				return err
			}
			if side == 0 {
				b.res.stallBasePart = append(b.res.stallBasePart, base)
				b.res.stallPeakPart = append(b.res.stallPeakPart, peak)
				b.res.stallTrendPart = append(b.res.stallTrendPart, trend)
			} else {
				b.res.stallBaseRunc = append(b.res.stallBaseRunc, base)
				b.res.stallPeakRunc = append(b.res.stallPeakRunc, peak)
			}
		}
		b.logf("P5 stall round %d: partition shim %.0f → peak %.0f KiB, runc shim %.0f → peak %.0f KiB", i,
			b.res.stallBasePart[i], b.res.stallPeakPart[i], b.res.stallBaseRunc[i], b.res.stallPeakRunc[i])
	}
	return nil
}

// stallOne returns the shim's RSS when the reader stopped, its peak over
// the stall, and how much the last third's peak exceeds the middle third's
// (bounded memory stops growing once the buffers are full).
func (b *bench) stallOne(args []string, id string, stall time.Duration) (base, peak, trend float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := b.d.ctrCommand(ctx, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, err
	}
	defer func() {
		b.api.kill(id)
		go io.Copy(io.Discard, stdout)
		cmd.Wait()
		b.api.remove(id)
	}()
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if _, err := stdout.Read(buf); err != nil {
			return 0, 0, 0, fmt.Errorf("read the output of %s: %w", id, err)
		}
	}
	pid, err := b.d.shimPID(id)
	if err != nil {
		return 0, 0, 0, err
	}
	if base, _, err = memory(pid); err != nil {
		return 0, 0, 0, err
	}
	var thirds [3]float64
	t0 := time.Now()
	for time.Since(t0) < stall {
		time.Sleep(500 * time.Millisecond)
		rss, _, err := memory(pid)
		if err != nil {
			return 0, 0, 0, err
		}
		k := min(int(3*time.Since(t0)/stall), 2)
		thirds[k] = max(thirds[k], rss)
	}
	return base, max(base, thirds[0], thirds[1], thirds[2]), thirds[2] - thirds[1], nil
}

// phaseLine is one line of the shim's phase timing log (pkg/shim/timing.go)
// as containerd copies it into its own log.
var phaseLine = regexp.MustCompile(`msg="phase timing".* id=([^ ]+) .*ms=([0-9.]+) .*phase=(?:"([a-z -]+)"|([a-z-]+))`)

// Phases: partitions started with the debug configuration, so that the
// shim logs its phase timing; read back from containerd's log.
func (b *bench) phases() error {
	b.res.phases = map[string]samples{}
	b.res.phaseOrder = []string{"shim start", "mount", "prepare", "plan", "create", "load", "caronte", "start", "first console byte"}
	for i := 0; i < b.n; i++ {
		id := fmt.Sprintf("phase-%d", i)
		if _, err := b.d.ctr(60*time.Second, b.d.run("-d", runtimeRunphi, "--runtime-config-path", b.d.debugConf, partitionImage.ref, id)...); err != nil {
			return err
		}
		var got map[string]float64
		var order []string
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, order = b.phaseLog(id)
			if hasAll(got, b.res.phaseOrder) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := b.api.stopAndRemove(id); err != nil {
			return err
		}
		if !hasAll(got, b.res.phaseOrder) {
			return fmt.Errorf("task %s: the shim logged phases %v, want %v (debug level through --runtime-config-path %s)",
				id, got, b.res.phaseOrder, b.d.debugConf)
		}
		// Phases this driver does not know (a finer timing log) are
		// reported after the known ones.
		for _, p := range order {
			if !slices.Contains(b.res.phaseOrder, p) {
				b.res.phaseOrder = append(b.res.phaseOrder, p)
			}
		}
		for p, v := range got {
			b.res.phases[p] = append(b.res.phases[p], v)
		}
	}
	return nil
}

func hasAll(got map[string]float64, want []string) bool {
	for _, p := range want {
		if _, ok := got[p]; !ok {
			return false
		}
	}
	return true
}

// phaseLog reads task id's phase lines from containerd's log, and the
// phases in the order they were logged.
func (b *bench) phaseLog(id string) (map[string]float64, []string) {
	f, err := os.Open(b.d.logPath)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	out := map[string]float64{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "phase timing") {
			continue
		}
		// containerd quotes the shim's line inside its own; undo that.
		line = strings.ReplaceAll(line, `\"`, `"`)
		m := phaseLine.FindStringSubmatch(line)
		if m == nil || m[1] != id {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		if _, ok := out[m[3]+m[4]]; !ok {
			order = append(order, m[3]+m[4])
		}
		out[m[3]+m[4]] = v
	}
	return out, order
}
