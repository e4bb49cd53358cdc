//go:build bench

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The runtimes compared.
const (
	runtimeRunphi = "io.containerd.runphi.v2"
	runtimeRunc   = "io.containerd.runc.v2"
)

// namespace is the containerd namespace of the ctr and task API runs; CRI
// uses its own, k8s.io.
const namespace = "runphi-bench"

// cniBinDir is where Debian's containernetworking-plugins puts the plugins.
const cniBinDir = "/usr/lib/cni"

// daemon is the private containerd the whole run uses. The layout follows
// test/e2e's harness: a short work dir (socket paths are limited to 108
// bytes), its own root, state, FIFO and CNI dirs, and a runphi.toml with
// the simulator under the same dir.
type daemon struct {
	binDir    string // containerd and ctr
	shimDir   string // containerd-shim-runphi-v2, first after binDir on the daemon's PATH
	dir       string
	runDir    string // what a host keeps in /run: containerd's state, FIFOs, runc's and runphi's state
	tmpfs     bool   // run is a tmpfs, as /run is on a host with systemd
	runcRoot  string // runc's state dir, for both runtimes
	sock      string
	logPath   string
	config    string // runphi.toml
	debugConf string // the same with debug = true: the shim's phase timing log
	version   string
	cmd       *exec.Cmd
	exited    chan struct{}
}

