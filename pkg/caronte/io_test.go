package caronte

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// duplexConsole is a bidirectional cell console: output from a pipe the
// test writes, input into a pipe the test reads.
type duplexConsole struct {
	*io.PipeReader
	in *io.PipeWriter
}

func (d duplexConsole) Write(p []byte) (int, error) { return d.in.Write(p) }

func (d duplexConsole) Close() error {
	d.in.Close()
	return d.PipeReader.Close()
}

// newDuplexCell is a fake cell whose console takes input; reading the
// returned reader gets what caronte sent the inmate.
func newDuplexCell() (*fakeCell, *io.PipeReader) {
	cell := newFakeCell()
	inR, inW := io.Pipe()
	cell.console = duplexConsole{PipeReader: cell.consoleR, in: inW}
	return cell, inR
}

// A reader slower than the console loses nothing: while it makes progress
// the pump waits for it instead of dropping, and the console feels the
// backpressure (here the fake inmate's pipe write blocks).
func TestSlowReaderLossless(t *testing.T) {
	cell := newFakeCell()
	stdio := fifos(t)
	opts := fastOptions()
	opts.ConsoleBuffer = 64 << 10
	p := newWithin(t, cell, stdio, opts, time.Second)
	f, err := os.OpenFile(stdio.Stdout, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
			time.Sleep(time.Millisecond) // about 4 MB/s: far slower than the inmate
		}
		got <- b.Bytes()
	}()
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	for i := range 20000 { // 600 kB, ten times the buffer
		fmt.Fprintf(&want, "line %024d\n", i)
	}
	if _, err := cell.consoleW.Write(want.Bytes()); err != nil {
		t.Fatal(err)
	}
	cell.set(jailhouse.StateShutDown)
	waitExit(t, p, 10*time.Second)
	if b := recvWithin(t, got, 10*time.Second, "stdout"); !bytes.Equal(b, want.Bytes()) {
		t.Errorf("slow reader got %d bytes, want all %d intact; tail %q", len(b), want.Len(), tail(b))
	}
}

// With a terminal the inmate's newlines reach the client as CRLF, as a
// pty's ONLCR makes them; markers are translated too.
func TestTerminalOutput(t *testing.T) {
	cell := newFakeCell()
	stdio := fifos(t)
	stdio.Terminal = true
	p := newWithin(t, cell, stdio, fastOptions(), time.Second)
	stdout := readFIFO(t, stdio.Stdout)
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	io.WriteString(cell.consoleW, "uart:~$ hello\nworld\r\n")
	cell.set(jailhouse.StateShutDown)
	waitExit(t, p, 5*time.Second)
	if got, want := string(recvWithin(t, stdout, time.Second, "stdout")), "uart:~$ hello\r\nworld\r\r\n"; got != want {
		t.Errorf("terminal output %q, want %q", got, want)
	}
}

