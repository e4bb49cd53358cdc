//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// namespace is the containerd namespace every test works in.
const namespace = "runphi-e2e"

// runtimeName is the runtime ctr asks containerd for.
const runtimeName = "io.containerd.runphi.v2"

// daemonSpec says where one containerd version's binaries are.
type daemonSpec struct {
	name   string // subtest name, "containerd-<version>"
	binDir string // holds containerd and ctr; first on the daemon's PATH
	major  int    // 1 or 2: the config format and shim handshake differ
}

// daemon is one running private containerd. It lives for the whole suite and
// is shared by the tests, which run one after the other.
type daemon struct {
	daemonSpec
	dir      string // short work dir: socket paths are limited to 108 bytes
	sock     string
	logPath  string
	stateDir string // runphi state_dir (the ledger)
	simDir   string // runphi sim_dir
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has been waited for
}

var (
	specsOnce sync.Once
	specs     []daemonSpec
	specsErr  []string // daemons that cannot run here, with the reason

	daemonsMu sync.Mutex
	daemons   = map[string]*daemon{} // by spec name; started on first use
)

// toolsBin is where scripts/install-deps.sh puts containerd v2.
func toolsBin() string {
	if d := os.Getenv("RUNPHI_TOOLS_BIN"); d != "" {
		return d
	}
	return "/opt/runphi-tools/bin"
}

// binDir is where containerd-shim-runphi-v2 and runphi are.
func binDir() string {
	if d := os.Getenv("RUNPHI_BIN_DIR"); d != "" {
		return d
	}
	abs, _ := filepath.Abs("../../bin")
	return abs
}

// daemonSpecs finds the two daemons. A missing one is a failure under CI
// (where `make deps` must have installed it) and a skip elsewhere.
func daemonSpecs() []daemonSpec {
	specsOnce.Do(func() {
		for _, dir := range []string{"/usr/bin", toolsBin()} {
			out, err := exec.Command(filepath.Join(dir, "containerd"), "--version").Output()
			if err != nil {
				specsErr = append(specsErr, fmt.Sprintf("%s/containerd: %v (run make deps)", dir, err))
				continue
			}
			// "containerd github.com/containerd/containerd 1.6.20~ds1 …"
			f := strings.Fields(string(out))
			if len(f) < 3 {
				specsErr = append(specsErr, fmt.Sprintf("%s/containerd --version: unexpected %q", dir, out))
				continue
			}
			ver := strings.TrimPrefix(f[2], "v")
			ver, _, _ = strings.Cut(ver, "~")
			ver, _, _ = strings.Cut(ver, "+")
			major, _ := strconv.Atoi(strings.SplitN(ver, ".", 2)[0])
			specs = append(specs, daemonSpec{name: "containerd-" + ver, binDir: dir, major: major})
		}
	})
	return specs
}

// forEachDaemon runs fn as one subtest per daemon, then removes whatever the
// test left and checks that nothing leaked.
func forEachDaemon(t *testing.T, fn func(t *testing.T, d *daemon)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the e2e suite starts containerd and must run as root")
	}
	for _, bin := range []string{"containerd-shim-runphi-v2", "runphi"} {
		if _, err := os.Stat(filepath.Join(binDir(), bin)); err != nil {
			t.Fatalf("%v: run make build first (or set RUNPHI_BIN_DIR)", err)
		}
	}
	ss := daemonSpecs()
	for _, msg := range specsErr {
		if os.Getenv("CI") != "" {
			t.Errorf("daemon unavailable: %s", msg)
		} else {
			t.Logf("skipping a daemon: %s", msg)
		}
	}
	for _, s := range ss {
		t.Run(s.name, func(t *testing.T) {
			d := startDaemon(t, s)
			t.Cleanup(func() { d.cleanupAfterTest(t) })
			fn(t, d)
		})
	}
}