// startDaemon starts the daemon. With tmpfs, the state a host keeps under
// /run (containerd's state dir, the FIFOs, runc's root, runphi's state_dir
// and sim_dir: tmpfs on any systemd host, and the defaults of every one of
// them) is on a private tmpfs, so that neither runtime pays for disk
// writes a production host would not make; containerd's root stays on disk.
func startDaemon(binDir, shimDir string, tmpfs bool) (*daemon, error) {
	dir, err := os.MkdirTemp("/tmp", "rphb-")
	if err != nil {
		return nil, err
	}
	run := filepath.Join(dir, "run")
	d := &daemon{
		binDir: binDir, shimDir: shimDir, dir: dir, runDir: run, tmpfs: tmpfs,
		runcRoot:  filepath.Join(run, "runc"),
		sock:      filepath.Join(dir, "c.sock"),
		logPath:   filepath.Join(dir, "containerd.log"),
		config:    filepath.Join(dir, "runphi.toml"),
		debugConf: filepath.Join(dir, "runphi-debug.toml"),
		exited:    make(chan struct{}),
	}
	if err := os.MkdirAll(run, 0o755); err != nil {
		return nil, err
	}
	if tmpfs {
		if err := syscall.Mount("tmpfs", run, "tmpfs", 0, "size=1g,mode=0755"); err != nil {
			return nil, fmt.Errorf("mount a tmpfs on %s: %w", run, err)
		}
	}
	for _, p := range []string{"root", "run/state", "run/fifo", "run/runc", "run/runphi/state", "run/runphi/sim", "cni/net.d", "cri"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			return nil, err
		}
	}
	runphi := fmt.Sprintf("backend = \"sim\"\nstate_dir = %q\nsim_dir = %q\nboard = \"qemu-arm64\"\n[runc]\nroot = %q\n",
		filepath.Join(run, "runphi/state"), filepath.Join(run, "runphi/sim"), d.runcRoot)
	files := map[string]string{
		d.config:    runphi,
		d.debugConf: strings.Replace(runphi, "[runc]", "debug = true\n[runc]", 1),
		filepath.Join(dir, "cni/net.d/10-lo.conflist"): `{"cniVersion":"1.0.0","name":"lo","plugins":[{"type":"loopback"}]}` + "\n",
		filepath.Join(dir, "config.toml"):              d.containerdConfig(),
		filepath.Join(dir, "crictl.yaml"):              fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n", d.sock, d.sock),
	}
	for path, data := range files {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			return nil, err
		}
	}
	out, err := exec.Command(filepath.Join(binDir, "containerd"), "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s/containerd --version: %w (run make deps)", binDir, err)
	}
	if f := strings.Fields(string(out)); len(f) >= 3 {
		d.version = f[2]
	}

	logf, err := os.Create(d.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.cmd = exec.Command(filepath.Join(binDir, "containerd"), "--config", filepath.Join(dir, "config.toml"))
	d.cmd.Env = append(os.Environ(), "PATH="+binDir+":"+shimDir+":"+os.Getenv("PATH"), "RUNPHI_CONFIG="+d.config)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(d.sock); err == nil {
			if _, err := d.ctr(5*time.Second, "version"); err == nil {
				return d, nil
			}
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("containerd exited at start; log %s", d.logPath)
		default:
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("containerd did not answer on %s within 15 s; log %s", d.sock, d.logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// containerdConfig is containerd 1.6's configuration: CRI with a local
// pause image, restrict_oom_score_adj (root lacks CAP_SYS_RESOURCE here),
// loopback-only CNI (host-network pods), and the handlers runc and runphi.
func (d *daemon) containerdConfig() string {
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
    runtime_type = %q
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = %q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runphi]
    runtime_type = %q
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runphi.options]
      ConfigPath = %q
`, filepath.Join(d.dir, "root"), filepath.Join(d.runDir, "state"), d.sock, d.sock+".ttrpc",
		pauseImage.ref, cniBinDir, filepath.Join(d.dir, "cni/net.d"), runtimeRunc, d.runcRoot, runtimeRunphi, d.config)
}

// stop removes every pod, task and container, stops the daemon by its pid,
// kills shims it left, unmounts and removes the work dir (kept with keep).
func (d *daemon) stop() {
	d.removePods()
	d.removeAll()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	for _, pid := range d.shimPIDs("") {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range mountsUnder(d.dir) {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// ctr runs ctr in the bench namespace.
func (d *daemon) ctr(timeout time.Duration, args ...string) (string, error) {
	return d.ctrNS(namespace, timeout, args...)
}

func (d *daemon) ctrNS(ns string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(d.binDir, "ctr"), append([]string{"-a", d.sock, "-n", ns}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// ctrCommand is a ctr command to run in the background.
func (d *daemon) ctrCommand(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, filepath.Join(d.binDir, "ctr"), append([]string{"-a", d.sock, "-n", namespace}, args...)...)
}

// crictl runs crictl against the daemon's CRI.
func (d *daemon) crictl(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, crictlBin(), append([]string{"--config", filepath.Join(d.dir, "crictl.yaml")}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// removeAll kills and removes every task and container of the bench
// namespace.
func (d *daemon) removeAll() {
	out, _ := d.ctr(10*time.Second, "task", "ls", "-q")
	for _, id := range strings.Fields(out) {
		d.ctr(10*time.Second, "task", "kill", "-s", "SIGKILL", id)
		d.ctr(30*time.Second, "task", "rm", "-f", id)
	}
	out, _ = d.ctr(10*time.Second, "container", "ls", "-q")
	for _, id := range strings.Fields(out) {
		d.ctr(10*time.Second, "container", "rm", id)
	}
}

// removePods removes every CRI pod.
func (d *daemon) removePods() {
	if !haveCrictl() {
		return
	}
	out, _ := d.crictl(30*time.Second, "pods", "-q")
	for _, id := range strings.Fields(out) {
		d.crictl(60*time.Second, "stopp", id)
		d.crictl(60*time.Second, "rmp", "-f", id)
	}
}

// shimPIDs lists the live shims this daemon started, of both runtimes; with
// id set, only those serving task id (the shim's -id: a grouped shim has
// the first task's).
func (d *daemon) shimPIDs(id string) []int {
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
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim-") {
			continue
		}
		if i := slices.Index(args, "-address"); i < 0 || i+1 >= len(args) || args[i+1] != d.sock {
			continue
		}
		if id != "" {
			if i := slices.Index(args, "-id"); i < 0 || i+1 >= len(args) || args[i+1] != id {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// shimPID is the one shim serving task id.
func (d *daemon) shimPID(id string) (int, error) {
	// A shim's `start` parent may still be there for a moment: wait for one.
	deadline := time.Now().Add(3 * time.Second)
	for {
		pids := d.shimPIDs(id)
		if len(pids) == 1 {
			return pids[0], nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("task %s: shim processes %v, want exactly one", id, pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
		if len(f) >= 5 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

func toolsBin() string {
	if d := os.Getenv("RUNPHI_TOOLS_BIN"); d != "" {
		return d
	}
	return "/opt/runphi-tools/bin"
}

func crictlBin() string { return filepath.Join(toolsBin(), "crictl") }

// haveCrictl reports whether the CRI part can run: crictl (make deps) and
// the loopback CNI plugin.
func haveCrictl() bool {
	for _, p := range []string{crictlBin(), filepath.Join(cniBinDir, "loopback")} {
		if _, err := os.Stat(p); err != nil {
			return false
		}
	}
	return true
}

// runFlags are ctr run's flags for a container on runtime: the FIFO dir
// and, for runc, its root.
func (d *daemon) runFlags(runtime string) []string {
	f := []string{"--fifo-dir", filepath.Join(d.runDir, "fifo"), "--runtime", runtime}
	if runtime == runtimeRunc {
		f = append(f, "--runc-root", d.runcRoot)
	}
	return f
}

// run is ctr run's arguments: mode ("-d", "--rm" or ""), the runtime's
// flags, then the rest (other flags, the image, the id, the command).
func (d *daemon) run(mode, runtime string, rest ...string) []string {
	args := []string{"run"}
	if mode != "" {
		args = append(args, mode)
	}
	args = append(args, d.runFlags(runtime)...)
	return append(args, rest...)
}
