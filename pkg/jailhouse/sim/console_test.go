package sim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

func readOnce(t *testing.T, r io.Reader, size int) (string, error) {
	t.Helper()
	buf := make([]byte, size)
	n, err := r.Read(buf)
	return string(buf[:n]), err
}

func TestConsoleErrnos(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, d *Driver)
		want  unix.Errno
	}{
		{"disabled", func(t *testing.T, d *Driver) {}, unix.EAGAIN},
		{"enabled without the virtual console flag", func(t *testing.T, d *Driver) {
			s := testSystem(t)
			s.Flags = 0
			must(t, d.Enable(marshal(t, s)))
		}, unix.EPERM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := openSim(t, Options{})
			tc.setup(t, d)
			r, err := d.OpenConsole(false)
			must(t, err)
			defer r.Close()
			_, err = readOnce(t, r, 128)
			var ioctlErr *jailhouse.IoctlError
			if !errors.Is(err, tc.want) || !errors.As(err, &ioctlErr) || ioctlErr.Request != jailhouse.RequestConsoleRead {
				t.Errorf("read: %v, want %v from %s", err, tc.want, jailhouse.RequestConsoleRead)
			}
		})
	}
}

func TestConsoleMessagesInOrder(t *testing.T) {
	d := enabled(t, Options{})
	run(t, d, testCell(t, "c", []int{2, 3}), "exit")
	must(t, d.DestroyCell("c"))
	text := hvConsoleText(t, d)
	want := []string{
		"\nInitializing Jailhouse hypervisor " + Version + " on CPU 0\n",
		"Code location: 0x",
		"Page pool usage after early setup: mem ",
		"Initializing processors:\n",
		" CPU 0... OK\n",
		" CPU 15... OK\n",
		"Initializing unit: irqchip\n",
		"Initializing unit: PCI\n",
		"Adding virtual PCI device 00:01.0 to cell \"qemu-arm64\"\n",
		"Page pool usage after late setup: ",
		"Activating hypervisor\n",
		"Created cell \"c\"\n",
		"Page pool usage after cell creation: ",
		"Cell \"c\" can be loaded\n",
		"Started cell \"c\"\n",
		"Closing cell \"c\"\n",
		"Page pool usage after cell destruction: ",
	}
	pos := 0
	for _, w := range want {
		i := strings.Index(text[pos:], w)
		if i < 0 {
			t.Fatalf("console lacks %q after offset %d:\n%s", w, pos, text)
		}
		pos += i + len(w)
	}
	for line := range strings.Lines(strings.TrimPrefix(text, "\n")) {
		if !jailhouse.IsHypervisorMessage(line) {
			t.Errorf("line %q is not recognised as a hypervisor message", line)
		}
	}
}

func TestConsoleRing(t *testing.T) {
	clk := newFakeClock()
	d := enabled(t, Options{Now: clk.Now})
	// 100 lines of 40 bytes overflow the 2048-byte ring.
	line := strings.Repeat("x", 39)
	run(t, d, testCell(t, "c", []int{2}, permitted), "loop 100", "print "+line, "end")

	var tail uint32
	must(t, d.update(func(tx *tx) error { tail = tx.s.Ring.Tail; return nil }, nil))
	if tail <= ringSize {
		t.Fatalf("ring tail %d, want more than %d", tail, ringSize)
	}

	t.Run("a fresh reader first gets the missed line, then the last 2048 bytes", func(t *testing.T) {
		r, err := d.OpenConsole(false)
		must(t, err)
		defer r.Close()
		got, err := readOnce(t, r, 4096)
		must(t, err)
		if want := fmt.Sprintf("<missed %d bytes of console log>\n", tail-ringSize); got != want {
			t.Fatalf("first read %q, want %q", got, want)
		}
		got, err = readOnce(t, r, 4096)
		must(t, err)
		sysfsConsole, err := os.ReadFile(filepath.Join(d.SysfsRoot(), "console"))
		must(t, err)
		if len(got) != ringSize || got != string(sysfsConsole) {
			t.Errorf("second read has %d bytes; want the 2048 the sysfs console file shows", len(got))
		}
		if !strings.HasSuffix(got, line+"\n") {
			t.Errorf("ring does not end with the last print: %q", got[len(got)-60:])
		}
		if _, err := readOnce(t, r, 4096); err != io.EOF {
			t.Errorf("read with nothing new: %v, want io.EOF (the driver's 0)", err)
		}
	})

	t.Run("small reads advance the head by what they return", func(t *testing.T) {
		r, err := d.OpenConsole(false)
		must(t, err)
		defer r.Close()
		if _, err := readOnce(t, r, 4096); err != nil { // the missed line
			t.Fatal(err)
		}
		var b strings.Builder
		for {
			s, err := readOnce(t, r, 100)
			if err == io.EOF {
				break
			}
			must(t, err)
			if len(s) > 100 {
				t.Fatalf("read returned %d bytes into a 100-byte buffer", len(s))
			}
			b.WriteString(s)
		}
		sysfsConsole, err := os.ReadFile(filepath.Join(d.SysfsRoot(), "console"))
		must(t, err)
		if b.String() != string(sysfsConsole) {
			t.Errorf("reads of 100 bytes give %d bytes, not the ring's content", b.Len())
		}
	})

	t.Run("the missed line is cut to the reader's buffer", func(t *testing.T) {
		r, err := d.OpenConsole(false)
		must(t, err)
		defer r.Close()
		got, err := readOnce(t, r, 8)
		must(t, err)
		if got != "<missed " {
			t.Errorf("read of 8 bytes %q, want %q", got, "<missed ")
		}
	})
}