func TestAppendONLCR(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""}, {"abc", "abc"}, {"\n", "\r\n"}, {"a\nb\n\n", "a\r\nb\r\n\r\n"}, {"x\r\n", "x\r\r\n"},
	} {
		if got := string(appendONLCR(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("appendONLCR(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// Stdin reaches a bidirectional console until CloseStdin; the partition
// keeps running after it.
func TestStdinReachesConsole(t *testing.T) {
	cell, input := newDuplexCell()
	stdio := fifos(t)
	p := newWithin(t, cell, stdio, fastOptions(), time.Second)
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	in, err := os.OpenFile(stdio.Stdin, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 64)
		n, _ := io.ReadAtLeast(input, b, len("typed\r"))
		got <- string(b[:n])
	}()
	// Closing the client's end is not the end of input (more writers may
	// come): caronte keeps reading.
	io.WriteString(in, "typed\r")
	select {
	case s := <-got:
		if s != "typed\r" {
			t.Errorf("inmate got %q, want %q", s, "typed\r")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stdin did not reach the console")
	}
	if err := p.CloseStdin(); err != nil {
		t.Fatalf("CloseStdin: %v", err)
	}
	if err := p.CloseStdin(); err != nil {
		t.Errorf("second CloseStdin: %v", err)
	}
	if _, ok := p.Exited(); ok {
		t.Error("CloseStdin ended the partition")
	}
}

// A console without input (output-only, or none) throws stdin away, so a
// client writing to it never blocks.
func TestStdinWithoutConsoleInput(t *testing.T) {
	cell := newFakeCell() // its console is a plain reader
	stdio := fifos(t)
	p := newWithin(t, cell, stdio, fastOptions(), time.Second)
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	in, err := os.OpenFile(stdio.Stdin, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	done := make(chan error, 1)
	go func() {
		_, err := in.Write(make([]byte, 1<<20)) // far more than a pipe holds
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("write stdin: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a client writing stdin blocked on a console that takes no input")
	}
}

// fakeRing plays /dev/jailhouse opened non-blocking: each Read returns the
// next queued chunk or error, and io.EOF ("nothing new") when none is
// queued.
type fakeRing struct {
	mu     sync.Mutex
	reads  []any // []byte or error
	closed bool
}

func (r *fakeRing) queue(items ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads = append(r.reads, items...)
}

func (r *fakeRing) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, os.ErrClosed
	}
	if len(r.reads) == 0 {
		return 0, io.EOF
	}
	item := r.reads[0]
	r.reads = r.reads[1:]
	if err, ok := item.(error); ok {
		return 0, err
	}
	return copy(p, item.([]byte)), nil
}

func (r *fakeRing) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

// The owner of the virtual console gets its own lines in order; the
// hypervisor's lines go to the log; an overrun becomes a marked line; what
// the ring held before the partition is skipped.
func TestHVConsole(t *testing.T) {
	tests := []struct {
		name   string
		before []any // in the ring when the console is opened
		reads  []any
		want   string
		logged []string // hypervisor lines in the log
	}{
		{
			name:   "skips the old ring, filters hypervisor lines",
			before: []any{[]byte("Created cell \"old\"\nold owner's line\n")},
			reads: []any{
				[]byte("Started cell \"p\"\nhello\n"),
				[]byte("Page pool usage after cell creation: mem 53/911, remap 20/131072\n"),
				[]byte("world\n"),
			},
			want:   "hello\nworld\n",
			logged: []string{`Started cell "p"`, "Page pool usage after cell creation: mem 53/911, remap 20/131072"},
		},
		{
			name:   "a line split across reads is one line",
			reads:  []any{[]byte("Closing ce"), []byte("ll \"q\"\nmine\n")},
			want:   "mine\n",
			logged: []string{`Closing cell "q"`},
		},
		{
			name:  "an overrun is a marked line of its own",
			reads: []any{[]byte("par"), []byte(jailhouse.MissedLine(4242)), []byte("after\n")},
			want:  "par\n[runphi: the virtual console overran, 4242 bytes of console output were lost]\nafter\n",
		},
		{
			name:  "a prompt without newline comes out after a poll",
			reads: []any{[]byte("uart:~$ ")},
			want:  "uart:~$ ",
		},
		{
			name:  "a disabled hypervisor is waited out",
			reads: []any{unix.EAGAIN, unix.EAGAIN, []byte("back\n")},
			want:  "back\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, hook := logtest.NewNullLogger()
			logger.SetLevel(logrus.DebugLevel)
			src := &fakeRing{}
			src.queue(tt.before...)
			c := newHVConsole(src, logrus.NewEntry(logger), 10*time.Millisecond)
			defer c.Close()
			src.queue(tt.reads...)
			var got []byte
			buf := make([]byte, 1024)
			deadline := time.Now().Add(5 * time.Second)
			for len(got) < len(tt.want) && time.Now().Before(deadline) {
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				got = append(got, buf[:n]...)
			}
			if string(got) != tt.want {
				t.Errorf("stream %q, want %q", got, tt.want)
			}
			var logged []string
			for _, e := range hook.AllEntries() {
				if line, ok := e.Data["line"]; ok {
					logged = append(logged, line.(string))
				}
			}
			if strings.Join(logged, "|") != strings.Join(tt.logged, "|") {
				t.Errorf("logged hypervisor lines %q, want %q", logged, tt.logged)
			}
		})
	}
	t.Run("a read error other than EAGAIN is returned", func(t *testing.T) {
		src := &fakeRing{}
		c := newHVConsole(src, logrus.NewEntry(logrus.New()), time.Millisecond)
		src.queue(unix.EPERM)
		if _, err := c.Read(make([]byte, 10)); !errors.Is(err, unix.EPERM) {
			t.Errorf("Read = %v, want EPERM", err)
		}
	})
	t.Run("Close ends a waiting read", func(t *testing.T) {
		c := newHVConsole(&fakeRing{}, logrus.NewEntry(logrus.New()), time.Hour)
		done := make(chan error, 1)
		go func() { _, err := c.Read(make([]byte, 10)); done <- err }()
		time.Sleep(20 * time.Millisecond)
		c.Close()
		select {
		case err := <-done:
			if err != io.EOF {
				t.Errorf("Read after Close = %v, want io.EOF", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end the read")
		}
	})
}
