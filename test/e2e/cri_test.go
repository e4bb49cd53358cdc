//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The acceptance list of issue 5 against CRI: pods run with `crictl runp
// --runtime runphi` (the handler the daemons' configuration names, with
// ConfigPath pointing at the suite's runphi.toml), host network, a local
// pause image.

// forever is the partitioned container of the CRI tests: its inmate prints
// a line and runs until it is stopped, approving a graceful shutdown.
var forever = containerConfig{name: "part", image: foreverImage}

// sidecar is an ordinary busybox container beside the partition.
var sidecar = containerConfig{name: "sidecar", image: busyboxImage,
	command: []string{"/bin/sh", "-c", "echo sidecar up; exec sleep 3600"}}

// Acceptance 1: a pod with a partitioned container: its console reaches
// crictl logs, crictl inspect shows it RUNNING with a pid, crictl stats
// has CPU and memory for it, crictl stop ends it with 143 within the
// timeout, and removing the pod leaves no shim, cell, ledger entry or
// mount.
func TestCRIPartitionInPod(t *testing.T) {
	needCRI(t)
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		pod := d.runPod(t, "p1")
		cid := pod.start(t, forever)

		st := d.waitState(t, cid, "CONTAINER_RUNNING", 20*time.Second)
		if st.pid <= 0 {
			t.Errorf("crictl inspect: pid %d, want a non-zero pid for the running partition", st.pid)
		}
		waitFor(t, "the inmate's console line in crictl logs", 10*time.Second, func() bool {
			return strings.Contains(d.logs(t, cid), "forever inmate up")
		})
		if cells := d.partitionCells(t); len(cells) != 1 {
			t.Errorf("simulator has %d partition cells, want 1: %v", len(cells), cells)
		}

		first := d.stats(t, cid)
		time.Sleep(300 * time.Millisecond)
		second := d.stats(t, cid)
		if second.cpuNanos <= first.cpuNanos {
			t.Errorf("crictl stats: CPU usage %d then %d ns, want it to grow while the partition runs", first.cpuNanos, second.cpuNanos)
		}
		if second.workingSet != 64<<20 {
			t.Errorf("crictl stats: memory working set %d, want the partition's 64 MiB of RAM", second.workingSet)
		}

		const timeout = 20
		begin := time.Now()
		d.mustCrictl(t, "stop", "--timeout", "20", cid)
		if took := time.Since(begin); took >= timeout*time.Second {
			t.Errorf("crictl stop took %v, more than its %d s timeout", took, timeout)
		}
		if st := d.inspect(t, cid); st.state != "CONTAINER_EXITED" || st.exitCode != 143 {
			t.Errorf("after crictl stop: %s with exit code %d, want CONTAINER_EXITED with 143", st.state, st.exitCode)
		}

		pod.remove(t)
		d.assertNothingLeft(t)
	})
}

