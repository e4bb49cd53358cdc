//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Acceptance 4 of issue 5: an image without a boot description, run with
// `ctr run --runtime io.containerd.runphi.v2`, behaves as it does on runc:
// output, exit codes, execs, a tty, pause and resume, metrics.
func TestRuncFallbackBehavesLikeRunc(t *testing.T) {
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, busyboxImage)

		t.Run("echo", func(t *testing.T) {
			r := d.ctr(t, 60*time.Second, d.runArgs("--rm", ref, "rc-echo", "echo", "hello from runc")...)
			if r.code != 0 || strings.TrimSpace(r.stdout) != "hello from runc" {
				t.Errorf("ctr run --rm echo: %s; want exit 0 and the line", r)
			}
		})

		t.Run("exit codes", func(t *testing.T) {
			for _, code := range []int{0, 3, 255} {
				r := d.ctr(t, 60*time.Second, d.runArgs("--rm", ref, "rc-exit-"+strconv.Itoa(code), "sh", "-c", "exit "+strconv.Itoa(code))...)
				if r.code != code {
					t.Errorf("ctr run of `exit %d`: %s; want exit status %d", code, r, code)
				}
			}
		})

		t.Run("exec, ps, pause, resume, metrics, kill", func(t *testing.T) {
			id := "rc-exec"
			// pid 1 ignores signals it has no handler for, on runc as anywhere.
			d.mustCtr(t, d.runArgs("-d", ref, id, "sh", "-c", `trap "exit 143" TERM; sleep 600 & wait`)...)
			st := d.waitTaskStatus(t, id, "RUNNING", 20*time.Second)
			if st.pid <= 0 {
				t.Fatalf("task pid %d, want the container's init pid", st.pid)
			}
			r := d.ctr(t, 30*time.Second, "task", "exec", "--exec-id", "e1", id, "sh", "-c", "echo from-exec; exit 5")
			if r.code != 5 || strings.TrimSpace(r.stdout) != "from-exec" {
				t.Errorf("ctr task exec: %s; want the exec's output and its exit status 5", r)
			}
			if ps := d.mustCtr(t, "task", "ps", id); !strings.Contains(ps.stdout, strconv.Itoa(st.pid)) {
				t.Errorf("ctr task ps %s does not list the init pid %d: %q", id, st.pid, ps.stdout)
			}
			d.mustCtr(t, "task", "pause", id)
			d.waitTaskStatus(t, id, "PAUSED", 10*time.Second)
			d.mustCtr(t, "task", "resume", id)
			d.waitTaskStatus(t, id, "RUNNING", 10*time.Second)
			if m := d.mustCtr(t, "task", "metrics", id); !strings.Contains(m.stdout, "memory") {
				t.Errorf("ctr task metrics: %q; want the container's cgroup metrics", m.stdout)
			}
			d.mustCtr(t, "task", "kill", "-s", "SIGTERM", id)
			d.waitTaskStatus(t, id, "STOPPED", 20*time.Second)
			if r := d.ctr(t, 30*time.Second, "task", "rm", id); deleteStatus(r) != 143 {
				t.Errorf("ctr task rm %s: %s; want exit status 143", id, r)
			}
			d.mustCtr(t, "container", "rm", id)
		})

		t.Run("tty", func(t *testing.T) {
			// ctr run -t needs a terminal on its stdin: script(1) gives it one.
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			ctrCmd := strings.Join(d.ctrCommand(ctx, d.runArgs("--rm", "-t", ref, "rc-tty", "sh", "-c", "tty; echo tty-$((6*7))")...).Args, " ")
			out, err := exec.CommandContext(ctx, "script", "-qec", ctrCmd, "/dev/null").CombinedOutput()
			text := strings.ReplaceAll(string(out), "\r", "")
			if err != nil || !strings.Contains(text, "/dev/pts/") || !strings.Contains(text, "tty-42") {
				t.Errorf("ctr run -t under script: %v, output %q; want a pts and tty-42", err, text)
			}
		})
		waitNoShim(t, d, "rc-exec")
	})
}
