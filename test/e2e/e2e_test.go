//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// runArgs are the ctr run arguments every test uses: its own FIFO dir (ctr's
// default is /run/containerd/fifo) and the runphi runtime.
func (d *daemon) runArgs(extra ...string) []string {
	args := []string{"run", "--fifo-dir", filepath.Join(d.dir, "fifo"), "--runtime", runtimeName}
	return append(args, extra...)
}

// demoLines are the console lines the demo inmate prints, read from its
// script so the test follows examples/demo.
func demoLines(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../../examples/demo/boot/boot.bin")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if text, ok := strings.CutPrefix(strings.TrimSpace(l), "print "); ok {
			out = append(out, text)
		}
	}
	if len(out) < 3 {
		t.Fatalf("examples/demo/boot/boot.bin prints %d lines, the test expects a banner and a count", len(out))
	}
	return out
}

// consoleLines splits console output into lines without the CR a console
// may add.
func consoleLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimRight(l, "\r"); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Acceptance 1: `ctr run --rm` of the demo image prints the inmate's lines
// in order and exits 0 after the inmate's `exit`.
func TestDemoRunPrintsInmateConsole(t *testing.T) {
	want := demoLines(t)
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, demoImage)
		r := d.ctr(t, 60*time.Second, d.runArgs("--rm", ref, "demo")...)
		if r.code != 0 {
			t.Fatalf("ctr run --rm demo: %s; want exit 0", r)
		}
		if got := consoleLines(r.stdout); !slices.Equal(got, want) {
			t.Errorf("console output:\n%s\nwant exactly, in order:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if _, ok := d.tasks(t)["demo"]; ok {
			t.Error("ctr run --rm left the task")
		}
	})
}

// Acceptance 2: a running partition is RUNNING with a pid; a kill stops it
// with 128+signal, and removing the task destroys the cell and frees
// everything it held.
func TestKillStopsAndFreesPartition(t *testing.T) {
	tests := []struct {
		name     string
		signal   string
		want     int
		attached bool // run ctr attached and check its own exit code too (Wait)
	}{
		{name: "SIGTERM detached gives 143", signal: "SIGTERM", want: 143},
		{name: "SIGKILL attached gives 137", signal: "SIGKILL", want: 137, attached: true},
	}
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, foreverImage)
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				id := fmt.Sprintf("kill-%d", i)
				var attached *exec.Cmd
				var attachedOut bytes.Buffer
				if tc.attached {
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					attached = d.ctrCommand(ctx, d.runArgs(ref, id)...)
					attached.Stdout = &attachedOut
					attached.Stderr = &attachedOut
					if err := attached.Start(); err != nil {
						t.Fatal(err)
					}
					defer func() {
						if attached.ProcessState == nil {
							attached.Process.Kill()
							attached.Wait()
						}
					}()
				} else {
					d.mustCtr(t, d.runArgs("-d", ref, id)...)
				}

				st := d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
				if st.pid <= 0 {
					t.Errorf("ctr task ls: pid %d, want a non-zero pid for a running partition", st.pid)
				}
				if ps := d.mustCtr(t, "task", "ps", id); !strings.Contains(ps.stdout, strconv.Itoa(st.pid)) {
					t.Errorf("ctr task ps %s does not list the task pid %d: %q", id, st.pid, ps.stdout)
				}
				if cells := d.partitionCells(t); len(cells) != 1 {
					t.Errorf("simulator has %d partition cells while the task runs, want 1: %v", len(cells), cells)
				}
				if n := len(d.ledger(t)); n != 1 {
					t.Errorf("ledger has %d entries while the task runs, want 1", n)
				}

				d.mustCtr(t, "task", "kill", "-s", tc.signal, id)

				if tc.attached {
					// An attached ctr run waits for the exit (Wait), exits
					// with the status, and deletes the task itself.
					err := attached.Wait()
					var ee *exec.ExitError
					if !errors.As(err, &ee) || ee.ExitCode() != tc.want {
						t.Errorf("attached ctr run ended with %v, want exit status %d; output %q", err, tc.want, attachedOut.String())
					}
					if !strings.Contains(attachedOut.String(), "forever inmate up") {
						t.Errorf("attached ctr run did not show the inmate's console: %q", attachedOut.String())
					}
					if _, ok := d.tasks(t)[id]; ok {
						t.Errorf("task %s still listed after the attached ctr run ended", id)
					}
				} else {
					d.waitTaskStatus(t, id, "STOPPED", 20*time.Second)
					// Delete returns the exit status; ctr task rm reports it.
					if r := d.ctr(t, 30*time.Second, "task", "rm", id); deleteStatus(r) != tc.want {
						t.Errorf("ctr task rm %s: %s; want exit status %d", id, r, tc.want)
					}
				}
				if cells := d.partitionCells(t); len(cells) != 0 {
					t.Errorf("after task rm the simulator still has cells %v", cells)
				}
				if entries := d.ledger(t); len(entries) != 0 {
					t.Errorf("after task rm the ledger still has %v", entries)
				}
				if ms := mountsUnder(d.bundleDir(id)); len(ms) != 0 {
					t.Errorf("after task rm still mounted: %v", ms)
				}
				d.mustCtr(t, "container", "rm", id)
			})
		}
	})
}

