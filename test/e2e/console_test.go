//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The console acceptance tests of issue 6 (docs/console.md).

// scriptImage is an image whose inmate runs the given script lines, with
// boot description keys extra (JSON members, may be "").
func scriptImage(name, extra string, lines ...string) testImage {
	desc := `{"os_var":"zephyr","inmate":"/boot/boot.bin"` + extra + `}`
	return testImage{ref: "docker.io/runphi/e2e-" + name + ":latest", files: map[string]string{
		"boot/config.json": desc,
		"boot/boot.bin":    "#!runphi-sim\n" + strings.Join(lines, "\n") + "\n",
	}}
}

// numbered prints n lines "<tag> NNN", sleeping between them when pause
// is set, and exits.
func numbered(tag string, n int, pause string) (script []string, want []string) {
	for i := range n {
		line := fmt.Sprintf("%s %03d", tag, i)
		script = append(script, "print "+line)
		want = append(want, line)
		if pause != "" {
			script = append(script, "sleep "+pause)
		}
	}
	return append(script, "exit"), want
}

// hypervisorLine matches the hypervisor's messages a leak would show.
var hypervisorLine = []string{"Created cell", "Started cell", "Page pool usage", "Closing cell", "Cell \"", "Initializing"}

// Acceptance 1 (ctr): a scripted inmate's print lines appear in ctr's
// output, all of them, in order, and nothing else.
func TestConsoleLinesInOrder(t *testing.T) {
	script, want := numbered("ordered", 300, "")
	img := scriptImage("ordered", "", script...)
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, img)
		r := d.ctr(t, 60*time.Second, d.runArgs("--rm", ref, "ordered")...)
		if r.code != 0 {
			t.Fatalf("ctr run: %s", r)
		}
		if got := consoleLines(r.stdout); !slices.Equal(got, want) {
			t.Errorf("ctr output has %d lines, want the %d printed, in order; first difference at %d",
				len(got), len(want), firstDiff(got, want))
		}
	})
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Acceptance 1: with partitions running side by side (one owning the
// virtual console, one on its ivshmem console, one with none), each one's
// output holds exactly its own lines and no hypervisor line; the
// hypervisor's lines go to the owner's shim log instead.
func TestConsolesKeepPartitionsApart(t *testing.T) {
	vScript, vWant := numbered("virtual-owner", 15, "100ms")
	iScript, iWant := numbered("ivshmem-peer", 15, "100ms")
	nScript, _ := numbered("silent", 3, "100ms")
	images := []struct {
		id   string
		img  testImage
		want []string
	}{
		{"vcon", scriptImage("vcon", `,"console":"virtual"`, vScript...), vWant},
		{"icon", scriptImage("icon", `,"console":"ivshmem"`, iScript...), iWant},
		{"ncon", scriptImage("ncon", `,"console":"none"`, nScript...),
			[]string{`[runphi: no console output from this partition: the boot description /boot/config.json sets "console": "none"]`}},
	}
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		var wg sync.WaitGroup
		results := make([]ctrResult, len(images))
		for i, im := range images {
			ref := d.ensureImage(t, im.img)
			wg.Go(func() { results[i] = d.ctr(t, 60*time.Second, d.runArgs("--rm", ref, im.id)...) })
		}
		wg.Wait()
		for i, im := range images {
			r := results[i]
			if r.code != 0 {
				t.Errorf("%s: %s", im.id, r)
				continue
			}
			got := consoleLines(r.stdout)
			if !slices.Equal(got, im.want) {
				t.Errorf("%s printed:\n%s\nwant exactly its own lines:\n%s", im.id, strings.Join(got, "\n"), strings.Join(im.want, "\n"))
			}
			for _, h := range hypervisorLine {
				if strings.Contains(r.stdout, h) {
					t.Errorf("%s's output has a hypervisor line (%q)", im.id, h)
				}
			}
		}
		if log, _ := os.ReadFile(d.logPath); !bytes.Contains(log, []byte(`Started cell \"vcon\"`)) {
			t.Errorf("the virtual console owner's shim did not log the hypervisor's lines; containerd log:\n%s", tail(d.logPath, 30))
		}
	})
}

// Acceptance 2: `ctr run -t` under script(1) gives the partition a
// terminal whose input reaches the inmate, which echoes it back.
func TestTTYEchoesInput(t *testing.T) {
	img := scriptImage("echo", "", "print ready for input", "echo", "print bye", "exit")
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, img)
		ctrArgs := append([]string{d.binDir + "/ctr", "-a", d.sock, "-n", namespace}, d.runArgs("-t", "--rm", ref, "tty")...)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "script", "-qfec", shellJoin(ctrArgs), "/dev/null")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if !out.waitFor("ready for input", 30*time.Second) {
			cmd.Process.Kill()
			t.Fatalf("no prompt from the inmate; terminal so far %q", out.String())
		}
		// ctr has put the terminal in raw mode by now: Enter sends '\r'.
		io.WriteString(stdin, "hello runphi\r")
		err = cmd.Wait()
		stdin.Close()
		got := out.String()
		t.Logf("terminal: %q", got)
		if err != nil {
			t.Fatalf("script ctr run -t: %v", err)
		}
		// The shim sends CRLF, as a pty's ONLCR would; ctr's own raw mode
		// keeps OPOST, so the terminal adds a CR of its own, as with runc.
		if !strings.Contains(strings.ReplaceAll(got, "\r", ""), "ready for input\nhello runphi\nbye\n") || strings.Contains(got, "runphi\n") {
			t.Errorf("terminal %q: want the inmate's echo of the typed line, then bye, with CR LF line ends", got)
		}
		if strings.Count(got, "hello runphi") != 1 {
			t.Errorf("terminal %q: the typed line appears %d times, want once (the inmate's echo, no local echo)", got, strings.Count(got, "hello runphi"))
		}
	})
}

