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
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/runphi/runphi/pkg/jailhouse/sim"
	"github.com/runphi/runphi/pkg/partition"
)

// The operator CLI against live daemons: every command's --json output is
// decoded and its fields checked against what ctr and the simulator say;
// doctor is run on a healthy daemon, on a misconfigured one and on what
// `make demo` leaves behind; nerdctl runs a partition.

// cliResult is one runphi run.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runphi runs bin/runphi with args, with RUNPHI_CONFIG removed from its
// environment (each test says which configuration it means) and the extra
// environment variables given.
func runphi(t testing.TB, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir(), "runphi"), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RUNPHI_CONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errOut.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("runphi %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("runphi %s → exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// runphiJSON runs a --json command that must succeed and decodes its output.
func runphiJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	r := runphi(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("runphi %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("runphi %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
}

func (d *daemon) runphiConfig() string { return filepath.Join(d.dir, "runphi.toml") }

// The --json shapes, as a script reads them.
type (
	psJSON struct {
		Config     string `json:"config"`
		Backend    string `json:"backend"`
		Ledger     string `json:"ledger"`
		Partitions []struct {
			Namespace   string `json:"namespace"`
			ContainerID string `json:"container_id"`
			Pod         *struct {
				Name          string `json:"name"`
				Namespace     string `json:"namespace"`
				ContainerName string `json:"container_name"`
			} `json:"pod"`
			Cell   string `json:"cell"`
			CellID int    `json:"cell_id"`
			State  string `json:"state"`
			CPUs   []int  `json:"cpus"`
			RAM    []struct {
				Start string `json:"start"`
				End   string `json:"end"`
			} `json:"ram"`
			RAMBytes      uint64    `json:"ram_bytes"`
			Board         string    `json:"board"`
			Console       string    `json:"console"`
			Created       time.Time `json:"created"`
			UptimeSeconds int64     `json:"uptime_seconds"`
			ShimPID       int       `json:"shim_pid"`
			ShimAlive     bool      `json:"shim_alive"`
			Bundle        string    `json:"bundle"`
			Problems      []string  `json:"problems"`
		} `json:"partitions"`
		Warnings []string `json:"warnings"`
	}
	cellsJSON struct {
		Backend string `json:"backend"`
		Enabled bool   `json:"enabled"`
		Cells   []struct {
			ID         int    `json:"id"`
			Name       string `json:"name"`
			State      string `json:"state"`
			CPUs       []int  `json:"cpus"`
			FailedCPUs []int  `json:"failed_cpus"`
			Root       bool   `json:"root"`
			Owner      string `json:"owner"`
		} `json:"cells"`
	}
	statsJSON struct {
		Cell   string            `json:"cell"`
		ID     int               `json:"id"`
		State  string            `json:"state"`
		Total  map[string]uint64 `json:"total"`
		PerCPU []struct {
			CPU      int               `json:"cpu"`
			Counters map[string]uint64 `json:"counters"`
		} `json:"per_cpu"`
	}
	doctorJSON struct {
		OK       bool   `json:"ok"`
		Failures int    `json:"failures"`
		Warnings int    `json:"warnings"`
		Config   string `json:"config"`
		Checks   []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
			Detail string `json:"detail"`
			Fix    string `json:"fix"`
		} `json:"checks"`
	}
)

// check returns the findings of one doctor check, joined.
func (r doctorJSON) check(name string) (status, detail, fix string) {
	var st, de, fx []string
	for _, c := range r.Checks {
		if c.Name == name {
			st, de, fx = append(st, c.Status), append(de, c.Detail), append(fx, c.Fix)
		}
	}
	return strings.Join(st, ","), strings.Join(de, " | "), strings.Join(fx, " | ")
}

func TestCLICommandsJSON(t *testing.T) {
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, foreverImage)
		const id = "cli-1"
		d.mustCtr(t, d.runArgs("-d", ref, id)...)
		task := d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
		cfg := d.runphiConfig()

		var ps psJSON
		runphiJSON(t, &ps, "ps", "--json", "--config", cfg)
		if ps.Backend != "sim" || ps.Config != cfg || ps.Ledger != d.ledgerPath() || len(ps.Warnings) != 0 {
			t.Errorf("ps: backend %q config %q ledger %q warnings %q", ps.Backend, ps.Config, ps.Ledger, ps.Warnings)
		}
		if len(ps.Partitions) != 1 {
			t.Fatalf("ps lists %d partitions, want 1", len(ps.Partitions))
		}
		p := ps.Partitions[0]
		entry := d.ledger(t)[0]
		checks := []struct {
			what string
			ok   bool
		}{
			{"container id and namespace", p.ContainerID == id && p.Namespace == namespace},
			{"cell named after the container, with the simulator's id", p.Cell == id && p.CellID >= 1},
			{"cell runs", p.State == "running"},
			{"CPUs are the ledger's", slices.Equal(p.CPUs, entry.CPUs) && len(p.CPUs) > 0},
			{"RAM range is the ledger's", len(p.RAM) == 1 && p.RAM[0].Start == fmt.Sprintf("%#x", entry.RAM[0].Start) && p.RAMBytes == entry.RAM[0].Size()},
			{"board", p.Board == "qemu-arm64"},
			{"console kind is the default", p.Console == "ivshmem"},
			{"uptime counts from the allocation", !p.Created.IsZero() && p.UptimeSeconds >= 0 && p.UptimeSeconds < 120},
			{"shim pid is the task pid ctr shows", p.ShimPID == task.pid && p.ShimAlive},
			{"bundle is containerd's", p.Bundle == d.bundleDir(id)},
			{"no pod for ctr containers", p.Pod == nil},
			{"no problems", len(p.Problems) == 0},
		}
		for _, c := range checks {
			if !c.ok {
				t.Errorf("ps: %s: %+v", c.what, p)
			}
		}

		var cells cellsJSON
		runphiJSON(t, &cells, "cells", "--json", "--config", cfg)
		if !cells.Enabled || len(cells.Cells) != 2 || !cells.Cells[0].Root || cells.Cells[0].ID != 0 {
			t.Fatalf("cells: %+v, want the root cell and one partition", cells)
		}
		c := cells.Cells[1]
		if c.Name != id || c.ID != p.CellID || c.State != "running" || !slices.Equal(c.CPUs, p.CPUs) ||
			c.Owner != namespace+"/"+id || c.Root || len(c.FailedCPUs) != 0 {
			t.Errorf("cells: partition row %+v", c)
		}
		if slices.ContainsFunc(cells.Cells[0].CPUs, func(cpu int) bool { return slices.Contains(p.CPUs, cpu) }) {
			t.Errorf("cells: root cell still lists the partition's CPUs %v: %v", p.CPUs, cells.Cells[0].CPUs)
		}

		var st statsJSON
		runphiJSON(t, &st, "stats", "--json", "--config", cfg, id)
		var statCPUs []int
		for _, pc := range st.PerCPU {
			statCPUs = append(statCPUs, pc.CPU)
			if _, ok := pc.Counters["vmexits_total"]; !ok {
				t.Errorf("stats: CPU %d has no vmexits_total: %v", pc.CPU, pc.Counters)
			}
		}
		if st.Cell != id || st.ID != p.CellID || st.State != "running" || !slices.Equal(statCPUs, p.CPUs) {
			t.Errorf("stats: %+v, want cell %s with CPUs %v", st, id, p.CPUs)
		}
		if _, ok := st.Total["vmexits_total"]; !ok {
			t.Errorf("stats: no vmexits_total in %v", st.Total)
		}
		if r := runphi(t, nil, "stats", "--config", cfg, "no-such-cell"); r.code != 3 {
			t.Errorf("stats of an unknown cell: exit %d, want 3", r.code)
		}

		// doctor reads the configuration the daemon gives its shims.
		var doc doctorJSON
		runphiJSON(t, &doc, "doctor", "--json", "--address", d.sock)
		if !doc.OK || doc.Failures != 0 || doc.Config != cfg {
			t.Errorf("doctor on the healthy daemon: ok %v, %d failures, config %q: %+v", doc.OK, doc.Failures, doc.Config, doc.Checks)
		}
		version := strings.TrimPrefix(d.name, "containerd-")
		for _, want := range []struct{ check, status, detail string }{
			{"config", "ok", "RUNPHI_CONFIG of containerd pid " + fmt.Sprint(d.cmd.Process.Pid)},
			{"backend", "ok", "simulator"},
			{"hypervisor", "ok", `root cell "qemu-arm64" with CPUs 0-15`},
			{"state", "ok", "1 partition(s)"},
			{"containerd", "ok", version},
			{"shim", "ok", filepath.Join(binDir(), "containerd-shim-runphi-v2")},
			{"cri", "ok", `CRI runtime "runphi" reads ConfigPath ` + cfg},
		} {
			st, detail, _ := doc.check(want.check)
			if st != want.status || !strings.Contains(detail, want.detail) {
				t.Errorf("doctor check %s: %s %q, want %s containing %q", want.check, st, detail, want.status, want.detail)
			}
		}

		var v struct{ Version, Go, Platform string }
		runphiJSON(t, &v, "version", "--json")
		if v.Version == "" || !strings.HasPrefix(v.Go, "go") || v.Platform == "" {
			t.Errorf("version --json: %+v", v)
		}

		d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
		d.waitTaskStatus(t, id, "STOPPED", 20*time.Second)
		d.mustCtr(t, "task", "rm", id)
		d.mustCtr(t, "container", "rm", id)
		runphiJSON(t, &ps, "ps", "--json", "--config", cfg)
		if len(ps.Partitions) != 0 {
			t.Errorf("ps after ctr task rm: %+v, want none", ps.Partitions)
		}
	})
}

