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
	run(t, d, testCell(t, "c", []int{2}, active), "loop 100", "print "+line, "end")

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
	run(t, d, testCell(t, "c", []int{2}, active), "sleep 1s", "print late")
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
	t.Run("an ACTIVE cell prints to the hypervisor ring, others to their ivshmem console", func(t *testing.T) {
		d := enabled(t, Options{})
		run(t, d, testCell(t, "quiet", []int{2}), "print private")
		run(t, d, testCell(t, "allowed", []int{4}, permitted), "print permitted-only")
		run(t, d, testCell(t, "loud", []int{3}, active), "print public")
		text := hvConsoleText(t, d)
		if strings.Contains(text, "private") || strings.Contains(text, "permitted-only") || !strings.Contains(text, "public\n") {
			t.Errorf("ring %q: want the ACTIVE cell's print only (PERMITTED alone does not make an inmate use it)", text)
		}
		for name, want := range map[string]string{"quiet": "private\n", "allowed": "permitted-only\n", "loud": ""} {
			if got := cellOutput(t, d, name); got != want {
				t.Errorf("ivshmem console of %s = %q, want %q", name, got, want)
			}
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

// openCon opens a cell's console as the read-write stream the root sees.
func openCon(t testing.TB, d *Driver, name string) io.ReadWriteCloser {
	t.Helper()
	r, err := d.OpenCellConsole(name)
	must(t, err)
	t.Cleanup(func() { r.Close() })
	rw, ok := r.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("OpenCellConsole returned %T, which takes no input", r)
	}
	return rw
}

// readUntil reads r until the output has want as a suffix or d passes.
func readUntil(t *testing.T, r io.Reader, want string, d time.Duration) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		var b []byte
		buf := make([]byte, 4096)
		for !strings.HasSuffix(string(b), want) {
			n, err := r.Read(buf)
			b = append(b, buf[:n]...)
			if err != nil {
				break
			}
		}
		got <- string(b)
	}()
	select {
	case s := <-got:
		return s
	case <-time.After(d):
		t.Fatalf("no %q on the console within %v", want, d)
		return ""
	}
}

