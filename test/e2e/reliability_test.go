//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
	"github.com/runphi/runphi/pkg/partition"
)

// The reliability acceptance of issue 7 (docs/reliability.md): shim
// crashes, churn, injected hypervisor faults and daemon restarts leave
// nothing behind. Faults are injected into the shim's simulator from this
// process through the simulator's state directory (sim.Open on sim_dir).
//
// The default run is short; RUNPHI_SOAK=1 runs the long versions (50 shim
// kills and 200 churn cycles per daemon).

// soak reports whether the long versions are asked for.
func soak() bool { return os.Getenv("RUNPHI_SOAK") != "" }

var (
	// activeForeverImage's inmate runs until stopped and answers shutdown
	// requests itself (comm_region "active"), so it can deny or ignore them.
	activeForeverImage = testImage{ref: "docker.io/runphi/e2e-active-forever:latest", files: map[string]string{
		"boot/config.json": `{"os_var":"zephyr","inmate":"/boot/boot.bin","comm_region":"active"}`,
		"boot/boot.bin":    foreverScript,
	}}
	// tickImage prints "tick N"-style lines forever, for logs that must
	// keep flowing.
	tickImage = scriptImage("tick", "", "print tick start", "loop forever", "print tick", "sleep 250ms", "end")
)

// simulator opens the daemon's simulated host, as an operator (or a
// fault) from outside the shim would.
func (d *daemon) simulator(t testing.TB) *sim.Driver {
	t.Helper()
	drv, err := sim.Open(d.simDir, sim.Options{})
	if err != nil {
		t.Fatalf("open the simulator at %s: %v", d.simDir, err)
	}
	return drv
}

// cellOf returns the cell of a container from the ledger ("<ns>/<id>").
func (d *daemon) cellOf(t testing.TB, ns, id string) string {
	t.Helper()
	e, found, err := partition.OpenLedger(d.ledgerPath()).Lookup(ns + "/" + id)
	if err != nil || !found {
		t.Fatalf("ledger entry of %s/%s: found %v, %v", ns, id, found, err)
	}
	return e.Cell
}

// serverPIDs are the long-lived shim processes serving task id (not a
// `start` or `delete` invocation that happens to be running).
func (d *daemon) serverPIDs(id string) []int {
	var out []int
	for _, pid := range d.shimPIDsFor(id) {
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if last := args[len(args)-1]; last != "start" && last != "delete" {
			out = append(out, pid)
		}
	}
	return out
}