// TestDoctorOnMisconfiguredHost starts a containerd that cannot run
// partitions: the shim is not on its PATH and its runphi configuration
// selects no backend. doctor must name each problem with its fix and exit
// 1, and ctr must really fail the way doctor says.
func TestDoctorOnMisconfiguredHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starts containerd: needs root")
	}
	specs := daemonSpecs()
	if len(specs) == 0 {
		t.Skip("no containerd available")
	}
	d := startBareDaemon(t, specs[0])
	// The configuration the daemon's shims would read: no backend on a
	// host without /dev/jailhouse (the simulator not selected).
	writeFile(t, d.runphiConfig(), fmt.Sprintf("state_dir = %q\nboard = \"qemu-arm64\"\n", d.stateDir))

	// A simulator enabled with qemu-arm64, and a board profile that
	// describes another root cell.
	drv, err := sim.Open(d.simDir, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := partition.LoadBoard("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := b.SystemConfig().MarshalBinary()
	if err := drv.Enable(blob); err != nil {
		t.Fatal(err)
	}
	builtin, err := os.ReadFile("../../pkg/partition/boards/qemu-arm64.toml")
	if err != nil {
		t.Fatal(err)
	}
	otherBoard := filepath.Join(d.dir, "other-board.toml")
	writeFile(t, otherBoard, strings.Replace(string(builtin), "[system.root_cell]\nname = \"qemu-arm64\"", "[system.root_cell]\nname = \"other-root\"", 1))
	wrongBoard := filepath.Join(d.dir, "wrong-board.toml")
	writeFile(t, wrongBoard, fmt.Sprintf("backend = \"sim\"\nstate_dir = %q\nsim_dir = %q\nboard = %q\n", d.stateDir, d.simDir, otherBoard))
	unknownBoard := filepath.Join(d.dir, "unknown-board.toml")
	writeFile(t, unknownBoard, fmt.Sprintf("backend = \"sim\"\nstate_dir = %q\nsim_dir = %q\nboard = \"no-such-board\"\n", d.stateDir, d.simDir))

	tests := []struct {
		name  string
		args  []string
		fails map[string][2]string // check → {detail, fix} substrings
	}{
		{"simulator disabled and shim missing", nil, map[string][2]string{
			"backend": {"does not exist and " + d.runphiConfig() + " sets no backend", `set backend = "sim" in ` + d.runphiConfig()},
			"shim":    {"cannot find containerd-shim-runphi-v2", "make install PREFIX=/usr/local"},
		}},
		{"board profile does not match the hypervisor", []string{"--config", wrongBoard}, map[string][2]string{
			"hypervisor": {`root cell "qemu-arm64", the board's is "other-root"`, "set board in " + wrongBoard},
			"shim":       {"cannot find", "make install"},
		}},
		{"unknown board profile", []string{"--config", unknownBoard}, map[string][2]string{
			"board": {`board "no-such-board"`, "to a built-in profile ("},
			"shim":  {"cannot find", "make install"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, asJSON := range []bool{true, false} {
				args := append([]string{"doctor", "--address", d.sock}, tc.args...)
				if asJSON {
					args = append(args, "--json")
				}
				r := runphi(t, nil, args...)
				if r.code != 1 {
					t.Fatalf("doctor exit %d, want 1", r.code)
				}
				if !asJSON {
					for check, want := range tc.fails {
						line := fmt.Sprintf("FAIL  %-16s", check)
						if !strings.Contains(r.stdout, line) || !strings.Contains(r.stdout, "fix: ") || !strings.Contains(r.stdout, want[1]) {
							t.Errorf("text output lacks %q with fix %q", line, want[1])
						}
					}
					continue
				}
				var doc doctorJSON
				if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
					t.Fatal(err)
				}
				if doc.OK || doc.Failures != len(tc.fails) {
					t.Errorf("ok %v with %d failures, want %d: %+v", doc.OK, doc.Failures, len(tc.fails), doc.Checks)
				}
				for check, want := range tc.fails {
					st, detail, fix := doc.check(check)
					if !strings.Contains(st, "fail") || !strings.Contains(detail, want[0]) || !strings.Contains(fix, want[1]) {
						t.Errorf("check %s: %s %q fix %q; want fail, detail ∋ %q, fix ∋ %q", check, st, detail, fix, want[0], want[1])
					}
				}
			}
		})
	}

	// What doctor predicts is what a user meets.
	ref := d.ensureImage(t, demoImage)
	r := d.ctr(t, 30*time.Second, d.runArgs("--rm", ref, "doomed")...)
	if r.code == 0 || !strings.Contains(r.stderr, `binary not installed "containerd-shim-runphi-v2"`) {
		t.Errorf("ctr run on the misconfigured daemon: %s; want the binary-not-installed error doctor names", r)
	}
	d.ctr(nil, 10*time.Second, "container", "rm", "doomed")
}

// startBareDaemon starts a private containerd of spec s whose PATH holds
// only its own directory and the system's: not the runphi shim. It is
// stopped when the test ends.
func startBareDaemon(t *testing.T, s daemonSpec) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "rphdoc-")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{
		daemonSpec: s, dir: dir, sock: filepath.Join(dir, "c.sock"), logPath: filepath.Join(dir, "containerd.log"),
		stateDir: filepath.Join(dir, "runphi", "state"), simDir: filepath.Join(dir, "runphi", "sim"), exited: make(chan struct{}),
	}
	for _, p := range []string{"root", "state", "fifo", "runphi/state", "runphi/sim"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "config.toml"), d.config())
	logf, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(filepath.Join(s.binDir, "containerd"), "--config", filepath.Join(dir, "config.toml"))
	d.cmd.Env = []string{"PATH=" + s.binDir + ":/usr/sbin:/usr/bin:/sbin:/bin", "RUNPHI_CONFIG=" + d.runphiConfig()}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.removeAllTasks(nil)
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
		for _, m := range mountsUnder(dir) {
			syscall.Unmount(m, syscall.MNT_DETACH)
		}
		if t.Failed() {
			t.Logf("containerd log:\n%s", tail(d.logPath, 30))
		}
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(d.sock); err == nil {
			if r := d.ctr(nil, 5*time.Second, "version"); r.err == nil {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start:\n%s", s.name, tail(d.logPath, 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDoctorPassesAfterMakeDemo runs scripts/demo.sh (what `make demo`
// runs) and then the doctor command the demo prints for its setup.
func TestDoctorPassesAfterMakeDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the demo starts containerd: needs root")
	}
	if _, err := os.Stat("/usr/bin/containerd"); err != nil {
		t.Skip("the demo uses Debian's containerd: run make deps")
	}
	dir, err := os.MkdirTemp("/tmp", "rphdemo-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	demo := exec.CommandContext(ctx, "../../scripts/demo.sh")
	demo.Env = append(os.Environ(), "RUNPHI_DEMO_DIR="+dir, "RUNPHI_BIN_DIR="+binDir(), "CONTAINERD_BIN_DIR=/usr/bin")
	out, err := demo.CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s", err, out)
	}
	// The demo's last line tells the user how to check the setup.
	var doctorLine string
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "runphi doctor"); i >= 0 {
			doctorLine = l
		}
	}
	wantArgs := []string{"--config", filepath.Join(dir, "runphi.toml"), "--containerd-config", filepath.Join(dir, "config.toml")}
	if !strings.Contains(doctorLine, strings.Join(wantArgs, " ")) {
		t.Fatalf("the demo does not print the doctor command for its setup:\n%s", out)
	}
	var doc doctorJSON
	r := runphi(t, []string{"PATH=" + binDir() + ":" + os.Getenv("PATH")}, append([]string{"doctor", "--json"}, wantArgs...)...)
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, r.stdout)
	}
	if r.code != 0 || !doc.OK {
		t.Fatalf("doctor on the demo's setup: exit %d, %+v", r.code, doc.Checks)
	}
	for _, check := range []string{"config", "board", "backend", "simulator", "hypervisor", "state", "shim", "cri"} {
		if st, detail, _ := doc.check(check); st != "ok" {
			t.Errorf("check %s: %s %q, want ok", check, st, detail)
		}
	}
}

