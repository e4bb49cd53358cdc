//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// critestEnv selects TestCritest; `make critest` sets it. The run needs a
// daemon with a real pod network (a loopback-only CNI network cannot give a
// pod its own eth0), so it has its own daemons, each inside a network
// namespace of its own with a bridge network (docs/critest.md): the bridge,
// veths and addresses never leave it.
const critestEnv = "RUNPHI_CRITEST"

// critestFocus is the subset issue 5 asks for.
const critestFocus = "PodSandbox|basic operations on container"

// critestSkip lists, per containerd major version, the specs of the focus
// that cannot pass whatever the runtime, each explained in docs/critest.md.
var critestSkip = map[int][]string{
	// containerd 1.6's CRI answers StopPodSandbox of an unknown sandbox
	// with NotFound (runc's handler fails the same way).
	1: {"Idempotence StopPodSandbox should not return an error if not found"},
}

// critestImage is busybox plus a pgrep, which busybox-static lacks and
// the execSync-with-timeout spec runs (`pgrep sleep`).
var critestImage = testImage{ref: "docker.io/runphi/e2e-critest:latest", rootfs: busyboxRootfs, cmd: []string{"/bin/sh"},
	files: map[string]string{"bin/pgrep": `#!/bin/sh
# pgrep NAME: the pids whose command name is NAME.
status=1
for d in /proc/[0-9]*; do
	if [ "$(cat "$d/comm" 2>/dev/null)" = "$1" ]; then echo "${d#/proc/}"; status=0; fi
done
exit $status
`}}

// critestBin is critest v1.37.0, built by `make critest` into the tools dir.
func critestBin() string { return filepath.Join(toolsBin(), "critest") }

// Acceptance 5 of issue 5: cri-tools' critest with --runtime-handler
// runphi: the PodSandbox and "basic operations on container" specs pass for
// runc-fallback containers (critest's images have no boot description).
func TestCritest(t *testing.T) {
	if os.Getenv(critestEnv) != "1" {
		t.Skipf("set %s=1 (make critest) to run critest", critestEnv)
	}
	needCRI(t)
	if _, err := os.Stat(critestBin()); err != nil {
		t.Fatalf("%v: make critest builds it", err)
	}
	for _, p := range []string{filepath.Join(cniBinDir, "bridge"), filepath.Join(cniBinDir, "host-local")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v (apt-get install containernetworking-plugins)", err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("critest starts containerd and must run as root")
	}
	for _, s := range daemonSpecs() {
		t.Run(s.name, func(t *testing.T) {
			d := startNetnsDaemon(t, s)
			images := filepath.Join(d.dir, "critest-images.yaml")
			d.ensureCRIImage(t, pauseImage)
			ref := d.ensureCRIImage(t, critestImage)
			writeFile(t, images, fmt.Sprintf("defaultTestContainerImage: %s\nwebServerTestImage: %s\n", ref, ref))

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, critestBin(),
				"--runtime-endpoint", "unix://"+d.sock, "--image-endpoint", "unix://"+d.sock,
				"--test-images-file", images, "--runtime-handler", "runphi",
				"--ginkgo.focus", critestFocus, "--ginkgo.no-color")
			if skip := critestSkip[s.major]; len(skip) > 0 {
				cmd.Args = append(cmd.Args, "--ginkgo.skip", strings.Join(skip, "|"))
			}
			out, err := cmd.CombinedOutput()
			logPath := filepath.Join(os.TempDir(), "critest-"+s.name+".log")
			os.WriteFile(logPath, out, 0o644)
			summary := regexp.MustCompile(`Ran \d+ of \d+ Specs[^\n]*\n[^\n]*`).FindString(string(out))
			t.Logf("critest (%s, log %s): %s", s.name, logPath, summary)
			if err != nil {
				t.Errorf("critest: %v\n%s", err, tailText(string(out), 60))
			}
		})
	}
}

// startNetnsDaemon starts a private daemon for s inside a new network
// namespace, with a bridge network for pods, and stops it at the end of
// the test.
func startNetnsDaemon(t *testing.T, s daemonSpec) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "rphct-")
	if err != nil {
		t.Fatal(err)
	}
	s.name = "critest-" + s.name // its own images, apart from the suite's daemon
	d := &daemon{
		daemonSpec: s,
		dir:        dir,
		sock:       filepath.Join(dir, "c.sock"),
		logPath:    filepath.Join(dir, "containerd.log"),
		stateDir:   filepath.Join(dir, "runphi", "state"),
		simDir:     filepath.Join(dir, "runphi", "sim"),
		exited:     make(chan struct{}),
	}
	for _, p := range []string{"root", "state", "fifo", "runphi/state", "runphi/sim", "cni/net.d", "cni/ipam"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// runc keeps the state of the daemon's ordinary containers under its own
	// dir, so that suites running at the same time on one host (ctr ids such
	// as rc-exec repeat) never meet in /run/containerd/runc.
	writeFile(t, d.runphiConfig(), fmt.Sprintf("backend = \"sim\"\nstate_dir = %q\nsim_dir = %q\nboard = \"qemu-arm64\"\n[runc]\nroot = %q\n",
		d.stateDir, d.simDir, filepath.Join(dir, "runc")))
	writeFile(t, filepath.Join(d.cniConfDir(), "10-critest.conflist"), fmt.Sprintf(`{"cniVersion":"1.0.0","name":"critest","plugins":[
  {"type":"bridge","bridge":"rphct0","isGateway":true,"ipMasq":false,
   "ipam":{"type":"host-local","ranges":[[{"subnet":"10.99.0.0/24"}]],"dataDir":%q}},
  {"type":"loopback"}]}`, filepath.Join(dir, "cni", "ipam")))
	// Pod network namespaces stay under the daemon's state dir (1.7+ and
	// 2.x; 1.6 keeps them in /var/run/netns).
	config := strings.Replace(d.config(), "restrict_oom_score_adj = true\n",
		"restrict_oom_score_adj = true\n  netns_mounts_under_state_dir = true\n", 1)
	if d.major < 2 {
		config = strings.Replace(config, "  netns_mounts_under_state_dir = true\n", "", 1)
	}
	writeFile(t, filepath.Join(dir, "config.toml"), config)

	logf, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command("unshare", "--net", "sh", "-c", `ip link set lo up && exec "$0" --config "$1"`,
		filepath.Join(s.binDir, "containerd"), filepath.Join(dir, "config.toml"))
	d.cmd.Env = append(os.Environ(), "PATH="+s.binDir+":"+binDir()+":"+os.Getenv("PATH"), "RUNPHI_CONFIG="+d.runphiConfig())
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.removeAllPods(nil)
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
		for _, pid := range d.shimPIDs() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, m := range mountsUnder(d.dir) {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
		if t.Failed() || os.Getenv("RUNPHI_E2E_KEEP") != "" {
			t.Logf("kept %s", d.dir)
			return
		}
		os.RemoveAll(d.dir)
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if r := d.crictl(nil, 5*time.Second, "info"); r.err == nil {
			break
		}
		select {
		case <-d.exited:
			t.Fatalf("%s exited at start: %v\n%s", s.name, d.cmd.ProcessState, tail(d.logPath, 30))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer CRI on %s within 15 s\n%s", s.name, d.sock, tail(d.logPath, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d
}

func tailText(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