// Acceptance 3: an inmate that fails stops the task with status 255 (the
// documented status of a failed cell).
func TestFailingInmateExits255(t *testing.T) {
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, failImage)
		r := d.ctr(t, 60*time.Second, d.runArgs("--rm", ref, "fail")...)
		if r.code != 255 {
			t.Errorf("ctr run --rm of a failing inmate: %s; want exit status 255", r)
		}
		if !strings.Contains(r.stdout, "about to fail") {
			t.Errorf("console output %q lacks the inmate's line before it failed", r.stdout)
		}
	})
}

// Acceptance 4: two partitions at once get disjoint CPUs and RAM; a third
// that cannot fit fails to start, names what ran out and leaves nothing.
func TestPartitionsGetDisjointResources(t *testing.T) {
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, foreverImage)
		for _, id := range []string{"part-a", "part-b"} {
			d.mustCtr(t, d.runArgs("-d", ref, id)...)
			d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
		}

		cells := d.partitionCells(t)
		if len(cells) != 2 {
			t.Fatalf("simulator has %d partition cells, want 2: %v", len(cells), cells)
		}
		if len(cells[0].CPUs) == 0 || len(cells[1].CPUs) == 0 {
			t.Errorf("a partition cell has no CPUs: %v", cells)
		}
		for _, c := range cells[0].CPUs {
			if slices.Contains(cells[1].CPUs, c) {
				t.Errorf("cells %q and %q share CPU %d (%v, %v)", cells[0].Name, cells[1].Name, c, cells[0].CPUs, cells[1].CPUs)
			}
		}
		entries := d.ledger(t)
		if len(entries) != 2 {
			t.Fatalf("ledger has %d entries, want 2: %v", len(entries), entries)
		}
		var used uint64
		for _, a := range entries[0].RAM {
			for _, b := range entries[1].RAM {
				if a.Overlaps(b) {
					t.Errorf("ledger RAM of %s %v overlaps %s %v", entries[0].Owner, a, entries[1].Owner, b)
				}
			}
		}
		for _, e := range entries {
			for _, r := range e.RAM {
				used += r.Size()
			}
		}

		// More memory than the pool has left.
		limit := freeMemory(t, used) + 1<<20
		r := d.ctr(t, 30*time.Second, d.runArgs("-d", "--memory-limit", strconv.FormatUint(limit, 10), ref, "part-c")...)
		if r.code == 0 {
			t.Fatalf("a third partition with --memory-limit %d started; want it to fail", limit)
		}
		if !strings.Contains(strings.ToLower(r.stderr), "memory") {
			t.Errorf("error does not name the resource that ran out: %q", r.stderr)
		}
		// The same Create through the gRPC API, for the error class.
		st := d.createTaskStatus(t, "part-c")
		if c := st.Code(); c != codes.ResourceExhausted && c != codes.FailedPrecondition {
			t.Errorf("Tasks.Create: %s %q; want ResourceExhausted or FailedPrecondition", c, st.Message())
		}
		if !strings.Contains(strings.ToLower(st.Message()), "memory") {
			t.Errorf("Tasks.Create error does not name the resource that ran out: %q", st.Message())
		}
		if got := d.partitionCells(t); len(got) != 2 {
			t.Errorf("after the failed start the simulator has %d partition cells, want 2: %v", len(got), got)
		}
		if got := d.ledger(t); len(got) != 2 {
			t.Errorf("after the failed start the ledger has %d entries, want 2: %v", len(got), got)
		}
		if ms := mountsUnder(d.bundleDir("part-c")); len(ms) != 0 {
			t.Errorf("the failed task left mounts: %v", ms)
		}
		waitNoShim(t, d, "part-c")
		d.ctr(t, 10*time.Second, "container", "rm", "part-c")
	})
}