// TestNerdctlRunsPartition runs the demo image with
// `nerdctl run --runtime io.containerd.runphi.v2 --network none`.
func TestNerdctlRunsPartition(t *testing.T) {
	nerdctl := filepath.Join(toolsBin(), "nerdctl")
	if _, err := os.Stat(nerdctl); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v: make deps builds it", err)
		}
		t.Skipf("%v: make deps builds it", err)
	}
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		tarball := imageTar(t, demoImage)
		base := []string{"--address", d.sock, "--namespace", namespace, "--data-root", filepath.Join(d.dir, "nerdctl")}
		nerd := func(timeout time.Duration, args ...string) ctrResult {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, nerdctl, append(base, args...)...)
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			r := ctrResult{stdout: out.String(), stderr: filterWarnings(errOut.String()), err: err}
			if ee, ok := err.(*exec.ExitError); ok {
				r.code = ee.ExitCode()
			} else if err != nil {
				r.code = -1
			}
			t.Logf("nerdctl %s → %s", strings.Join(args, " "), r)
			return r
		}
		if r := nerd(60*time.Second, "load", "-i", tarball); r.err != nil {
			t.Fatalf("nerdctl load: %s", r)
		}
		r := nerd(60*time.Second, "run", "--rm", "--runtime", runtimeName, "--network", "none", demoImage.ref)
		if r.err != nil {
			t.Fatalf("nerdctl run: %s", r)
		}
		if got, want := consoleLines(r.stdout), demoLines(t); !slices.Equal(got, want) {
			t.Errorf("nerdctl run printed %q, want the demo's lines %q", got, want)
		}
	})
}