// shellJoin quotes args for sh -c.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// syncBuffer is a bytes.Buffer safe for a writer and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) waitFor(text string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(s.String(), text) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// floodLine is the line the throughput inmates print: 1000 bytes with its
// newline.
var floodLine = strings.Repeat("x", 999)

// Acceptance 3: the simulated inmate prints 100 MB as fast as it can and
// ctr receives every byte, every line intact. The rate is logged for
// docs/performance.md.
func TestConsoleThroughputLossless(t *testing.T) {
	const lines = 100000
	img := scriptImage("flood", "", fmt.Sprintf("loop %d", lines), "print "+floodLine, "end", "exit")
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, img)
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		cmd := d.ctrCommand(ctx, d.runArgs("--rm", ref, "flood")...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var total, good, firstByte int64
		var first time.Time
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		for sc.Scan() {
			if firstByte == 0 {
				first, firstByte = time.Now(), 1
			}
			total += int64(len(sc.Bytes())) + 1
			if string(sc.Bytes()) == floodLine {
				good++
			}
		}
		end := time.Now()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ctr run: %v\n%s", err, stderr.String())
		}
		if good != lines || total != lines*1000 {
			t.Errorf("received %d bytes, %d intact lines; want %d bytes, %d lines (nothing lost)", total, good, lines*1000, lines)
		}
		mbps := float64(total) / 1e6 / end.Sub(first).Seconds()
		t.Logf("THROUGHPUT %s: %d MB in %.2fs from the first byte (%.1f MB/s); %.2fs from ctr run to the last byte",
			d.name, total/1e6, end.Sub(first).Seconds(), mbps, end.Sub(start).Seconds())
	})
}

// vmRSS returns a process's resident set in KiB.
func vmRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

// Acceptance 3: an inmate printing without pause to a reader that stops
// for 10 s: the shim's RSS stays bounded (its console buffer is 1 MiB),
// and when the reader comes back it finds a marker saying how much was
// dropped, then the newest output.
func TestConsoleStalledReaderBoundedRSS(t *testing.T) {
	img := scriptImage("flood-forever", "", "loop forever", "print "+floodLine, "end")
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		ref := d.ensureImage(t, img)
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		cmd := d.ctrCommand(ctx, d.runArgs(ref, "stall")...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		// Read for a second to see output flow, then stop reading.
		buf := make([]byte, 64<<10)
		deadline := time.Now().Add(time.Second)
		var before int64
		for time.Now().Before(deadline) {
			n, err := stdout.Read(buf)
			before += int64(n)
			if err != nil {
				t.Fatalf("read ctr output: %v", err)
			}
		}
		pids := d.shimPIDsFor("stall")
		if len(pids) != 1 || before == 0 {
			t.Fatalf("shim pids %v, %d bytes before the stall", pids, before)
		}
		base := vmRSS(pids[0])
		var peak int64
		for range 10 {
			time.Sleep(time.Second)
			peak = max(peak, vmRSS(pids[0]))
		}
		// Read again: the stream goes on, with a marker where it was cut.
		var after bytes.Buffer
		deadline = time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && !bytes.Contains(after.Bytes(), []byte("[runphi: dropped ")) {
			n, err := stdout.Read(buf)
			after.Write(buf[:n])
			if err != nil {
				break
			}
		}
		t.Logf("RSS %s: shim %d KiB when the reader stopped, peak %d KiB over the 10 s stall (%d bytes read before)",
			d.name, base, peak, before)
		if peak-base > 16<<10 {
			t.Errorf("shim RSS grew by %d KiB during a 10 s stall, want a bound (1 MiB buffer)", peak-base)
		}
		if !bytes.Contains(after.Bytes(), []byte("[runphi: dropped ")) {
			t.Errorf("after the stall the reader found no drop marker in %d bytes", after.Len())
		}
		d.mustCtr(t, "task", "kill", "-s", "SIGKILL", "stall")
		go io.Copy(io.Discard, stdout) // let ctr write out what is left
		// Attached ctr run deletes the task once it has exited.
		if err := cmd.Wait(); err == nil || cmd.ProcessState.ExitCode() != 137 {
			t.Errorf("ctr run after SIGKILL: %v, want exit status 137", err)
		}
		d.mustCtr(t, "container", "rm", "stall")
	})
}

// Acceptance 1 (crictl): the same inmate's lines reach crictl logs, all
// of them, in order.
func TestConsoleCrictlLogsInOrder(t *testing.T) {
	needCRI(t)
	script, want := numbered("cri-ordered", 100, "10ms")
	img := scriptImage("cri-ordered", "", script...)
	forEachDaemon(t, func(t *testing.T, d *daemon) {
		pod := d.runPod(t, "logs")
		cid := pod.start(t, containerConfig{name: "ordered", image: img})
		d.waitState(t, cid, "CONTAINER_EXITED", 30*time.Second)
		if got := consoleLines(d.logs(t, cid)); !slices.Equal(got, want) {
			t.Errorf("crictl logs has %d lines, want the %d printed, in order; first difference at %d",
				len(got), len(want), firstDiff(got, want))
		}
		pod.remove(t)
	})
}