// startDaemon returns the running daemon for s, starting it on first use.
func startDaemon(t *testing.T, s daemonSpec) *daemon {
	daemonsMu.Lock()
	defer daemonsMu.Unlock()
	if d, ok := daemons[s.name]; ok {
		select {
		case <-d.exited:
			t.Fatalf("%s exited during the suite; log: %s\n%s", s.name, d.logPath, tail(d.logPath, 30))
		default:
		}
		return d
	}
	dir, err := os.MkdirTemp("/tmp", "rphe2e-")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{
		daemonSpec: s,
		dir:        dir,
		sock:       filepath.Join(dir, "c.sock"),
		logPath:    filepath.Join(dir, "containerd.log"),
		stateDir:   filepath.Join(dir, "runphi", "state"),
		simDir:     filepath.Join(dir, "runphi", "sim"),
		exited:     make(chan struct{}),
	}
	for _, p := range []string{"root", "state", "fifo", "runphi/state", "runphi/sim"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	runphiConfig := d.runphiConfig()
	// runc keeps the state of the daemon's ordinary containers under its own
	// dir, so that suites running at the same time on one host (ctr ids such
	// as rc-exec repeat) never meet in /run/containerd/runc.
	writeFile(t, runphiConfig, fmt.Sprintf("backend = \"sim\"\nstate_dir = %q\nsim_dir = %q\nboard = \"qemu-arm64\"\n[runc]\nroot = %q\n",
		d.stateDir, d.simDir, filepath.Join(dir, "runc")))
	d.writeCNIConfig(t)
	writeFile(t, filepath.Join(dir, "config.toml"), d.config())

	logf, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(filepath.Join(s.binDir, "containerd"), "--config", filepath.Join(dir, "config.toml"))
	// The daemon's own directory first: a 2.x daemon must find its own
	// containerd-shim-runc-v2 before Debian's 1.6 one in /usr/bin.
	d.cmd.Env = append(os.Environ(),
		"PATH="+s.binDir+":"+binDir()+":"+os.Getenv("PATH"),
		"RUNPHI_CONFIG="+runphiConfig)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group, so a ^C to `go test` reaches the harness first
	// and the harness stops the daemon in order.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	daemons[s.name] = d

	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(d.sock); err == nil {
			if r := d.ctr(t, 5*time.Second, "version"); r.err == nil {
				break
			}
		}
		select {
		case <-d.exited:
			t.Fatalf("%s exited at start: %v\n%s", s.name, d.cmd.ProcessState, tail(d.logPath, 30))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer on %s within 15 s\n%s", s.name, d.sock, tail(d.logPath, 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("started %s (pid %d) in %s", s.name, d.cmd.Process.Pid, dir)
	return d
}

// config is the daemon's configuration: everything under d.dir, and CRI on
// with what it needs on these machines (the same as docs/quickstart.md): a
// local pause image (no registry is reachable), restrict_oom_score_adj (root
// lacks CAP_SYS_RESOURCE, so runc cannot set the sandbox's -998), a
// loopback-only CNI configuration (CRI reports the network ready; pods use
// the host network), and the runtime handler "runphi" whose ConfigPath is
// the suite's runphi.toml.
func (d *daemon) config() string {
	if d.major < 2 {
		return fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runphi]
    runtime_type = %q
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runphi.options]
      ConfigPath = %q
`, filepath.Join(d.dir, "root"), filepath.Join(d.dir, "state"), d.sock, d.sock+".ttrpc",
			pauseImage.ref, cniBinDir, d.cniConfDir(), runtimeName, d.runphiConfig())
	}
	return fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = %q
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%q]
    conf_dir = %q
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runphi]
    runtime_type = %q
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runphi.options]
      ConfigPath = %q
`, filepath.Join(d.dir, "root"), filepath.Join(d.dir, "state"), d.sock, d.sock+".ttrpc",
		pauseImage.ref, cniBinDir, d.cniConfDir(), runtimeName, d.runphiConfig())
}

// stopDaemons stops every daemon by its pid and removes its work dir, after
// removing any task left and unmounting what is still mounted.
func stopDaemons() {
	daemonsMu.Lock()
	defer daemonsMu.Unlock()
	for name, d := range daemons {
		d.removeAllPods(nil)
		d.removeAllTasks(nil)
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			fmt.Fprintf(os.Stderr, "e2e: %s did not stop on SIGTERM, killing it\n", name)
			d.cmd.Process.Kill()
			<-d.exited
		}
		for _, pid := range d.shimPIDs() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, m := range mountsUnder(d.dir) {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
		if os.Getenv("RUNPHI_E2E_KEEP") == "" {
			os.RemoveAll(d.dir)
		} else {
			fmt.Fprintf(os.Stderr, "e2e: kept %s\n", d.dir)
		}
		delete(daemons, name)
	}
}

// ctrResult is what one ctr command did.
type ctrResult struct {
	stdout, stderr string
	code           int   // exit code; -1 if it did not run or was killed
	err            error // nil iff the command exited 0
}

func (r ctrResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// ctr runs ctr against the daemon in the test namespace, killing it after
// timeout.
func (d *daemon) ctr(t testing.TB, timeout time.Duration, args ...string) ctrResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := d.ctrCommand(ctx, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := ctrResult{stdout: out.String(), stderr: filterWarnings(errOut.String()), code: -1, err: err}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.code = 0
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	}
	if ctx.Err() != nil {
		r.err = fmt.Errorf("ctr %s: timed out after %v", strings.Join(args, " "), timeout)
	}
	if t != nil {
		t.Logf("ctr %s → %s", strings.Join(args, " "), r)
	}
	return r
}

