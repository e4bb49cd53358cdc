//go:build bench

package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	var (
		rounds  = flag.Int("n", minReportRounds, "measured rounds of each A/B pair (P1, P2, phases); fewer than 10 are marked as such in the report")
		warmup  = flag.Int("warmup", 2, "rounds run first and thrown away")
		cycles  = flag.Int("churn", 200, "P4 create → start → kill → delete cycles per runtime")
		floods  = flag.Int("console-rounds", 5, "P5 throughput rounds (100 MB each)")
		stalls  = flag.Int("stall-rounds", 2, "P5 stalled-reader rounds")
		stallD  = flag.Duration("stall", 9*time.Second, "how long the P5 reader stalls")
		only    = flag.String("only", "", "comma-separated subset of P1,P2,P3,P4,P5,phases (default all)")
		out     = flag.String("out", "docs/performance.md", "file whose results section is rewritten; empty: print only")
		binDir  = flag.String("bin", "bin", "where containerd-shim-runphi-v2 is (make build)")
		ctrdDir = flag.String("containerd", "/usr/bin", "where containerd 1.6.20 and ctr are")
		keep    = flag.Bool("keep", false, "keep the daemon's work dir")
		tmpfs   = flag.Bool("tmpfs", true, "keep what a host keeps in /run (containerd state, FIFOs, runc root, runphi state) on a tmpfs, as /run is")
	)
	flag.Parse()
	if err := run(*rounds, *warmup, *cycles, *floods, *stalls, *stallD, *only, *out, *binDir, *ctrdDir, *keep, *tmpfs); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// minReportRounds is the "median of ≥ 10": a run with fewer says
// so in its report (make bench-ci runs 3, to be short).
const minReportRounds = 10

func run(rounds, warmup, cycles, floods, stalls int, stall time.Duration, only, out, binDir, ctrdDir string, keep, tmpfs bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root: containerd mounts rootfs and runc creates containers")
	}
	want := func(part string) bool {
		if only == "" {
			return true
		}
		for _, p := range strings.Split(only, ",") {
			if strings.EqualFold(strings.TrimSpace(p), part) {
				return true
			}
		}
		return false
	}
	shimDir, err := filepath.Abs(binDir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(shimDir, "containerd-shim-runphi-v2")); err != nil {
		return fmt.Errorf("%w: run make build", err)
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
	m := machineInfo()
	m.loadStart = loadAverage()
	m.rounds, m.warmup = rounds, warmup
	load := &loadSampler{}
	load.sample()
	res := &results{}

	if want("P3") {
		logf("P3: Go benchmarks of %s", strings.Join(goBenchPackages, " "))
		g, err := runGoBenchmarks(".", 5)
		if err != nil {
			return err
		}
		res.goBench = g
	}

	needDaemon := false
	for _, p := range []string{"P1", "P2", "P4", "P5", "phases"} {
		needDaemon = needDaemon || want(p)
	}
	if needDaemon {
		if err := measureOnDaemon(res, rounds, warmup, cycles, floods, stalls, stall, want, shimDir, ctrdDir, keep, tmpfs, logf, load, &m); err != nil {
			return err
		}
	}
	load.sample()
	m.loadEnd = loadAverage()
	m.load = load.values
	m.date = time.Now().UTC().Format("2006-01-02 15:04 UTC")

	section := render(res, m)
	fmt.Print(section)
	if out != "" {
		if err := splice(out, section); err != nil {
			return err
		}
		logf("wrote the results into %s", out)
	}
	return nil
}

func measureOnDaemon(res *results, rounds, warmup, cycles, floods, stalls int, stall time.Duration, want func(string) bool,
	shimDir, ctrdDir string, keep, tmpfs bool, logf func(string, ...any), load *loadSampler, m *machine) (retErr error) {
	d, err := startDaemon(ctrdDir, shimDir, tmpfs)
	if err != nil {
		return err
	}
	m.containerd = d.version
	m.tmpfs = tmpfs
	logf("started containerd %s in %s", d.version, d.dir)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		d.stop()
		if keep || retErr != nil {
			logf("kept %s (containerd log: %s)", d.dir, d.logPath)
		} else {
			os.RemoveAll(d.dir)
		}
	}
	defer stop()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			logf("interrupted; cleaning up")
			stop()
			os.Exit(130)
		}
	}()

	if err := d.importImages(filepath.Join(d.dir, "images")); err != nil {
		return err
	}
	a, err := dialAPI(d.sock)
	if err != nil {
		return err
	}
	defer a.conn.Close()
	b := &bench{d: d, api: a, n: rounds, warmup: warmup, settle: 500 * time.Millisecond, logf: logf, load: load, res: *res}
	m.settleMS = int(b.settle.Milliseconds())
	defer func() { *res = b.res }()

	if b.partTmpl, err = d.newTemplate(a, "tmpl-part", runtimeRunphi, partitionImage.ref); err != nil {
		return err
	}
	if b.runcTmpl, err = d.newTemplate(a, "tmpl-runc", runtimeRunc, busyboxImage.ref); err != nil {
		return err
	}
	steps := []struct {
		part, what string
		f          func() error
	}{
		{"P1", "shim binaries' -v", b.shimExec},
		{"P1", "ctr run -d, and P2 one task per shim", b.startAndMemory},
		{"P1", "task API start", b.apiStart},
		{"P1", "start into a running grouped shim", b.groupedStart},
		{"P1", "CRI start", b.criStart},
		{"phases", "the shim's phase log", b.phases},
		{"P2", "grouped shims", b.groupedMemory},
		{"P4", "churn", func() error { return b.churn(cycles) }},
		{"P5", "console throughput", func() error { return b.consoleThroughput(floods) }},
		{"P5", "stalled console reader", func() error { return b.consoleStall(stalls, stall) }},
	}
	for _, s := range steps {
		if !want(s.part) && !(s.part == "P1" && s.what == "ctr run -d, and P2 one task per shim" && want("P2")) {
			continue
		}
		logf("%s: %s (load %s)", s.part, s.what, loadAverage())
		if err := s.f(); err != nil {
			return fmt.Errorf("%s %s: %w", s.part, s.what, err)
		}
	}
	return nil
}

// machineInfo describes the host and the build measured.
func machineInfo() machine {
	m := machine{cores: runtime.NumCPU(), goVersion: runtime.Version()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(string(data), "MemTotal: %d kB", &kb)
		m.memory = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.kernel = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("runc", "--version").Output(); err == nil {
		m.runc = strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
	}
	commit := "unknown"
	if out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no", "--", "cmd", "pkg").Output(); err == nil && len(st) > 0 {
			commit += " + uncommitted changes in cmd/ or pkg/"
		}
	}
	m.commit = commit
	return m
}