func TestConsoleFollow(t *testing.T) {
	clk := newFakeClock()
	d := enabled(t, Options{Now: clk.Now})
	r, err := d.OpenConsole(true)
	must(t, err)
	defer r.Close()
	// Catch up with the enable messages.
	if _, err := readOnce(t, r, 4096); err != nil {
		t.Fatal(err)
	}
	run(t, d, testCell(t, "c", []int{2}, permitted), "sleep 1s", "print late")
	got, err := readOnce(t, r, 4096)
	must(t, err)
	if !strings.Contains(got, `Started cell "c"`) {
		t.Fatalf("follow read %q, want the cell messages", got)
	}
	type result struct {
		s   string
		err error
	}
	res := make(chan result, 1)
	go func() {
		buf := make([]byte, 4096)
		n, err := r.Read(buf)
		res <- result{string(buf[:n]), err}
	}()
	select {
	case got := <-res:
		t.Fatalf("follow read returned %q, %v before there was anything new", got.s, got.err)
	case <-time.After(300 * time.Millisecond):
	}
	clk.Advance(time.Second)
	select {
	case got := <-res:
		if got.err != nil || got.s != "late\n" {
			t.Errorf("follow read %q, %v; want %q", got.s, got.err, "late\n")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow read did not return the inmate's print")
	}

	// Close unblocks a waiting follow read.
	go func() {
		buf := make([]byte, 10)
		n, err := r.Read(buf)
		res <- result{string(buf[:n]), err}
	}()
	time.Sleep(150 * time.Millisecond)
	r.Close()
	select {
	case got := <-res:
		if got.err != io.EOF {
			t.Errorf("read after Close: %q, %v; want io.EOF", got.s, got.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock a follow read")
	}
}

func TestConsoleAfterDisable(t *testing.T) {
	d := enabled(t, Options{})
	r, err := d.OpenConsole(false)
	must(t, err)
	defer r.Close()
	if _, err := io.ReadAll(r); err != nil {
		t.Fatal(err)
	}
	create(t, d, testCell(t, "c", []int{2}))
	must(t, d.Disable())

	// A reader that was open reads the rest of last_console, then sees
	// the hypervisor gone.
	rest, err := io.ReadAll(r)
	must(t, err)
	if !strings.HasPrefix(string(rest), "Created cell \"c\"\n") || !strings.HasSuffix(string(rest), " Releasing CPU 15\n") {
		t.Errorf("open reader after disable got %q, want the messages from create to the last Releasing CPU", rest)
	}
	if _, err := readOnce(t, r, 128); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("read after last_console: %v, want EAGAIN", err)
	}

	// A new reader gets the whole snapshot once.
	text := hvConsoleText(t, d)
	if !strings.Contains(text, "Initializing Jailhouse hypervisor") || !strings.Contains(text, "Shutting down hypervisor\n") {
		t.Errorf("a new reader after disable got %q, want the saved console", text)
	}

	// A following reader survives disable and re-enable.
	f, err := d.OpenConsole(true)
	must(t, err)
	defer f.Close()
	if _, err := readOnce(t, f, 4096); err != nil { // last_console
		t.Fatal(err)
	}
	// The reader must wait through the disabled phase: that is when the
	// driver resets its head to 0. (A reader that only comes back after
	// the re-enable gets a "missed" line of an underflowed count, as from
	// the real driver.)
	got := make(chan string, 1)
	go func() {
		s, err := readOnce(t, f, 4096)
		if err != nil {
			t.Error(err)
		}
		got <- s
	}()
	time.Sleep(3 * consolePoll)
	must(t, d.Enable(marshal(t, testSystem(t))))
	select {
	case s := <-got:
		if !strings.HasPrefix(s, "\nInitializing Jailhouse hypervisor") {
			t.Errorf("follow reader after re-enable got %q, want the new boot messages from the start", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow reader did not see the re-enable")
	}
}

func TestCellConsole(t *testing.T) {
	t.Run("opened before start, ends after exit", func(t *testing.T) {
		clk := newFakeClock()
		d := enabled(t, Options{Now: clk.Now})
		create(t, d, testCell(t, "c", []int{2}))
		r, err := d.OpenCellConsole("c")
		must(t, err)
		defer r.Close()
		must(t, d.LoadCell("c", script("print one", "sleep 1s", "print two", "exit")))
		must(t, d.StartCell("c"))
		done := make(chan string, 1)
		go func() {
			b, err := io.ReadAll(r)
			if err != nil {
				t.Error(err)
			}
			done <- string(b)
		}()
		time.Sleep(100 * time.Millisecond)
		clk.Advance(time.Second)
		select {
		case got := <-done:
			if got != "one\ntwo\n" {
				t.Errorf("cell console %q, want %q", got, "one\ntwo\n")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("cell console did not end after the inmate exited")
		}
	})
	t.Run("ends after destroy with everything printed", func(t *testing.T) {
		d := enabled(t, Options{})
		run(t, d, testCell(t, "c", []int{2}), "print a", "print b", "sleep 1h")
		r, err := d.OpenCellConsole("c")
		must(t, err)
		defer r.Close()
		must(t, d.DestroyCell("c"))
		b, err := io.ReadAll(r)
		must(t, err)
		if string(b) != "a\nb\n" {
			t.Errorf("cell console after destroy %q, want %q", b, "a\nb\n")
		}
	})
	t.Run("goes to the ring only with VIRTUAL_CONSOLE_PERMITTED", func(t *testing.T) {
		d := enabled(t, Options{})
		run(t, d, testCell(t, "quiet", []int{2}), "print private")
		run(t, d, testCell(t, "loud", []int{3}, permitted), "print public")
		text := hvConsoleText(t, d)
		if strings.Contains(text, "private") || !strings.Contains(text, "public\n") {
			t.Errorf("ring %q: want the permitted cell's print only", text)
		}
		if got := cellOutput(t, d, "quiet"); got != "private\n" {
			t.Errorf("cell console of quiet %q, want %q", got, "private\n")
		}
	})
	t.Run("VIRTUAL_CONSOLE_ACTIVE implies PERMITTED", func(t *testing.T) {
		d := enabled(t, Options{})
		run(t, d, testCell(t, "c", []int{2}, func(c *jailhouse.Cell) { c.Flags |= jailhouse.CellVirtualConsoleActive }), "print active")
		if text := hvConsoleText(t, d); !strings.Contains(text, "active\n") {
			t.Errorf("ring %q lacks the print of a cell with VIRTUAL_CONSOLE_ACTIVE", text)
		}
	})
	t.Run("Close unblocks a read", func(t *testing.T) {
		d := enabled(t, Options{})
		run(t, d, testCell(t, "c", []int{2}), "sleep 1h")
		r, err := d.OpenCellConsole("c")
		must(t, err)
		errc := make(chan error, 1)
		go func() {
			_, err := readOnce(t, r, 10)
			errc <- err
		}()
		time.Sleep(60 * time.Millisecond)
		must(t, r.Close())
		select {
		case err := <-errc:
			if err != io.EOF {
				t.Errorf("read after Close: %v, want io.EOF", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not unblock the read")
		}
	})
	t.Run("a new cell of the same name has a new stream", func(t *testing.T) {
		d := enabled(t, Options{})
		run(t, d, testCell(t, "c", []int{2}), "print old")
		must(t, d.DestroyCell("c"))
		run(t, d, testCell(t, "c", []int{2}), "print new", "exit")
		r, err := d.OpenCellConsole("c")
		must(t, err)
		defer r.Close()
		b, err := io.ReadAll(r)
		must(t, err)
		if string(b) != "new\n" {
			t.Errorf("console of the new cell %q, want %q", b, "new\n")
		}
	})
	t.Run("unknown cell", func(t *testing.T) {
		d := enabled(t, Options{})
		if _, err := d.OpenCellConsole("nope"); !errors.Is(err, jailhouse.ErrCellNotFound) {
			t.Errorf("OpenCellConsole(nope): %v, want ErrCellNotFound", err)
		}
	})
}