// ctrCommand is the exec.Cmd for one ctr call, for callers that run it in
// the background.
func (d *daemon) ctrCommand(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"-a", d.sock, "-n", namespace}, args...)
	return exec.CommandContext(ctx, filepath.Join(d.binDir, "ctr"), full...)
}

// filterWarnings drops containerd 2.x's cgroup v1 deprecation notice, which
// every ctr command prints on this machine.
func filterWarnings(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "DEPRECATION") && strings.Contains(l, "cgroup v1") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// mustCtr is ctr that fails the test on a non-zero exit.
func (d *daemon) mustCtr(t testing.TB, args ...string) ctrResult {
	t.Helper()
	r := d.ctr(t, 30*time.Second, args...)
	if r.err != nil {
		t.Fatalf("ctr %s: %v (%s)", strings.Join(args, " "), r.err, r)
	}
	return r
}

// taskStatus is one row of `ctr task ls`.
type taskStatus struct {
	pid    int
	status string
}

func (d *daemon) tasks(t testing.TB) map[string]taskStatus {
	t.Helper()
	r := d.ctr(nil, 10*time.Second, "task", "ls")
	if r.err != nil {
		t.Fatalf("ctr task ls: %v (%s)", r.err, r)
	}
	out := map[string]taskStatus{}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] == "TASK" {
			continue
		}
		pid, _ := strconv.Atoi(f[1])
		out[f[0]] = taskStatus{pid: pid, status: f[2]}
	}
	return out
}

// waitTaskStatus polls `ctr task ls` until task id has status want.
func (d *daemon) waitTaskStatus(t testing.TB, id, want string, timeout time.Duration) taskStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, ok := d.tasks(t)[id]
		if ok && st.status == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s: status %q (listed: %v) after %v, want %s", id, st.status, ok, timeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeAllTasks kills and removes every task and container of the test
// namespace, as a user cleaning up would.
func (d *daemon) removeAllTasks(t testing.TB) {
	r := d.ctr(nil, 10*time.Second, "task", "ls", "-q")
	for _, id := range strings.Fields(r.stdout) {
		if t != nil {
			t.Logf("removing task %s left by the test", id)
		}
		d.ctr(nil, 10*time.Second, "task", "kill", "-s", "SIGKILL", id)
		d.ctr(nil, 30*time.Second, "task", "rm", "-f", id)
	}
	r = d.ctr(nil, 10*time.Second, "container", "ls", "-q")
	for _, id := range strings.Fields(r.stdout) {
		d.ctr(nil, 10*time.Second, "container", "rm", id)
	}
}

// cleanupAfterTest removes what the test left and then checks that the
// daemon, the shims, the mounts, the simulator and the ledger are back to
// nothing.
func (d *daemon) cleanupAfterTest(t *testing.T) {
	d.removeAllPods(t)
	d.removeAllTasks(t)
	d.assertNothingLeft(t)
	if t.Failed() {
		t.Logf("containerd log (last lines):\n%s", tail(d.logPath, 40))
	}
}

// assertNothingLeft checks, waiting a few seconds for shims to exit, that no
// shim process of this daemon runs, nothing is mounted under its dirs, the
// simulator has only the root cell and the ledger is empty.
func (d *daemon) assertNothingLeft(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		problems := d.leaks()
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range problems {
				t.Errorf("left behind: %s", p)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *daemon) leaks() []string {
	var problems []string
	if pids := d.shimPIDs(); len(pids) > 0 {
		problems = append(problems, fmt.Sprintf("runphi shim processes %v", pids))
	}
	if ms := mountsUnder(d.dir); len(ms) > 0 {
		problems = append(problems, fmt.Sprintf("mounts %v", ms))
	}
	problems = append(problems, d.partitionLeaks()...)
	return problems
}

// shimPIDs lists the live runphi shim processes started by this daemon.
// Zombies have an empty cmdline and are not counted: PID 1 reaps exited
// shims a few seconds late on these machines.
func (d *daemon) shimPIDs() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if !strings.HasSuffix(args[0], "containerd-shim-runphi-v2") {
			continue
		}
		if i := slices.Index(args, "-address"); i >= 0 && i+1 < len(args) && args[i+1] == d.sock {
			pids = append(pids, pid)
		}
	}
	return pids
}

// shimPIDsFor lists the live shims serving task id.
func (d *daemon) shimPIDsFor(id string) []int {
	var pids []int
	for _, pid := range d.shimPIDs() {
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(string(raw), "\x00")
		if i := slices.Index(args, "-id"); i >= 0 && i+1 < len(args) && args[i+1] == id {
			pids = append(pids, pid)
		}
	}
	return pids
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// unescapeMountinfo undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// bundleDir is where containerd keeps the bundle of task id.
func (d *daemon) bundleDir(id string) string {
	return filepath.Join(d.dir, "state", "io.containerd.runtime.v2.task", namespace, id)
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
