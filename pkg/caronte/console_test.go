package caronte

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// fifos makes stdin, stdout and stderr FIFOs in a fresh directory, as a
// containerd client does before Create.
func fifos(t *testing.T) IO {
	t.Helper()
	dir := t.TempDir()
	io := IO{
		Stdin:  filepath.Join(dir, "stdin"),
		Stdout: filepath.Join(dir, "stdout"),
		Stderr: filepath.Join(dir, "stderr"),
	}
	for _, p := range []string{io.Stdin, io.Stdout, io.Stderr} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return io
}

// readFIFO opens the read end of a FIFO (which caronte holds open for
// writing) and collects everything until EOF.
func readFIFO(t *testing.T, path string) <-chan []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan []byte, 1)
	go func() {
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			t.Errorf("read %s: %v", path, err)
		}
		ch <- b
	}()
	return ch
}

// recvWithin receives from ch or fails the test.
func recvWithin(t *testing.T, ch <-chan []byte, d time.Duration, what string) []byte {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(d):
		t.Fatalf("%s: no EOF within %v", what, d)
		return nil
	}
}

// newWithin runs New and fails if it does not return within d: opening
// stdio must never wait for the other end of a FIFO.
func newWithin(t *testing.T, cell Cell, stdio IO, opts Options, d time.Duration) *Proxy {
	t.Helper()
	type result struct {
		p   *Proxy
		err error
	}
	ch := make(chan result, 1)
	go func() {
		p, err := New(t.Context(), cell, stdio, opts)
		ch <- result{p, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("New: %v", r.err)
		}
		t.Cleanup(func() { r.p.Close() })
		return r.p
	case <-time.After(d):
		t.Fatalf("New blocked for %v on FIFOs nobody opened", d)
		return nil
	}
}

// Everything the inmate wrote is in stdout, and stdout and stderr are at
// EOF, by the time Wait returns; for a self-shutdown (the console stays open)
// and for a kill (the console ends with the destroy).
func TestConsoleDeliveredBeforeExit(t *testing.T) {
	tests := []struct {
		name   string
		stop   func(*testing.T, *Proxy, *fakeCell)
		status uint32
	}{
		{"self shutdown", func(t *testing.T, p *Proxy, c *fakeCell) { c.set(jailhouse.StateShutDown) }, 0},
		{"SIGTERM", func(t *testing.T, p *Proxy, c *fakeCell) {
			if err := p.Kill(t.Context(), unix.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}, 143},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cell := newFakeCell()
			stdio := fifos(t)
			p := newWithin(t, cell, stdio, fastOptions(), time.Second)
			stdout := readFIFO(t, stdio.Stdout)
			stderr := readFIFO(t, stdio.Stderr)
			if err := p.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			var want bytes.Buffer
			for i := range 2000 {
				line := fmt.Sprintf("inmate line %d\n", i)
				want.WriteString(line)
				if _, err := io.WriteString(cell.consoleW, line); err != nil {
					t.Fatal(err)
				}
			}
			tt.stop(t, p, cell)
			e := waitExit(t, p, 5*time.Second)
			if e.Status != tt.status {
				t.Errorf("status = %d, want %d", e.Status, tt.status)
			}
			// Closed before Wait returned, so EOF comes as soon as the
			// reader has taken what the pipe holds.
			got := recvWithin(t, stdout, time.Second, "stdout")
			if !bytes.Equal(got, want.Bytes()) {
				t.Errorf("stdout has %d bytes, want %d; tail %q", len(got), want.Len(), tail(got))
			}
			if got := recvWithin(t, stderr, time.Second, "stderr"); len(got) != 0 {
				t.Errorf("stderr = %q, want empty", got)
			}
		})
	}
}

func tail(b []byte) []byte {
	return b[max(0, len(b)-64):]
}