// TestPsShowsCRIPod runs a partition in a CRI pod: runphi ps names the pod
// from the CRI annotations, leaves the pod's pause container (runc) out, and
// cells names the partition's owner in containerd's k8s.io namespace.
func TestPsShowsCRIPod(t *testing.T) {
	needCRI(t)
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		pod := d.runPod(t, "ps-pod")
		cid := pod.start(t, forever)
		d.waitState(t, cid, "CONTAINER_RUNNING", 20*time.Second)

		var ps psJSON
		runphiJSON(t, &ps, "ps", "--json", "--config", d.runphiConfig())
		if len(ps.Partitions) != 1 {
			t.Fatalf("ps lists %d partitions, want the pod's one partition (not its pause container): %+v", len(ps.Partitions), ps.Partitions)
		}
		p := ps.Partitions[0]
		if p.ContainerID != cid || p.Namespace != "k8s.io" || p.Pod == nil || p.Pod.Name != "ps-pod" ||
			p.Pod.Namespace != "runphi-e2e" || p.Pod.ContainerName != forever.name ||
			p.State != "running" || !p.ShimAlive || p.Console != "ivshmem" || len(p.Problems) != 0 {
			t.Errorf("ps row for the CRI partition: %+v (pod %+v)", p, p.Pod)
		}
		var cells cellsJSON
		runphiJSON(t, &cells, "cells", "--json", "--config", d.runphiConfig())
		if n := len(cells.Cells); n != 2 || cells.Cells[1].Owner != "k8s.io/"+cid {
			t.Errorf("cells: %+v, want the root cell and the partition owned by k8s.io/%s", cells.Cells, cid)
		}
		pod.remove(t)
	})
}