// freeMemory is the board's partition RAM pool minus what is in use.
func freeMemory(t *testing.T, used uint64) uint64 {
	t.Helper()
	b, err := loadBoard("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	return b.Pool.Size() - used
}

// Acceptance 5: a malformed /boot/config.json fails the start with an
// InvalidArgument error naming the file and the problem, and leaves nothing
// in the simulator or the state directory.
func TestMalformedBootDescriptionIsRejected(t *testing.T) {
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, malformedImage)
		before := d.stateFiles(t)
		r := d.ctr(t, 30*time.Second, d.runArgs("--rm", ref, "malformed")...)
		if r.code == 0 {
			t.Fatalf("ctr run of an image with a malformed boot description succeeded: %s", r)
		}
		if !strings.Contains(r.stderr, "/boot/config.json") {
			t.Errorf("error does not name /boot/config.json: %q", r.stderr)
		}
		if !regexp.MustCompile(`(?i)invalid character|syntax|unexpected|line 1`).MatchString(r.stderr) {
			t.Errorf("error does not say what is wrong with the JSON: %q", r.stderr)
		}
		// ctr run --rm removed the container; make it again for the same
		// Create through the gRPC API, which shows the error class.
		d.mustCtr(t, "container", "create", "--runtime", runtimeName, ref, "malformed")
		if st := d.createTaskStatus(t, "malformed"); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "/boot/config.json") {
			t.Errorf("Tasks.Create: %s %q; want InvalidArgument naming /boot/config.json", st.Code(), st.Message())
		}
		if cells := d.partitionCells(t); len(cells) != 0 {
			t.Errorf("the failed start left cells %v", cells)
		}
		if entries := d.ledger(t); len(entries) != 0 {
			t.Errorf("the failed start left ledger entries %v", entries)
		}
		if after := d.stateFiles(t); !slices.Equal(before, after) {
			t.Errorf("state dir changed: before %v, after %v", before, after)
		}
		waitNoShim(t, d, "malformed")
		d.ctr(t, 10*time.Second, "container", "rm", "malformed")
	})
}

// Acceptance 6: the shim answers both start handshakes. A 1.6 daemon takes
// the plain address the shim prints (and the shim writes it to the bundle's
// address file); a 2.4 daemon takes the protobuf BootstrapResult and
// connects with task API version 3.
func TestShimHandshake(t *testing.T) {
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, foreverImage)
		id := "handshake"
		logStart := fileSize(d.logPath)
		d.mustCtr(t, d.runArgs("-d", ref, id)...)
		d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)

		addr, err := os.ReadFile(filepath.Join(d.bundleDir(id), "address"))
		if err != nil {
			t.Errorf("bundle address file: %v (1.6 reconnects through it, and the shim's cleanup reads it)", err)
		} else if a := string(addr); !strings.HasPrefix(a, "unix://") || strings.ContainsAny(a, "{\n") {
			t.Errorf("bundle address file holds %q, want a plain unix:// address", a)
		}
		if pids := d.shimPIDsFor(id); len(pids) != 1 {
			t.Errorf("%d shim processes serve %s, want 1 (the long-lived child): %v", len(pids), id, pids)
		}

		if d.major >= 2 {
			log := readFrom(t, d.logPath, logStart)
			re := regexp.MustCompile(`connecting to shim.*` + regexp.QuoteMeta(id) + `.*|.*` + regexp.QuoteMeta(id) + `.*connecting to shim.*`)
			line := re.FindString(log)
			if line == "" {
				t.Errorf("containerd log has no 'connecting to shim' line for %s", id)
			} else if !strings.Contains(line, "version=3") {
				t.Errorf("2.x daemon connected with another task API version: %s", line)
			}
		}

		d.mustCtr(t, "task", "kill", "-s", "SIGKILL", id)
		d.waitTaskStatus(t, id, "STOPPED", 20*time.Second)
		d.ctr(t, 30*time.Second, "task", "rm", id)
		d.mustCtr(t, "container", "rm", id)
		waitNoShim(t, d, id)
	})
}

// deleteStatus is the exit status `ctr task rm` reports: it exits 0 and
// warns "task X exit with non-zero exit code N" (1.6 and 2.x alike), or says
// nothing when the status is 0. -1 if the removal failed.
func deleteStatus(r ctrResult) int {
	if r.code != 0 {
		return -1
	}
	m := regexp.MustCompile(`exit with non-zero exit code (\d+)`).FindStringSubmatch(r.stderr)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// waitNoShim waits for the shims of task id to exit.
func waitNoShim(t *testing.T, d *daemon, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(d.shimPIDsFor(id)) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("shim of %s still running: %v", id, d.shimPIDsFor(id))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func readFrom(t *testing.T, path string, off int64) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off > int64(len(data)) {
		off = 0
	}
	return string(data[off:])
}