// New returns at once on FIFOs whose other ends nobody opens (containerd#2551),
// and the partition's whole life then runs without a reader: output that
// cannot be written is dropped at exit within the drain bound.
func TestNoReaderNeverBlocks(t *testing.T) {
	cell := newFakeCell()
	stdio := fifos(t)
	opts := fastOptions()
	opts.DrainTimeout = 200 * time.Millisecond
	p := newWithin(t, cell, stdio, opts, time.Second)

	// The client may open stdin for writing later and write without EPIPE:
	// caronte holds the read end.
	in, err := os.OpenFile(stdio.Stdin, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open stdin for writing: %v (caronte must hold its read end)", err)
	}
	defer in.Close()
	if _, err := in.Write([]byte("hello\n")); err != nil {
		t.Errorf("write stdin: %v", err)
	}

	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	for range 16 { // 512 KiB: far more than the pipe holds
		if _, err := cell.consoleW.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	cell.set(jailhouse.StateShutDown)
	start := time.Now()
	waitExit(t, p, 5*time.Second)
	if d := time.Since(start); d > time.Second+2*opts.DrainTimeout {
		t.Errorf("exit took %v with no reader, want within the drain bounds", d)
	}
}

// A reader that goes away neither kills nor wedges the pump: the inmate
// keeps writing, and the exit still comes within the drain bound.
func TestVanishedReader(t *testing.T) {
	cell := newFakeCell()
	stdio := fifos(t)
	opts := fastOptions()
	opts.DrainTimeout = 200 * time.Millisecond
	p := newWithin(t, cell, stdio, opts, time.Second)
	r, err := os.OpenFile(stdio.Stdout, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	io.WriteString(cell.consoleW, "first\n")
	buf := make([]byte, 6)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "first\n" {
		t.Fatalf("read %q, %v", buf, err)
	}
	r.Close() // the client dies

	chunk := bytes.Repeat([]byte("y"), 32<<10)
	for range 16 {
		if _, err := cell.consoleW.Write(chunk); err != nil {
			t.Fatalf("inmate write after the reader vanished: %v", err)
		}
	}
	if err := p.Kill(t.Context(), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if e := waitExit(t, p, 5*time.Second); e.Status != 137 {
		t.Errorf("status = %d, want 137", e.Status)
	}
	if d := time.Since(start); d > time.Second+2*opts.DrainTimeout {
		t.Errorf("exit took %v after the reader vanished", d)
	}
}

var markerRE = regexp.MustCompile(`^\[runphi: dropped (\d+) bytes of console output\]$`)

// With the reader stalled, memory stays within ConsoleBuffer, the oldest
// output is dropped, and a marker line says how much, where it was dropped.
func TestStalledReaderBoundedWithMarker(t *testing.T) {
	cell := newFakeCell()
	stdio := fifos(t)
	opts := fastOptions()
	p := newWithin(t, cell, stdio, opts, time.Second)
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	// 16 MiB of numbered 8-byte lines, written 32 KiB at a time, while
	// nobody reads stdout.
	const lineLen, linesPerWrite, writes = 8, 4096, 512
	batch := make([]byte, 0, lineLen*linesPerWrite)
	for w := range writes {
		batch = batch[:0]
		for i := range linesPerWrite {
			batch = fmt.Appendf(batch, "%07d\n", w*linesPerWrite+i)
		}
		if _, err := cell.consoleW.Write(batch); err != nil {
			t.Fatal(err)
		}
	}
	const total = lineLen * linesPerWrite * writes

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 4*DefaultConsoleBuffer {
		t.Errorf("heap grew by %d bytes with a stalled reader, want about ConsoleBuffer (%d)", grown, DefaultConsoleBuffer)
	}
	p.pump.mu.Lock()
	held, capacity := p.pump.ring.n, len(p.pump.ring.buf)
	p.pump.mu.Unlock()
	if held > DefaultConsoleBuffer || capacity > DefaultConsoleBuffer {
		t.Errorf("ring holds %d bytes in %d, want at most %d", held, capacity, DefaultConsoleBuffer)
	}

	// The reader comes back; the inmate stops.
	stdout := readFIFO(t, stdio.Stdout)
	cell.set(jailhouse.StateShutDown)
	waitExit(t, p, 5*time.Second)
	out := recvWithin(t, stdout, 2*time.Second, "stdout")

	// Every line is either console data, in order, or a marker accounting
	// for exactly the lines missing at that point.
	var next, markers, dropped int
	lastLine := -1
	for _, line := range strings.SplitAfter(string(out), "\n") {
		if line == "" {
			continue
		}
		if m := markerRE.FindStringSubmatch(strings.TrimSuffix(line, "\n")); m != nil {
			n, _ := strconv.Atoi(m[1])
			if n%lineLen != 0 {
				t.Fatalf("marker drops %d bytes, not whole lines of this stream", n)
			}
			next += n / lineLen
			dropped += n
			markers++
			continue
		}
		num, err := strconv.Atoi(strings.TrimSuffix(line, "\n"))
		if err != nil || len(line) != lineLen {
			t.Fatalf("unexpected output line %q", line)
		}
		if num != next {
			t.Fatalf("line %d where %d was expected (dropped bytes not accounted for)", num, next)
		}
		next++
		lastLine = num
	}
	if markers == 0 {
		t.Error("no drop marker in the output")
	}
	if next*lineLen != total {
		t.Errorf("output and markers account for %d bytes, want %d", next*lineLen, total)
	}
	if want := total/lineLen - 1; lastLine != want {
		t.Errorf("last line %d, want %d: the newest output must survive a stall", lastLine, want)
	}
	if delivered := total - dropped; delivered > DefaultConsoleBuffer+2*chunkSize+(1<<20) {
		t.Errorf("delivered %d bytes after a stall, more than ring + chunks + pipe", delivered)
	}
}

// A cell with no console (Console returns nil) says why in its output and
// exits normally; with stdio of /dev/null the console is still drained.
func TestNoConsoleNoStdio(t *testing.T) {
	cell := newFakeCell()
	cell.noConsole = true
	stdio := fifos(t)
	opts := fastOptions()
	opts.NoConsoleReason = `the boot description sets console "none"`
	p := newWithin(t, cell, stdio, opts, time.Second)
	stdout := readFIFO(t, stdio.Stdout)
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	cell.set(jailhouse.StateFailed)
	if e := waitExit(t, p, 5*time.Second); e.Status != 255 {
		t.Errorf("status = %d, want 255", e.Status)
	}
	want := "[runphi: no console output from this partition: the boot description sets console \"none\"]\n"
	if got := recvWithin(t, stdout, time.Second, "stdout"); string(got) != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}

	// With "" stdio the console is read and thrown away: the inmate never blocks.
	cell2 := newFakeCell()
	p2 := startProxy(t, cell2, fastOptions())
	for range 64 {
		if _, err := cell2.consoleW.Write(make([]byte, 32<<10)); err != nil {
			t.Fatal(err)
		}
	}
	cell2.set(jailhouse.StateShutDown)
	waitExit(t, p2, 5*time.Second)
}

func TestStdioNames(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "out.log")
	tests := []struct {
		name    string
		stdio   IO
		wantErr error
	}{
		{"file URI", IO{Stdout: "file://" + logPath}, nil},
		{"fifo URI", IO{Stdout: "fifo://" + filepath.Join(dir, "missing")}, os.ErrNotExist},
		{"binary URI", IO{Stdout: "binary:///usr/bin/logger"}, errdefs.ErrNotImplemented},
		{"missing stdin FIFO", IO{Stdin: filepath.Join(dir, "nope")}, errdefs.ErrFailedPrecondition},
		{"missing stdout FIFO", IO{Stdout: filepath.Join(dir, "nope")}, os.ErrNotExist},
		{"regular file", IO{Stdout: logPath}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(t.Context(), newFakeCell(), tt.stdio, fastOptions())
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				p.Close()
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("New = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// Console output reaches a file:// log, appended.
func TestFileURIAppends(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "out.log")
	if err := os.WriteFile(logPath, []byte("earlier\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cell := newFakeCell()
	p, err := New(t.Context(), cell, IO{Stdout: "file://" + logPath}, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	io.WriteString(cell.consoleW, "booted\n")
	cell.set(jailhouse.StateShutDown)
	waitExit(t, p, 5*time.Second)
	got, _ := os.ReadFile(logPath)
	if string(got) != "earlier\nbooted\n" {
		t.Errorf("log = %q", got)
	}
}

func TestRing(t *testing.T) {
	tests := []struct {
		name     string
		max      int
		writes   []string
		readSize int // after the writes, read in pieces of this size
		dropped  int
		want     string
	}{
		{"fits", 8, []string{"abc", "def"}, 4, 0, "abcdef"},
		{"drops oldest", 8, []string{"abcdef", "ghij"}, 3, 2, "cdefghij"},
		{"write larger than max", 4, []string{"ab", "cdefgh"}, 8, 4, "efgh"},
		{"exactly max", 4, []string{"abcd"}, 1, 0, "abcd"},
		{"wraps around", 6, []string{"abcd", "efgh", "ij"}, 5, 4, "efghij"},
		{"empty write", 4, []string{"", "ab", ""}, 4, 0, "ab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := ring{max: tt.max}
			dropped := 0
			for _, w := range tt.writes {
				dropped += q.write([]byte(w))
				if q.n > tt.max || len(q.buf) > tt.max {
					t.Fatalf("ring holds %d in %d, max %d", q.n, len(q.buf), tt.max)
				}
			}
			var got []byte
			buf := make([]byte, tt.readSize)
			for {
				n := q.read(buf)
				if n == 0 {
					break
				}
				got = append(got, buf[:n]...)
			}
			if dropped != tt.dropped || string(got) != tt.want {
				t.Errorf("dropped %d, read %q; want %d, %q", dropped, got, tt.dropped, tt.want)
			}
		})
	}

	// Interleaved writes and reads across the wrap point keep the order.
	q := ring{max: 10}
	var want, got []byte
	buf := make([]byte, 3)
	for i := range 100 {
		b := []byte(strconv.Itoa(i % 10))
		q.write(b)
		want = append(want, b...)
		if i%2 == 0 {
			n := q.read(buf)
			got = append(got, buf[:n]...)
		}
	}
	for n := q.read(buf); n > 0; n = q.read(buf) {
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("interleaved: got %q, want %q", got, want)
	}
}

// A drop marker always sits on a line of its own, even when the gap falls
// in the middle of a line.
func TestDropMarkerOnItsOwnLine(t *testing.T) {
	tests := []struct {
		name   string
		before string // taken before the drop
		after  string // left in the ring after the drop
		want   string
	}{
		{"gap at line start", "one\n", "three\n", "[runphi: dropped 5 bytes of console output]\nthree\n"},
		{"gap mid-line", "one\ntw", "ree\n", "\n[runphi: dropped 5 bytes of console output]\nree\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPump(nil, nil, 64, time.Second, false, nil)
			buf := make([]byte, 0, 256)
			p.ring.write([]byte(tt.before))
			p.takeLocked(buf)
			p.ring.write([]byte(tt.after))
			p.dropped = 5
			if got := string(p.takeLocked(buf)); got != tt.want {
				t.Errorf("took %q, want %q", got, tt.want)
			}
		})
	}
}

// sizeRecorder is a console that always has more output than asked for and
// records how much each Read asked for.
type sizeRecorder struct {
	sizes chan int
}

func (r *sizeRecorder) Read(p []byte) (int, error) {
	if len(r.sizes) == cap(r.sizes) {
		return 0, io.EOF
	}
	r.sizes <- len(p)
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func (r *sizeRecorder) Close() error { return nil }

// An idle partition keeps its pump for its whole life, so the pump starts
// with small buffers; a flood grows its reads to full chunks within a few
// reads (the console throughput depends on that), and no further.
func TestPumpReadsGrowUnderAFlood(t *testing.T) {
	src := &sizeRecorder{sizes: make(chan int, 12)}
	p := newPump(src, nil, 1<<20, time.Second, false, nil)
	p.start()
	<-p.readDone
	close(src.sizes)
	var sizes []int
	for n := range src.sizes {
		sizes = append(sizes, n)
	}
	if sizes[0] != firstChunk {
		t.Errorf("first read asked for %d bytes, want %d (small while idle)", sizes[0], firstChunk)
	}
	for i := 1; i < len(sizes); i++ {
		want := min(2*sizes[i-1], chunkSize)
		if sizes[i] != want {
			t.Fatalf("read sizes %v: read %d asked for %d, want %d", sizes, i, sizes[i], want)
		}
	}
	if last := sizes[len(sizes)-1]; last != chunkSize {
		t.Errorf("read sizes %v never reached chunkSize %d", sizes, chunkSize)
	}
}
