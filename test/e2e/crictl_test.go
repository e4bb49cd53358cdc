//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The CRI side of the harness: images for pods, crictl, and pod and
// container configurations. Every daemon runs CRI (daemon.config), in
// containerd's k8s.io namespace, beside the ctr tests' own namespace.

// criNamespace is the containerd namespace CRI keeps its images and
// containers in.
const criNamespace = "k8s.io"

// cniBinDir is where Debian's containernetworking-plugins installs the CNI
// plugins.
const cniBinDir = "/usr/lib/cni"

var (
	// busyboxImage is an ordinary image: Debian's busybox-static with every
	// applet linked, and no boot description, so it runs on runc.
	busyboxImage = testImage{ref: "docker.io/runphi/e2e-busybox:latest", rootfs: busyboxRootfs, cmd: []string{"/bin/sh"}}
	// pauseImage is the daemons' sandbox image: busybox sleeping for ever,
	// started as /bin/busybox so that its command name is not "sleep"
	// (critest looks for leftover sleep processes in the pod).
	pauseImage = testImage{ref: "docker.io/runphi/e2e-pause:latest", rootfs: busyboxRootfs,
		cmd: []string{"/bin/busybox", "sleep", "2147483647"}}
)

// busyboxRootfs writes a root filesystem around /bin/busybox (the Debian
// package busybox-static, which `make deps` installs).
func busyboxRootfs(t testing.TB, root string) {
	t.Helper()
	for _, dir := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("%v: install busybox-static (make deps)", err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n")
	writeFile(t, filepath.Join(root, "etc", "group"), "root:x:0:\n")
}

// cniConfDir holds the daemon's CNI network configuration.
func (d *daemon) cniConfDir() string { return filepath.Join(d.dir, "cni", "net.d") }

// writeCNIConfig writes a loopback-only network: enough for CRI to report
// NetworkReady and to run host-network pods, and it touches nothing outside
// the pods.
func (d *daemon) writeCNIConfig(t testing.TB) {
	t.Helper()
	if err := os.MkdirAll(d.cniConfDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(d.cniConfDir(), "10-lo.conflist"),
		`{"cniVersion":"1.0.0","name":"lo","plugins":[{"type":"loopback"}]}`+"\n")
}

// crictlBin is crictl v1.37.0, which `make deps` builds into the tools dir.
func crictlBin() string { return filepath.Join(toolsBin(), "crictl") }

// needCRI skips the test (fails it under CI) when crictl or the CNI
// plugins are missing.
func needCRI(t *testing.T) {
	t.Helper()
	for _, p := range []string{crictlBin(), filepath.Join(cniBinDir, "loopback"), "/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%v (run make deps)", err)
			}
			t.Skipf("%v (run make deps)", err)
		}
	}
}

// crictl runs crictl against the daemon's CRI, killing it after timeout.
func (d *daemon) crictl(t testing.TB, timeout time.Duration, args ...string) ctrResult {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	config := filepath.Join(d.dir, "crictl.yaml")
	if _, err := os.Stat(config); err != nil {
		// Without a file crictl warns on every call that /etc/crictl.yaml
		// is missing.
		os.WriteFile(config, []byte(fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n", d.sock, d.sock)), 0o644)
	}
	full := append([]string{"--config", config}, args...)
	cmd := exec.CommandContext(ctx, crictlBin(), full...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := ctrResult{stdout: out.String(), stderr: errOut.String(), code: -1, err: err}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.code = 0
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	}
	if ctx.Err() != nil {
		r.err = fmt.Errorf("crictl %s: timed out after %v", strings.Join(args, " "), timeout)
	}
	if t != nil {
		shown := r
		if len(shown.stdout) > 400 { // inspect and stats print pages of JSON
			shown.stdout = shown.stdout[:400] + "…"
		}
		t.Logf("crictl %s → %s", strings.Join(args, " "), shown)
	}
	return r
}

// mustCrictl is crictl that fails the test on a non-zero exit.
func (d *daemon) mustCrictl(t testing.TB, args ...string) ctrResult {
	t.Helper()
	r := d.crictl(t, 60*time.Second, args...)
	if r.err != nil {
		t.Fatalf("crictl %s: %v (%s)", strings.Join(args, " "), r.err, r)
	}
	return r
}

// ensureCRIImage imports img into CRI's namespace once.
func (d *daemon) ensureCRIImage(t testing.TB, img testImage) string {
	t.Helper()
	tarball := imageTar(t, img)
	importedMu.Lock()
	defer importedMu.Unlock()
	key := d.name + " " + criNamespace + " " + img.ref
	if !imported[key] {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(d.binDir, "ctr"), "-a", d.sock, "-n", criNamespace, "images", "import", tarball)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ctr -n %s images import %s: %v\n%s", criNamespace, tarball, err, out)
		}
		imported[key] = true
	}
	return img.ref
}

// criPod is a pod sandbox made with `crictl runp --runtime runphi`.
type criPod struct {
	d      *daemon
	name   string
	id     string
	config string // the pod configuration file, which crictl create needs again
	logDir string
}