// Acceptance 2: the same pod also runs a busybox sidecar on runc: crictl
// exec and crictl logs work on it, exec on the partition is refused with
// the reason, and the pause container, the partition and the sidecar are
// served by one shim process.
func TestCRISidecarSharesTheShim(t *testing.T) {
	needCRI(t)
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		pod := d.runPod(t, "p2")
		part := pod.start(t, forever)
		side := pod.start(t, sidecar)
		d.waitState(t, part, "CONTAINER_RUNNING", 20*time.Second)
		d.waitState(t, side, "CONTAINER_RUNNING", 20*time.Second)

		if pids := d.shimPIDs(); len(pids) != 1 {
			t.Errorf("%d runphi shim processes for a pod of pause, partition and sidecar, want 1: %v", len(pids), pids)
		}
		// How the containers reached the pod's shim: containerd 1.6 ran
		// `start` for each, which wrote the pod's address into its bundle;
		// 2.x sent them over the sandbox's connection (task API v3) without
		// `start`, recording the sandbox instead.
		pauseAddress, _ := os.ReadFile(filepath.Join(d.criBundleDir(pod.id), "address"))
		for _, c := range []string{part, side} {
			address, err := os.ReadFile(filepath.Join(d.criBundleDir(c), "address"))
			sandbox, _ := os.ReadFile(filepath.Join(d.criBundleDir(c), "sandbox"))
			switch {
			case d.major < 2 && (err != nil || string(address) != string(pauseAddress)):
				t.Errorf("container %s: address file %q (%v), want the pod's %q from `start`", c, address, err, pauseAddress)
			case d.major >= 2 && (err == nil || string(sandbox) != pod.id):
				t.Errorf("container %s: address file %q, sandbox file %q; want no `start` and the pod's sandbox id", c, address, sandbox)
			}
		}
		waitFor(t, "the sidecar's line in crictl logs", 10*time.Second, func() bool {
			return strings.Contains(d.logs(t, side), "sidecar up")
		})
		if r := d.mustCrictl(t, "exec", "-s", side, "sh", "-c", "echo exec-sync $((6*7))"); strings.TrimSpace(r.stdout) != "exec-sync 42" {
			t.Errorf("crictl exec -s in the sidecar printed %q, want exec-sync 42", r.stdout)
		}
		// Without -s crictl streams through CRI's streaming server.
		if r := d.mustCrictl(t, "exec", side, "cat", "/proc/1/cmdline"); !strings.Contains(r.stdout, "sleep") {
			t.Errorf("crictl exec in the sidecar printed %q, want the sidecar's pid 1 (sleep)", r.stdout)
		}
		if r := d.crictl(t, 30*time.Second, "exec", "-s", side, "sh", "-c", "exit 3"); r.code == 0 || !strings.Contains(r.stdout+r.stderr, "3") {
			t.Errorf("crictl exec of `exit 3` in the sidecar: %s; want it to report exit code 3", r)
		}
		r := d.crictl(t, 30*time.Second, "exec", "-s", part, "true")
		if r.code == 0 || !strings.Contains(r.stderr, "a partition has no host process") {
			t.Errorf("crictl exec in the partition: %s; want a refusal saying a partition has no host process", r)
		}
		if pids := d.shimPIDs(); len(pids) != 1 {
			t.Errorf("after the execs: %d shim processes, want 1: %v", len(pids), pids)
		}

		d.mustCrictl(t, "stop", "--timeout", "10", side)
		if st := d.inspect(t, side); st.state != "CONTAINER_EXITED" || st.exitCode != 137 && st.exitCode != 143 {
			t.Errorf("sidecar after crictl stop: %s with exit code %d, want exited by signal", st.state, st.exitCode)
		}
		d.mustCrictl(t, "rm", side)
		// The partition is untouched by its sidecar's removal.
		if st := d.inspect(t, part); st.state != "CONTAINER_RUNNING" {
			t.Errorf("partition is %s after the sidecar was removed, want CONTAINER_RUNNING", st.state)
		}
		pod.remove(t)
		d.assertNothingLeft(t)
	})
}

// Acceptance 3: a partitioned container that cannot be placed (more CPUs
// than the partitions have left) fails with a message naming the shortage,
// and the pod's other containers carry on. CRI's CreateContainer does not
// reach the runtime (it only records the container); the shim's Create runs
// in StartContainer, so that is the call that fails.
func TestCRIUnplaceablePartition(t *testing.T) {
	needCRI(t)
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		pod := d.runPod(t, "p3")
		side := pod.start(t, sidecar)
		// qemu-arm64 has 14 partition CPUs (2-15): 10 for the first
		// partition leave 4, and the second asks for 8.
		big := forever
		big.name = "big"
		big.resources = map[string]any{"cpu_period": 100000, "cpu_quota": 1000000}
		first := pod.start(t, big)
		d.waitState(t, first, "CONTAINER_RUNNING", 20*time.Second)

		tooBig := forever
		tooBig.name = "too-big"
		tooBig.resources = map[string]any{"cpu_period": 100000, "cpu_quota": 800000}
		id, r := pod.create(t, tooBig)
		if id == "" {
			t.Fatalf("crictl create %s: %s", tooBig.name, r)
		}
		r = d.crictl(t, 60*time.Second, "start", id)
		if r.code == 0 {
			t.Fatalf("crictl start of a partition asking for 8 of 4 free CPUs succeeded")
		}
		if msg := strings.ToLower(r.stderr); !strings.Contains(msg, "cpu") {
			t.Errorf("crictl start error does not name the CPU shortage: %q", r.stderr)
		}
		if st := d.inspect(t, id); st.state == "CONTAINER_RUNNING" {
			t.Errorf("the partition that could not be placed is %s", st.state)
		}

		if cells := d.partitionCells(t); len(cells) != 1 {
			t.Errorf("after the failed create the simulator has %d partition cells, want 1: %v", len(cells), cells)
		}
		if entries := d.ledger(t); len(entries) != 1 {
			t.Errorf("after the failed create the ledger has %d entries, want 1", len(entries))
		}
		for _, c := range []string{side, first} {
			if st := d.inspect(t, c); st.state != "CONTAINER_RUNNING" {
				t.Errorf("container %s is %s after its neighbour failed to be created, want CONTAINER_RUNNING", c, st.state)
			}
		}
		if r := d.mustCrictl(t, "exec", "-s", side, "echo", "still-here"); strings.TrimSpace(r.stdout) != "still-here" {
			t.Errorf("crictl exec in the sidecar after the failed create printed %q", r.stdout)
		}
		if pids := d.shimPIDs(); len(pids) != 1 {
			t.Errorf("%d shim processes after the failed create, want the pod's one: %v", len(pids), pids)
		}
		pod.remove(t)
		d.assertNothingLeft(t)
	})
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