// shimSockets lists the unix sockets under the daemon's dir other than
// containerd's own: the task sockets of shims.
func (d *daemon) shimSockets() []string {
	var out []string
	filepath.WalkDir(d.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.Type()&fs.ModeSocket != 0 && p != d.sock && p != d.sock+".ttrpc" {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// leaksWithSockets is d.leaks plus leftover shim sockets.
func (d *daemon) leaksWithSockets() []string {
	problems := d.leaks()
	if s := d.shimSockets(); len(s) > 0 {
		problems = append(problems, fmt.Sprintf("shim sockets %v", s))
	}
	return problems
}

// waitNoLeaks waits up to timeout for leaksWithSockets to be empty and
// returns what is still there.
func (d *daemon) waitNoLeaks(timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		p := d.leaksWithSockets()
		if len(p) == 0 || time.Now().After(deadline) {
			return p
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// restart stops the daemon with SIGTERM (its shims live on in their own
// sessions) and starts it again on the same directories. between runs
// while it is down.
func (d *daemon) restart(t *testing.T, between func()) {
	t.Helper()
	daemonsMu.Lock()
	defer daemonsMu.Unlock()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not stop on SIGTERM", d.name)
	}
	if between != nil {
		between()
	}
	logf, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(d.cmd.Path, d.cmd.Args[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr = d.cmd.Env, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	d.cmd, d.exited = cmd, exited
	_, criErr := os.Stat(crictlBin())
	for {
		// Ready once ctr answers, and CRI too (it initialises after
		// the API is served).
		if r := d.ctr(nil, 5*time.Second, "version"); r.err == nil &&
			(criErr != nil || d.crictl(nil, 5*time.Second, "ps").err == nil) {
			break
		}
		select {
		case <-exited:
			t.Fatalf("%s exited at restart\n%s", d.name, tail(d.logPath, 30))
		default:
		}
		if time.Since(began) > 30*time.Second {
			t.Fatalf("%s did not answer within 30 s of its restart\n%s", d.name, tail(d.logPath, 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("restarted %s (pid %d) in %v", d.name, cmd.Process.Pid, time.Since(began).Round(time.Millisecond))
}

// shimResources asks shim pid for its goroutine and fd counts (SIGUSR1
// makes it log them, then its stacks) and reads them from the daemon's
// log, which carries the shim's.
func (d *daemon) shimResources(t *testing.T, pid int) (goroutines, fds int) {
	t.Helper()
	off := fileSize(d.logPath)
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatalf("signal shim %d: %v", pid, err)
	}
	re := regexp.MustCompile(`msg="shim resources" goroutines=(\d+) .*open_fds=(\d+) pid=` + strconv.Itoa(pid) + `\b`)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(readFrom(t, d.logPath, off)); m != nil {
			goroutines, _ = strconv.Atoi(m[1])
			fds, _ = strconv.Atoi(m[2])
			return goroutines, fds
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("shim %d logged no resource counts after SIGUSR1", pid)
	return 0, 0
}

// runCleanly proves the resources are usable again: a partition starts,
// runs and is removed with its status.
func (d *daemon) runCleanly(t *testing.T, id string) {
	t.Helper()
	ref := d.ensureImage(t, foreverImage)
	d.mustCtr(t, d.runArgs("-d", ref, id)...)
	d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
	d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
	d.waitTaskStatus(t, id, "STOPPED", 20*time.Second)
	if r := d.ctr(t, 30*time.Second, "task", "rm", id); deleteStatus(r) != 137 {
		t.Errorf("ctr task rm %s: %s; want 137", id, r)
	}
	d.mustCtr(t, "container", "rm", id)
}

// removeTask removes a task and its container whatever state they are in.
func (d *daemon) removeTask(id string) {
	d.ctr(nil, 10*time.Second, "task", "kill", "-s", "SIGKILL", id)
	d.ctr(nil, 30*time.Second, "task", "rm", "-f", id)
	d.ctr(nil, 10*time.Second, "container", "rm", id)
}

// timed runs fn and fails the test if it took longer than limit.
func timed(t *testing.T, what string, limit time.Duration, fn func()) time.Duration {
	t.Helper()
	began := time.Now()
	fn()
	took := time.Since(began)
	if took > limit {
		t.Errorf("%s took %v, want at most %v", what, took.Round(time.Millisecond), limit)
	}
	return took
}

// killPoint is one moment of a partition's life at which the shim is
// SIGKILLed. arm prepares the moment (an injected delay holds the shim
// inside a hypervisor call) and drive brings the task there; both run
// with the task id.
type killPoint struct {
	name  string
	delay string // request to wedge for a while, so the kill lands inside it
	// after brings the task to the point, in the background where it blocks.
	after func(t *testing.T, d *daemon, id string, bg *background)
}

// background runs ctr commands that block while the shim is killed.
type background struct {
	wg sync.WaitGroup
}

func (b *background) ctr(d *daemon, args ...string) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		d.ctr(nil, 60*time.Second, args...)
	}()
}

// Acceptance 1: SIGKILL the shim at points across create, start, run, kill
// and delete; containerd's `shim delete` must leave 0 cells, 0 ledger
// entries, 0 mounts, 0 shim processes and 0 sockets.
func TestShimKilledAnywhereLeavesNothing(t *testing.T) {
	runUntil := func(status string) func(t *testing.T, d *daemon, id string, bg *background) {
		return func(t *testing.T, d *daemon, id string, bg *background) {
			d.waitTaskStatus(t, id, status, 20*time.Second)
		}
	}
	points := []killPoint{
		{name: "create, early", after: func(*testing.T, *daemon, string, *background) {}},
		{name: "create, inside CELL_CREATE", delay: "create"},
		{name: "create, inside CELL_LOAD", delay: "load"},
		{name: "start, inside CELL_START", delay: "start"},
		{name: "run, just started", after: runUntil("RUNNING")},
		{name: "run, a while in", after: func(t *testing.T, d *daemon, id string, bg *background) {
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			time.Sleep(time.Duration(rand.IntN(800)) * time.Millisecond)
		}},
		{name: "kill, inside the shutdown request", after: func(t *testing.T, d *daemon, id string, bg *background) {
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			d.simulator(t).InjectDelay("load", 3*time.Second)
			bg.ctr(d, "task", "kill", "-s", "SIGTERM", id)
		}},
		{name: "kill, inside SIGKILL's destroy", after: func(t *testing.T, d *daemon, id string, bg *background) {
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			d.simulator(t).InjectDelay("destroy", 3*time.Second)
			bg.ctr(d, "task", "kill", "-s", "SIGKILL", id)
		}},
		{name: "stopped, before delete", after: func(t *testing.T, d *daemon, id string, bg *background) {
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			d.mustCtr(t, "task", "kill", "-s", "SIGTERM", id)
			d.waitTaskStatus(t, id, "STOPPED", 20*time.Second)
		}},
		{name: "delete, inside the destroy", after: func(t *testing.T, d *daemon, id string, bg *background) {
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			// The inmate stops by itself: the cell is left for Delete.
			if err := d.simulator(t).SetCellState(d.cellOf(t, namespace, id), jailhouse.StateShutDown); err != nil {
				t.Fatal(err)
			}
			d.waitTaskStatus(t, id, "STOPPED", 20*time.Second)
			d.simulator(t).InjectDelay("destroy", 3*time.Second)
			bg.ctr(d, "task", "rm", id)
		}},
	}
	runs := len(points)
	if soak() {
		runs = 50
	}
	seed := time.Now().UnixNano()
	t.Logf("%d runs per daemon, jitter seed %d", runs, seed)
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, foreverImage)
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		began := time.Now()
		leaked := 0
		for i := range runs {
			p := points[i%len(points)]
			id := fmt.Sprintf("sk-%d", i)
			ok := t.Run(fmt.Sprintf("%02d %s", i, p.name), func(t *testing.T) {
				drv := d.simulator(t)
				if p.delay != "" {
					if err := drv.InjectDelay(p.delay, 3*time.Second); err != nil {
						t.Fatal(err)
					}
				}
				var bg background
				bg.ctr(d, d.runArgs("-d", ref, id)...)
				// Wait for the shim server, then for the point.
				deadline := time.Now().Add(20 * time.Second)
				for len(d.serverPIDs(id)) == 0 {
					if time.Now().After(deadline) {
						t.Fatalf("no shim for %s", id)
					}
					time.Sleep(5 * time.Millisecond)
				}
				if p.after != nil {
					p.after(t, d, id, &bg)
				}
				// A point with a wedged request is reached once the shim
				// took the delay: it is inside the request.
				waitFor(t, "the shim to enter the wedged request", 20*time.Second, func() bool {
					f, err := drv.PendingFaults()
					return err == nil && len(f.Delays) == 0
				})
				// Jitter, so the kill lands at a different instant each run.
				time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
				pids := d.serverPIDs(id)
				for _, pid := range pids {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				t.Logf("killed shim %v of %s", pids, id)
				bg.wg.Wait()
				drv.ClearFaults()
				d.removeTask(id)
				if problems := d.waitNoLeaks(15 * time.Second); len(problems) > 0 {
					t.Errorf("after killing the shim of %s: %v", id, problems)
				}
				// containerd removes the bundle once `shim delete` answered.
				deadline = time.Now().Add(10 * time.Second)
				for {
					_, err := os.Stat(d.bundleDir(id))
					if os.IsNotExist(err) {
						break
					}
					if time.Now().After(deadline) {
						ents, _ := os.ReadDir(d.bundleDir(id))
						var names []string
						for _, e := range ents {
							names = append(names, e.Name())
						}
						t.Errorf("bundle of %s left after 10 s: %v %v", id, err, names)
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			})
			if !ok {
				leaked++
			}
		}
		t.Logf("%s: %d shim kills, %d with something left, %v", d.name, runs, leaked, time.Since(began).Round(time.Millisecond))
	})
}

// churnKind is one kind of churn cycle.
type churnKind struct {
	name   string
	image  testImage
	args   []string // command for runc containers
	signal string
	want   int
}

// Acceptance 2: create→start→kill→delete cycles, two at a time, mixing
// partitions and runc containers in one long-lived grouped shim: every
// task reports the right status, nothing leaks, and the shim's goroutines
// and fds return to their baseline.
func TestChurnLeavesNothing(t *testing.T) {
	kinds := []churnKind{
		{name: "partition TERM", image: foreverImage, signal: "SIGTERM", want: 143},
		{name: "runc KILL", image: busyboxImage, args: []string{"sleep", "600"}, signal: "SIGKILL", want: 137},
		{name: "partition KILL", image: foreverImage, signal: "SIGKILL", want: 137},
		{name: "runc TERM", image: busyboxImage, args: []string{"sh", "-c", `trap "exit 143" TERM; sleep 600 & wait`}, signal: "SIGTERM", want: 143},
	}
	cycles := 20
	if soak() {
		cycles = 200
	}
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		group := "--annotation=io.containerd.runc.v2.group=churn"
		for _, k := range kinds {
			d.ensureImage(t, k.image)
		}
		// The anchor keeps the group's shim alive through the churn.
		d.mustCtr(t, append(d.runArgs("-d", group, busyboxImage.ref, "churn-anchor"), "sleep", "100000")...)
		d.waitTaskStatus(t, "churn-anchor", "RUNNING", 20*time.Second)
		defer d.removeTask("churn-anchor")
		pids := d.serverPIDs("churn-anchor")
		if len(pids) != 1 {
			t.Fatalf("shims of the anchor: %v, want one", pids)
		}
		shim := pids[0]

		cycle := func(t *testing.T, id string, k churnKind) error {
			args := append(d.runArgs("-d", group, k.image.ref, id), k.args...)
			if r := d.ctr(nil, 60*time.Second, args...); r.err != nil {
				return fmt.Errorf("%s: run: %s", id, r)
			}
			deadline := time.Now().Add(20 * time.Second)
			for d.tasks(t)[id].status != "RUNNING" {
				if time.Now().After(deadline) {
					return fmt.Errorf("%s: not RUNNING after 20 s", id)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if r := d.ctr(nil, 30*time.Second, "task", "kill", "-s", k.signal, id); r.err != nil {
				return fmt.Errorf("%s: kill: %s", id, r)
			}
			for d.tasks(t)[id].status != "STOPPED" {
				if time.Now().After(deadline) {
					return fmt.Errorf("%s: not STOPPED 20 s after %s", id, k.signal)
				}
				time.Sleep(50 * time.Millisecond)
			}
			r := d.ctr(nil, 30*time.Second, "task", "rm", id)
			if got := deleteStatus(r); got != k.want {
				return fmt.Errorf("%s (%s): task rm: %s; want exit status %d", id, k.name, r, k.want)
			}
			if r := d.ctr(nil, 10*time.Second, "container", "rm", id); r.err != nil {
				return fmt.Errorf("%s: container rm: %s", id, r)
			}
			return nil
		}
		// One cycle of each kind first: the runc service and the
		// partition backend are opened once per shim, not leaked per cycle.
		for i, k := range kinds {
			if err := cycle(t, fmt.Sprintf("churn-warm-%d", i), k); err != nil {
				t.Fatal(err)
			}
		}
		baseG, baseFD := d.shimResources(t, shim)
		t.Logf("grouped shim %d baseline: %d goroutines, %d fds", shim, baseG, baseFD)

		began := time.Now()
		var mu sync.Mutex
		var failures []string
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Go(func() {
				for i := w; i < cycles; i += 2 {
					id := fmt.Sprintf("churn-%d", i)
					if err := cycle(t, id, kinds[i%len(kinds)]); err != nil {
						mu.Lock()
						failures = append(failures, err.Error())
						mu.Unlock()
						d.removeTask(id)
					}
				}
			})
		}
		wg.Wait()
		took := time.Since(began)
		for _, f := range failures {
			t.Error(f)
		}
		if problems := partitionLeaksNow(d); len(problems) > 0 {
			t.Errorf("after the churn: %v", problems)
		}
		anchorRootfs := filepath.Join(d.bundleDir("churn-anchor"), "rootfs")
		if ms := slices.DeleteFunc(mountsUnder(filepath.Join(d.dir, "state")), func(m string) bool { return m == anchorRootfs }); len(ms) > 0 {
			t.Errorf("mounts after the churn besides the anchor's: %v", ms)
		}
		if got := d.serverPIDs("churn-anchor"); !slices.Equal(got, []int{shim}) {
			t.Errorf("grouped shim %d after the churn: %v", shim, got)
		}
		// Goroutines wind down asynchronously (event forwarding, runc's
		// reapers): give them a moment.
		var g, fds int
		deadline := time.Now().Add(10 * time.Second)
		for {
			g, fds = d.shimResources(t, shim)
			if (g <= baseG && fds <= baseFD) || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if g > baseG || fds > baseFD {
			t.Errorf("grouped shim after %d cycles: %d goroutines, %d fds; baseline %d, %d", cycles, g, fds, baseG, baseFD)
		}
		t.Logf("%s: %d cycles (2 in parallel) in %v, %.0f ms/cycle; %d failures; shim %d goroutines/%d fds (baseline %d/%d)",
			d.name, cycles, took.Round(time.Millisecond), float64(took.Milliseconds())/float64(cycles)*2, len(failures), g, fds, baseG, baseFD)
	})
}

// partitionLeaksNow is partitionLeaks without waiting.
func partitionLeaksNow(d *daemon) []string { return d.partitionLeaks() }

// Acceptance 3: each injected fault gives the documented error or exit
// status within its deadline, and the next container on the same
// resources starts cleanly (docs/reliability.md, "Faults").
func TestInjectedFaults(t *testing.T) {
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, foreverImage)
		active := d.ensureImage(t, activeForeverImage)
		drv := func(t *testing.T) *sim.Driver { return d.simulator(t) }
		t.Cleanup(func() { d.simulator(t).ClearFaults() })

		failedRun := func(t *testing.T, id, req string, errno unix.Errno, want ...string) {
			if err := drv(t).InjectError(req, errno); err != nil {
				t.Fatal(err)
			}
			var r ctrResult
			timed(t, "the failing run", 15*time.Second, func() { r = d.ctr(t, 60*time.Second, d.runArgs("-d", ref, id)...) })
			if r.code == 0 {
				t.Fatalf("ctr run with %s failing succeeded", req)
			}
			for _, w := range want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("error %q does not say %q", r.stderr, w)
				}
			}
			// A task whose Start failed stays created, holding its cell,
			// until the client deletes it (ctr run does not).
			d.ctr(t, 30*time.Second, "task", "rm", "-f", id)
			d.ctr(t, 10*time.Second, "container", "rm", id)
			if problems := d.waitNoLeaks(10 * time.Second); len(problems) > 0 {
				t.Errorf("the failed run left: %v", problems)
			}
			d.runCleanly(t, id)
		}
		t.Run("CELL_CREATE fails: the errno, nothing left", func(t *testing.T) {
			failedRun(t, "f-create", "create", unix.EBUSY, "JAILHOUSE_CELL_CREATE", "device or resource busy")
		})
		t.Run("CELL_LOAD fails: the cell is destroyed", func(t *testing.T) {
			failedRun(t, "f-load", "load", unix.EINVAL, "JAILHOUSE_CELL_LOAD", "invalid argument")
		})
		t.Run("CELL_START fails: the start fails, delete frees everything", func(t *testing.T) {
			failedRun(t, "f-start", "start", unix.EIO, "JAILHOUSE_CELL_START", "input/output error")
		})

		t.Run("CELL_DESTROY fails on SIGKILL: the kill fails, a retry works", func(t *testing.T) {
			id := "f-destroy"
			d.mustCtr(t, d.runArgs("-d", ref, id)...)
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			if err := drv(t).InjectError("destroy", unix.EBUSY); err != nil {
				t.Fatal(err)
			}
			r := d.ctr(t, 30*time.Second, "task", "kill", "-s", "SIGKILL", id)
			if r.code == 0 || !strings.Contains(r.stderr, "device or resource busy") {
				t.Errorf("kill with a failing destroy: %s; want it to fail with EBUSY", r)
			}
			d.waitTaskStatus(t, id, "RUNNING", 5*time.Second)
			d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
			d.waitTaskStatus(t, id, "STOPPED", 10*time.Second)
			if r := d.ctr(t, 30*time.Second, "task", "rm", id); deleteStatus(r) != 137 {
				t.Errorf("task rm: %s; want 137", r)
			}
			d.mustCtr(t, "container", "rm", id)
			d.runCleanly(t, id)
		})

		t.Run("wedged driver: Kill answers DeadlineExceeded, State and Stats answer at once", func(t *testing.T) {
			id := "f-wedge-kill"
			d.mustCtr(t, d.runArgs("-d", ref, id)...)
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			if err := drv(t).InjectDelay("destroy", time.Hour); err != nil {
				t.Fatal(err)
			}
			var r ctrResult
			took := timed(t, "Kill against a wedged destroy", 8*time.Second, func() {
				r = d.ctr(t, 60*time.Second, "task", "kill", "-s", "SIGKILL", id)
			})
			if r.code == 0 || !strings.Contains(r.stderr, "deadline exceeded") {
				t.Errorf("kill with a wedged destroy: %s; want DeadlineExceeded", r)
			}
			t.Logf("Kill answered after %v", took.Round(time.Millisecond))
			timed(t, "State (ctr task ls) while wedged", 2*time.Second, func() {
				if st := d.tasks(t)[id]; st.status != "RUNNING" {
					t.Errorf("task %s is %q while its destroy is wedged, want RUNNING", id, st.status)
				}
			})
			timed(t, "Stats (ctr task metrics) while wedged", 2*time.Second, func() { d.mustCtr(t, "task", "metrics", id) })
			timed(t, "Pids (ctr task ps) while wedged", 2*time.Second, func() { d.mustCtr(t, "task", "ps", id) })
			if err := drv(t).ClearFaults(); err != nil {
				t.Fatal(err)
			}
			// The kill went on: the task stops once the driver answers.
			d.waitTaskStatus(t, id, "STOPPED", 10*time.Second)
			if r := d.ctr(t, 30*time.Second, "task", "rm", id); deleteStatus(r) != 137 {
				t.Errorf("task rm: %s; want 137", r)
			}
			d.mustCtr(t, "container", "rm", id)
			d.runCleanly(t, id)
		})

		t.Run("wedged driver: Delete answers DeadlineExceeded, a retry after it finished gets its result", func(t *testing.T) {
			id := "f-wedge-rm"
			d.mustCtr(t, d.runArgs("-d", ref, id)...)
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			// The inmate shuts down by itself: the cell is left for Delete.
			cell := d.cellOf(t, namespace, id)
			if err := drv(t).SetCellState(cell, jailhouse.StateShutDown); err != nil {
				t.Fatal(err)
			}
			d.waitTaskStatus(t, id, "STOPPED", 10*time.Second)
			if err := drv(t).InjectDelay("destroy", time.Hour); err != nil {
				t.Fatal(err)
			}
			var r ctrResult
			timed(t, "Delete against a wedged destroy", 12*time.Second, func() { r = d.ctr(t, 60*time.Second, "task", "rm", id) })
			if r.code == 0 || !strings.Contains(r.stderr, "deadline exceeded") {
				t.Errorf("task rm with a wedged destroy: %s; want DeadlineExceeded", r)
			}
			timed(t, "State while the delete is wedged", 2*time.Second, func() { d.tasks(t) })
			if err := drv(t).ClearFaults(); err != nil {
				t.Fatal(err)
			}
			// The user retries after the delete finished in the background:
			// containerd loads the task first (State; after a restart it
			// keeps the shim only if Pids answers), which must still be there.
			waitFor(t, "the background delete to destroy the cell", 10*time.Second, func() bool {
				_, err := drv(t).Cell(cell)
				return err != nil
			})
			if st := d.tasks(t)[id]; st.status != "STOPPED" {
				t.Errorf("task %s is %q after its delete finished in the background, want STOPPED", id, st.status)
			}
			// containerd restarting in between keeps the task, and the
			// retry still gets the exit status.
			d.restart(t, nil)
			if st := d.tasks(t)[id]; st.status != "STOPPED" {
				t.Errorf("task %s is %q after containerd restarted, want STOPPED", id, st.status)
			}
			r = d.ctr(t, 30*time.Second, "task", "rm", id)
			if r.code != 0 || strings.Contains(r.stderr, "exit code") {
				t.Errorf("retried task rm: %s; want exit 0 and the inmate's status 0", r)
			}
			d.mustCtr(t, "container", "rm", id)
			d.runCleanly(t, id)
		})

		cellDies := []struct {
			name  string
			kill  func(t *testing.T, cell string) error
			want  int
			extra []string
		}{
			{name: "cell failed from outside: 255", want: 255,
				kill: func(t *testing.T, cell string) error { return drv(t).SetCellState(cell, jailhouse.StateFailed) }},
			{name: "cell destroyed from outside: 137", want: 137,
				kill: func(t *testing.T, cell string) error { return drv(t).DestroyCell(cell) }},
			{name: "every CPU of the cell failed: 255", want: 255, extra: []string{"--cpus", "2"},
				kill: func(t *testing.T, cell string) error {
					info, err := drv(t).Cell(cell)
					if err != nil {
						return err
					}
					if len(info.CPUs) < 2 {
						return fmt.Errorf("cell %s has CPUs %v, want two", cell, info.CPUs)
					}
					// One failed CPU is not an exit.
					if err := drv(t).FailCPU(cell, info.CPUs[0]); err != nil {
						return err
					}
					time.Sleep(500 * time.Millisecond)
					return drv(t).FailCPU(cell, info.CPUs[1])
				}},
		}
		for i, tc := range cellDies {
			t.Run(tc.name, func(t *testing.T) {
				id := fmt.Sprintf("f-dies-%d", i)
				d.mustCtr(t, d.runArgs(append(append([]string{"-d"}, tc.extra...), ref, id)...)...)
				d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
				if err := tc.kill(t, d.cellOf(t, namespace, id)); err != nil {
					t.Fatal(err)
				}
				timed(t, "the exit", 3*time.Second, func() { d.waitTaskStatus(t, id, "STOPPED", 10*time.Second) })
				if r := d.ctr(t, 30*time.Second, "task", "rm", id); deleteStatus(r) != tc.want {
					t.Errorf("task rm: %s; want %d", r, tc.want)
				}
				d.mustCtr(t, "container", "rm", id)
				d.runCleanly(t, id)
			})
		}

		t.Run("a running/locked cell blocks other creates with EPERM until it goes", func(t *testing.T) {
			d.mustCtr(t, d.runArgs("-d", ref, "f-locked")...)
			d.waitTaskStatus(t, "f-locked", "RUNNING", 20*time.Second)
			if err := drv(t).SetCellState(d.cellOf(t, namespace, "f-locked"), jailhouse.StateRunningLocked); err != nil {
				t.Fatal(err)
			}
			r := d.ctr(t, 30*time.Second, d.runArgs("-d", ref, "f-blocked")...)
			if r.code == 0 || !strings.Contains(r.stderr, "operation not permitted") {
				t.Errorf("run beside a locked cell: %s; want EPERM", r)
			}
			d.ctr(t, 10*time.Second, "container", "rm", "f-blocked")
			d.mustCtr(t, "task", "kill", "-s", "SIGKILL", "f-locked")
			d.waitTaskStatus(t, "f-locked", "STOPPED", 10*time.Second)
			if r := d.ctr(t, 30*time.Second, "task", "rm", "f-locked"); deleteStatus(r) != 137 {
				t.Errorf("task rm of the locked cell: %s; want 137", r)
			}
			d.mustCtr(t, "container", "rm", "f-locked")
			d.runCleanly(t, "f-blocked")
		})

		t.Run("inmate denies shutdown: kill fails with EPERM until it relents", func(t *testing.T) {
			id := "f-deny"
			d.mustCtr(t, d.runArgs("-d", active, id)...)
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			cell := d.cellOf(t, namespace, id)
			if err := drv(t).SetShutdownPolicy(cell, sim.PolicyDeny); err != nil {
				t.Fatal(err)
			}
			r := d.ctr(t, 30*time.Second, "task", "kill", "-s", "SIGKILL", id)
			if r.code == 0 || !strings.Contains(r.stderr, "operation not permitted") {
				t.Errorf("kill of a denying inmate: %s; want EPERM", r)
			}
			d.waitTaskStatus(t, id, "RUNNING", 5*time.Second)
			if err := drv(t).SetShutdownPolicy(cell, sim.PolicyApprove); err != nil {
				t.Fatal(err)
			}
			d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
			d.waitTaskStatus(t, id, "STOPPED", 10*time.Second)
			if r := d.ctr(t, 30*time.Second, "task", "rm", id); deleteStatus(r) != 137 {
				t.Errorf("task rm: %s; want 137", r)
			}
			d.mustCtr(t, "container", "rm", id)
		})

		t.Run("inmate ignores shutdown: SIGTERM still stops it with 143", func(t *testing.T) {
			id := "f-ignore"
			d.mustCtr(t, d.runArgs("-d", active, id)...)
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			if err := drv(t).SetShutdownPolicy(d.cellOf(t, namespace, id), sim.PolicyIgnore); err != nil {
				t.Fatal(err)
			}
			d.mustCtr(t, "task", "kill", "-s", "SIGTERM", id)
			timed(t, "the stop of an ignoring inmate", 5*time.Second, func() { d.waitTaskStatus(t, id, "STOPPED", 15*time.Second) })
			if r := d.ctr(t, 30*time.Second, "task", "rm", id); deleteStatus(r) != 143 {
				t.Errorf("task rm: %s; want 143", r)
			}
			d.mustCtr(t, "container", "rm", id)
		})

		t.Run("shim killed while its inmate denies shutdown: the cell is orphaned, the id and bundle are free", func(t *testing.T) {
			id := "f-orphan"
			d.mustCtr(t, d.runArgs("-d", active, id)...)
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			cell := d.cellOf(t, namespace, id)
			if err := drv(t).SetShutdownPolicy(cell, sim.PolicyDeny); err != nil {
				t.Fatal(err)
			}
			logStart := fileSize(d.logPath)
			for _, pid := range d.serverPIDs(id) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			// containerd runs `shim delete`, which must succeed: then
			// containerd removes the bundle (the next run would fail
			// with `mkdir bundle: file exists` otherwise).
			waitFor(t, "containerd to remove the bundle after the dead shim's delete", 15*time.Second, func() bool {
				_, err := os.Stat(d.bundleDir(id))
				return os.IsNotExist(err)
			})
			if ms := mountsUnder(d.bundleDir(id)); len(ms) > 0 {
				t.Errorf("mounts left: %v", ms)
			}
			waitNoShim(t, d, id)
			if !strings.Contains(readFrom(t, d.logPath, logStart), "CELL LEAKED") {
				t.Errorf("containerd's log does not carry the delete's warning about the leaked cell")
			}
			entries := d.ledger(t)
			if len(entries) != 1 || entries[0].Cell != cell || entries[0].Orphaned.IsZero() {
				t.Fatalf("ledger %+v, want %s's entry orphaned", entries, cell)
			}
			d.mustCtr(t, "container", "rm", id)
			// The same id runs again at once, beside the orphan.
			d.mustCtr(t, d.runArgs("-d", ref, id)...)
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			if n := len(d.partitionCells(t)); n != 2 {
				t.Errorf("%d cells, want the orphan and the new one", n)
			}
			d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
			d.waitTaskStatus(t, id, "STOPPED", 10*time.Second)
			d.ctr(t, 30*time.Second, "task", "rm", id)
			d.mustCtr(t, "container", "rm", id)
			// Once the inmate relents, the next allocation destroys it.
			if err := drv(t).SetShutdownPolicy(cell, sim.PolicyApprove); err != nil {
				t.Fatal(err)
			}
			d.runCleanly(t, id)
		})

		t.Run("stdio nobody opens and a client that vanishes never block Create or Start", func(t *testing.T) {
			id := "f-stdio"
			d.mustCtr(t, "container", "create", "--runtime", runtimeName, ref, id)
			fifos := t.TempDir()
			var paths []string
			for _, n := range []string{"stdin", "stdout", "stderr"} {
				p := filepath.Join(fifos, n)
				if err := unix.Mkfifo(p, 0o600); err != nil {
					t.Fatal(err)
				}
				paths = append(paths, p)
			}
			tasks, ctx, done := d.tasksClient(t)
			defer done()
			timed(t, "Create and Start with FIFOs nobody opens", 5*time.Second, func() {
				if err := createAndStart(ctx, tasks, d, id, paths); err != nil {
					t.Fatal(err)
				}
			})
			d.waitTaskStatus(t, id, "RUNNING", 5*time.Second)
			d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
			d.waitTaskStatus(t, id, "STOPPED", 10*time.Second)
			d.ctr(t, 30*time.Second, "task", "rm", id)
			d.mustCtr(t, "container", "rm", id)

			// An attached client killed right after the start.
			cctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			client := d.ctrCommand(cctx, d.runArgs(ref, id)...)
			if err := client.Start(); err != nil {
				t.Fatal(err)
			}
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			client.Process.Kill()
			client.Wait()
			timed(t, "kill and delete after the client vanished", 10*time.Second, func() {
				d.mustCtr(t, "task", "kill", "-s", "SIGTERM", id)
				d.waitTaskStatus(t, id, "STOPPED", 10*time.Second)
				if r := d.ctr(t, 30*time.Second, "task", "rm", id); deleteStatus(r) != 143 {
					t.Errorf("task rm: %s; want 143", r)
				}
			})
			d.mustCtr(t, "container", "rm", id)
		})
	})
}

// tasksClient dials the daemon's gRPC Tasks API in the test namespace.
func (d *daemon) tasksClient(t *testing.T) (tasksapi.TasksClient, context.Context, func()) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+d.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ctx = metadata.AppendToOutgoingContext(ctx, "containerd-namespace", namespace)
	return tasksapi.NewTasksClient(conn), ctx, func() { cancel(); conn.Close() }
}

// createAndStart creates and starts the task of container id with the
// given stdin, stdout and stderr paths, through the Tasks API (ctr would
// open the FIFOs itself).
func createAndStart(ctx context.Context, tasks tasksapi.TasksClient, d *daemon, id string, stdio []string) error {
	mounts, err := d.snapshotMounts(ctx, id)
	if err != nil {
		return err
	}
	if _, err := tasks.Create(ctx, &tasksapi.CreateTaskRequest{
		ContainerID: id, Rootfs: mounts, Stdin: stdio[0], Stdout: stdio[1], Stderr: stdio[2],
	}); err != nil {
		return fmt.Errorf("Tasks.Create: %w", err)
	}
	if _, err := tasks.Start(ctx, &tasksapi.StartRequest{ContainerID: id}); err != nil {
		return fmt.Errorf("Tasks.Start: %w", err)
	}
	return nil
}

// Acceptance 4: a containerd restart with three running partitions (in
// CRI pods) keeps them RUNNING, their logs flowing and killable; a fourth
// whose inmate stopped while the daemon was down is reported exited after
// the restart (containerd#6771).
func TestDaemonRestartKeepsPartitions(t *testing.T) {
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		needCRI(t)
		var pods []*criPod
		var ids []string
		for i := range 4 {
			pod := d.runPod(t, fmt.Sprintf("restart-%d", i))
			pods = append(pods, pod)
			// 32 MiB each: four of CRI's default 64 MiB do not fit the pool.
			ids = append(ids, pod.start(t, containerConfig{name: "tick", image: tickImage,
				resources: map[string]any{"memory_limit_in_bytes": 32 << 20}}))
		}
		for _, id := range ids {
			d.waitState(t, id, "CONTAINER_RUNNING", 20*time.Second)
		}
		waitFor(t, "every partition's first ticks in its log", 10*time.Second, func() bool {
			for _, id := range ids {
				if strings.Count(d.logs(t, id), "tick") < 2 {
					return false
				}
			}
			return true
		})
		before := make([]int, len(ids))
		for i, id := range ids {
			before[i] = strings.Count(d.logs(t, id), "tick")
		}
		exitedCell := d.cellOf(t, criNamespace, ids[3])

		d.restart(t, func() {
			// While the daemon is down, the fourth inmate shuts down.
			if err := d.simulator(t).SetCellState(exitedCell, jailhouse.StateShutDown); err != nil {
				t.Error(err)
			}
			time.Sleep(time.Second)
		})

		for i, id := range ids[:3] {
			if st := d.inspect(t, id); st.state != "CONTAINER_RUNNING" {
				t.Errorf("partition %d after the restart: %s, want CONTAINER_RUNNING", i, st.state)
			}
		}
		waitFor(t, "logs to keep flowing after the restart", 10*time.Second, func() bool {
			for i, id := range ids[:3] {
				if strings.Count(d.logs(t, id), "tick") <= before[i]+2 {
					return false
				}
			}
			return true
		})
		st := d.waitState(t, ids[3], "CONTAINER_EXITED", 20*time.Second)
		if st.exitCode != 0 {
			t.Errorf("the partition that shut down during the restart exited with %d, want 0", st.exitCode)
		}
		for i, id := range ids[:3] {
			timed(t, "crictl stop after the restart", 15*time.Second, func() { d.mustCrictl(t, "stop", "--timeout", "10", id) })
			if st := d.inspect(t, id); st.state != "CONTAINER_EXITED" || st.exitCode != 143 {
				t.Errorf("partition %d after stop: %s, exit %d; want CONTAINER_EXITED 143", i, st.state, st.exitCode)
			}
		}
		for _, p := range pods {
			p.remove(t)
		}
		if problems := d.waitNoLeaks(15 * time.Second); len(problems) > 0 {
			t.Errorf("after the restart test: %v", problems)
		}
	})
}

// snapshotMounts returns the rootfs mounts of container id's snapshot
// (ctr's snapshot key is the container id).
func (d *daemon) snapshotMounts(ctx context.Context, id string) ([]*types.Mount, error) {
	conn, err := grpc.NewClient("unix://"+d.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, err := snapshotsapi.NewSnapshotsClient(conn).Mounts(ctx, &snapshotsapi.MountsRequest{Snapshotter: "overlayfs", Key: id})
	if err != nil {
		return nil, fmt.Errorf("snapshot mounts of %s: %w", id, err)
	}
	return resp.Mounts, nil
}