// Input written to a cell's console reaches the inmate: echo prints each
// line it reads, whichever newline the terminal sends.
func TestCellConsoleInput(t *testing.T) {
	tests := []struct {
		name   string
		script []string
		writes []string
		want   string
	}{
		{"one line", []string{"print ready", "echo", "print done", "exit"}, []string{"hello\n"}, "ready\nhello\ndone\n"},
		{"a terminal's CR", []string{"echo", "echo", "exit"}, []string{"typed\r", "second\r"}, "typed\nsecond\n"},
		{"CRLF is one line end", []string{"echo", "echo", "exit"}, []string{"a\r", "\nb\r\n"}, "a\nb\n"},
		{"a line split over writes", []string{"echo", "exit"}, []string{"ab", "c", "d\n"}, "abcd\n"},
		{"echo forever", []string{"echo forever"}, []string{"1\n2\n", "3\n"}, "1\n2\n3\n"},
		{"empty line", []string{"echo", "print after", "exit"}, []string{"\n"}, "\nafter\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := enabled(t, Options{})
			create(t, d, testCell(t, "c", []int{2}))
			con := openCon(t, d, "c")
			must(t, d.LoadCell("c", script(tt.script...)))
			must(t, d.StartCell("c"))
			for _, w := range tt.writes {
				if _, err := io.WriteString(con, w); err != nil {
					t.Fatalf("write %q: %v", w, err)
				}
			}
			if got := readUntil(t, con, tt.want, 5*time.Second); got != tt.want {
				t.Errorf("console = %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("input waits in the ring until the inmate reads it", func(t *testing.T) {
		clk := newFakeClock()
		d := enabled(t, Options{Now: clk.Now})
		create(t, d, testCell(t, "c", []int{2}))
		con := openCon(t, d, "c")
		must(t, d.LoadCell("c", script("sleep 1s", "echo", "exit")))
		must(t, d.StartCell("c"))
		if _, err := io.WriteString(con, "early\n"); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		if got := readUntil(t, con, "early\n", 5*time.Second); got != "early\n" {
			t.Errorf("console = %q, want the line written before the inmate read", got)
		}
	})
	t.Run("writing to a stopped inmate fails", func(t *testing.T) {
		d := enabled(t, Options{})
		create(t, d, testCell(t, "c", []int{2}))
		con := openCon(t, d, "c")
		must(t, d.LoadCell("c", script("exit")))
		must(t, d.StartCell("c"))
		// Fill the input ring: nobody takes it, and the inmate is gone.
		big := make([]byte, conRing+1)
		done := make(chan error, 1)
		go func() { _, err := con.Write(big); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, io.ErrClosedPipe) {
				t.Errorf("write to a stopped inmate: %v, want io.ErrClosedPipe", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("write to a stopped inmate blocked")
		}
	})
}

// floodScript prints n lines of width bytes (newline included) and exits.
func floodScript(n, width int) []string {
	return []string{fmt.Sprintf("loop %d", n), "print " + strings.Repeat("x", width-1), "end", "exit"}
}

// With a reader attached the inmate waits for it: many times the ring's
// size arrives complete.
func TestCellConsoleLossless(t *testing.T) {
	const lines, width = 50000, 100 // 5 MB, five times the ring
	d := enabled(t, Options{})
	create(t, d, testCell(t, "c", []int{2}))
	con := openCon(t, d, "c")
	must(t, d.LoadCell("c", script(floodScript(lines, width)...)))
	must(t, d.StartCell("c"))
	b, err := io.ReadAll(con)
	must(t, err)
	want := strings.Repeat(strings.Repeat("x", width-1)+"\n", lines)
	if string(b) != want {
		t.Errorf("read %d bytes, want %d intact lines (%d bytes)", len(b), lines, len(want))
	}
}

// With nobody reading, an inmate never blocks on its console: what the
// ring cannot hold is dropped and counted, and a reader that comes later
// learns how much before it reads what the ring kept.
func TestCellConsoleDropsWithoutReader(t *testing.T) {
	const lines, width = 15000, 100 // 1.5 MB, half again the ring
	d := enabled(t, Options{})
	run(t, d, testCell(t, "c", []int{2}), floodScript(lines, width)...)
	deadline := time.Now().Add(5 * time.Second)
	for stateOf(t, d, "c") != jailhouse.StateShutDown {
		if time.Now().After(deadline) {
			t.Fatal("the inmate blocked on a console nobody reads")
		}
		time.Sleep(10 * time.Millisecond)
	}
	con := openCon(t, d, "c")
	b, err := io.ReadAll(con)
	must(t, err)
	first, rest, _ := strings.Cut(string(b), "\n")
	kept := conRing // the ring fills to its last byte, mid-line
	wantDrop := fmt.Sprintf("dropped %d bytes", lines*width-kept)
	if !strings.Contains(first, wantDrop) {
		t.Errorf("first line %q, want a notice that it %s", first, wantDrop)
	}
	if len(rest) != kept || strings.Trim(rest, "x\n") != "" {
		t.Errorf("after the notice: %d bytes, want the %d the ring kept", len(rest), kept)
	}
}

// BenchmarkCellConsole measures how fast a scripted inmate's output comes
// through the simulated ivshmem console to one reader.
func BenchmarkCellConsole(b *testing.B) {
	const width = 1000
	d := enabled(b, Options{})
	create(b, d, testCell(b, "c", []int{2}))
	con := openCon(b, d, "c")
	must(b, d.LoadCell("c", script("loop forever", "print "+strings.Repeat("x", width-1), "end")))
	must(b, d.StartCell("c"))
	buf := make([]byte, 32<<10)
	b.SetBytes(width)
	b.ResetTimer()
	for total := 0; total < b.N*width; {
		n, err := con.Read(buf)
		must(b, err)
		total += n
	}
}