// runPod starts a host-network pod with the runphi handler (loopback-only
// CNI cannot give a pod its own network).
func (d *daemon) runPod(t *testing.T, name string) *criPod {
	t.Helper()
	d.ensureCRIImage(t, pauseImage)
	dir := filepath.Join(d.dir, "cri", name)
	p := &criPod{d: d, name: name, config: filepath.Join(dir, "pod.json"), logDir: filepath.Join(dir, "logs")}
	if err := os.MkdirAll(p.logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeJSON(t, p.config, map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "runphi-e2e", "uid": name + "-uid", "attempt": 0},
		"log_directory": p.logDir,
		"linux": map[string]any{"security_context": map[string]any{
			"namespace_options": map[string]any{"network": 2}}}, // NODE: host network
	})
	p.id = strings.TrimSpace(d.mustCrictl(t, "runp", "--runtime", "runphi", p.config).stdout)
	if p.id == "" {
		t.Fatal("crictl runp printed no pod id")
	}
	return p
}

// containerConfig is one container of a pod, as crictl create reads it.
type containerConfig struct {
	name      string
	image     testImage
	command   []string
	resources map[string]any // linux.resources (cpu_period, cpu_quota, memory_limit_in_bytes)
}

// create runs crictl create; it returns the container id, or the failed
// result.
func (p *criPod) create(t *testing.T, c containerConfig) (string, ctrResult) {
	t.Helper()
	p.d.ensureCRIImage(t, c.image)
	cfg := map[string]any{
		"metadata": map[string]any{"name": c.name},
		"image":    map[string]any{"image": c.image.ref},
		"log_path": c.name + ".log",
		"linux":    map[string]any{},
	}
	if len(c.command) > 0 {
		cfg["command"] = c.command
	}
	if c.resources != nil {
		cfg["linux"] = map[string]any{"resources": c.resources}
	}
	path := filepath.Join(filepath.Dir(p.config), c.name+".json")
	writeJSON(t, path, cfg)
	r := p.d.crictl(t, 60*time.Second, "create", "--no-pull", p.id, path, p.config)
	if r.err != nil {
		return "", r
	}
	return strings.TrimSpace(r.stdout), r
}

// start creates and starts a container, failing the test if either fails.
func (p *criPod) start(t *testing.T, c containerConfig) string {
	t.Helper()
	id, r := p.create(t, c)
	if id == "" {
		t.Fatalf("crictl create %s: %s", c.name, r)
	}
	p.d.mustCrictl(t, "start", id)
	return id
}

// remove stops and removes the pod with everything in it.
func (p *criPod) remove(t *testing.T) {
	t.Helper()
	p.d.mustCrictl(t, "stopp", p.id)
	p.d.mustCrictl(t, "rmp", p.id)
}

// removeAllPods removes every pod CRI knows, as a cleaning user would.
func (d *daemon) removeAllPods(t testing.TB) {
	if _, err := os.Stat(crictlBin()); err != nil {
		return
	}
	r := d.crictl(nil, 30*time.Second, "pods", "-q")
	for _, id := range strings.Fields(r.stdout) {
		if t != nil {
			t.Logf("removing pod %s left by the test", id)
		}
		d.crictl(nil, 60*time.Second, "stopp", id)
		d.crictl(nil, 60*time.Second, "rmp", "-f", id)
	}
}

// criBundleDir is where the daemon keeps the bundle of a CRI container or
// pod sandbox.
func (d *daemon) criBundleDir(id string) string {
	return filepath.Join(d.dir, "state", "io.containerd.runtime.v2.task", criNamespace, id)
}

// inspect returns `crictl inspect` of a container, decoded.
func (d *daemon) inspect(t *testing.T, id string) criStatus {
	t.Helper()
	r := d.mustCrictl(t, "inspect", "-o", "json", id)
	var out struct {
		Status struct {
			State    string `json:"state"`
			ExitCode int    `json:"exitCode"`
			Reason   string `json:"reason"`
		} `json:"status"`
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("crictl inspect %s: %v\n%s", id, err, r.stdout)
	}
	return criStatus{state: out.Status.State, exitCode: out.Status.ExitCode, pid: out.Info.Pid}
}

type criStatus struct {
	state    string
	exitCode int
	pid      int
}

// waitState polls crictl inspect until the container is in state want.
func (d *daemon) waitState(t *testing.T, id, want string, timeout time.Duration) criStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := d.inspect(t, id)
		if st.state == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s is %s after %v, want %s", id, st.state, timeout, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// containerStats is what `crictl stats` reports for one container.
type containerStats struct {
	cpuNanos   uint64
	workingSet uint64
}

func (d *daemon) stats(t *testing.T, id string) containerStats {
	t.Helper()
	r := d.mustCrictl(t, "stats", "-o", "json", "--id", id)
	// CRI's UInt64Value prints its value as a JSON string.
	type value struct {
		Value json.Number `json:"value"`
	}
	var out struct {
		Stats []struct {
			CPU struct {
				UsageCoreNanoSeconds value `json:"usageCoreNanoSeconds"`
			} `json:"cpu"`
			Memory struct {
				WorkingSetBytes value `json:"workingSetBytes"`
			} `json:"memory"`
		} `json:"stats"`
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil || len(out.Stats) != 1 {
		t.Fatalf("crictl stats %s: %v, %d entries\n%s", id, err, len(out.Stats), r.stdout)
	}
	cpu, _ := out.Stats[0].CPU.UsageCoreNanoSeconds.Value.Int64()
	mem, _ := out.Stats[0].Memory.WorkingSetBytes.Value.Int64()
	return containerStats{cpuNanos: uint64(cpu), workingSet: uint64(mem)}
}

// logs returns `crictl logs` of a container.
func (d *daemon) logs(t *testing.T, id string) string {
	t.Helper()
	r := d.mustCrictl(t, "logs", id)
	return r.stdout + r.stderr
}

func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(data))
}
