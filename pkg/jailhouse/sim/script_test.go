package sim

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/runphi/runphi/pkg/jailhouse"
)

func TestParseScriptErrors(t *testing.T) {
	tests := []struct {
		name   string
		script string
		line   int
		msg    string
	}{
		{"unknown command", "#!runphi-sim\nprint a\nprnt b\n", 3, `unknown command "prnt"`},
		{"sleep without a unit", "#!runphi-sim\nsleep 5\n", 2, "not a Go duration"},
		{"negative sleep", "#!runphi-sim\nsleep -1s\n", 2, "negative"},
		{"loop without end", "#!runphi-sim\nloop 2\nprint a\nloop 3\nend\n", 2, "loop without end"},
		{"end without loop", "#!runphi-sim\nprint a\nend\n", 3, "end without loop"},
		{"bad loop count", "#!runphi-sim\nloop many\nend\n", 2, "not a count"},
		{"negative loop count", "#!runphi-sim\nloop -2\nend\n", 2, "not a count"},
		{"bad policy", "#!runphi-sim\non-shutdown maybe\n", 2, `"maybe"`},
		{"exit with an argument", "#!runphi-sim\nexit 3\n", 2, "takes no argument"},
		{"missing magic", "print a\n", 1, "first line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseScript([]byte(tc.script))
			var se *ScriptError
			if !errors.As(err, &se) {
				t.Fatalf("parseScript: %v, want a *ScriptError", err)
			}
			if se.Line != tc.line || !strings.Contains(se.Msg, tc.msg) {
				t.Errorf("error at line %d %q, want line %d containing %q", se.Line, se.Msg, tc.line, tc.msg)
			}
		})
	}
}

func TestParseScriptAccepts(t *testing.T) {
	// Comments, blank lines, indentation, CRLF and the NUL that
	// "jailhouse cell load -s" appends are all fine.
	src := "#!runphi-sim\r\n# a comment\r\n\r\n  loop forever\r\n\tprint   two  spaces\r\n\tsleep 1.5s\r\n  end\r\n\x00garbage"
	ops, err := parseScript([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []opKind{opLoop, opPrint, opSleep, opEnd}
	if len(ops) != len(want) {
		t.Fatalf("ops = %+v, want kinds %v", ops, want)
	}
	for i, k := range want {
		if ops[i].Kind != k {
			t.Errorf("op %d is %s, want %s", i, ops[i].Kind, k)
		}
	}
	if ops[1].Text != "  two  spaces" {
		t.Errorf("print text = %q, want the text after one separator, verbatim", ops[1].Text)
	}
	if ops[2].Dur != int64(1500*time.Millisecond) || ops[0].N != -1 {
		t.Errorf("sleep %d, loop count %d; want 1.5s and forever", ops[2].Dur, ops[0].N)
	}
}

// cellOutput is what a cell printed and nobody consumed yet, read from
// its console link without consuming it.
func cellOutput(t *testing.T, d *Driver, name string) string {
	t.Helper()
	var out []byte
	var serial uint64
	var tail uint32
	must(t, d.update(func(tx *tx) error {
		c := tx.s.cell(name)
		if c == nil {
			return fmt.Errorf("no cell %q", name)
		}
		serial, tail = c.Serial, c.Con.Tail
		return nil
	}, func() error {
		// After the commit: the ring holds every byte the state counts.
		f, err := os.Open(d.conPath(serial))
		if err != nil {
			return err
		}
		defer f.Close()
		root, err := readConHeader(f, conPeerRoot)
		if err != nil {
			return err
		}
		out = make([]byte, tail-root.PeerHead)
		return readRing(f, conPeerInmate, root.PeerHead, out)
	}))
	return string(out)
}

func TestScriptTimeline(t *testing.T) {
	clk := newFakeClock()
	d := enabled(t, Options{Now: clk.Now})
	run(t, d, testCell(t, "c", []int{2}),
		"print boot",
		"loop 3",
		"  print tick",
		"  sleep 1s",
		"end",
		"lock",
		"print locked",
		"sleep 1s",
		"unlock",
		"print done",
		"exit",
		"print never",
	)
	steps := []struct {
		advance time.Duration
		out     string
		state   jailhouse.CellState
	}{
		{0, "boot\ntick\n", jailhouse.StateRunning},
		{999 * time.Millisecond, "boot\ntick\n", jailhouse.StateRunning},
		{time.Millisecond, "boot\ntick\ntick\n", jailhouse.StateRunning},
		{time.Second, "boot\ntick\ntick\ntick\n", jailhouse.StateRunning},
		{time.Second, "boot\ntick\ntick\ntick\nlocked\n", jailhouse.StateRunningLocked},
		{time.Second, "boot\ntick\ntick\ntick\nlocked\ndone\n", jailhouse.StateShutDown},
		{time.Hour, "boot\ntick\ntick\ntick\nlocked\ndone\n", jailhouse.StateShutDown},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		if got := stateOf(t, d, "c"); got != s.state {
			t.Errorf("step %d: state %v, want %v", i, got, s.state)
		}
		if got := cellOutput(t, d, "c"); got != s.out {
			t.Errorf("step %d: output %q, want %q", i, got, s.out)
		}
	}
}

func TestScriptEnds(t *testing.T) {
	tests := []struct {
		name   string
		script []string
		state  jailhouse.CellState
		out    string
	}{
		{"exit shuts the cell down", []string{"print bye", "exit"}, jailhouse.StateShutDown, "bye\n"},
		{"fail fails the cell", []string{"fail", "print never"}, jailhouse.StateFailed, ""},
		{"running off the end keeps the cell running", []string{"print idle"}, jailhouse.StateRunning, "idle\n"},
		{"nested loops multiply", []string{"loop 2", "loop 3", "print x", "end", "print y", "end"}, jailhouse.StateRunning, "x\nx\nx\ny\nx\nx\nx\ny\n"},
		{"loop 0 skips its body", []string{"loop 0", "print x", "end", "print y"}, jailhouse.StateRunning, "y\n"},
		{"a bad script crashes the inmate", []string{"print a", "bogus"}, jailhouse.StateFailed, "runphi-sim: inmate crashed: runphi-sim script line 3: unknown command \"bogus\"\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := newFakeClock()
			d := enabled(t, Options{Now: clk.Now})
			run(t, d, testCell(t, "c", []int{2}), tc.script...)
			if got := stateOf(t, d, "c"); got != tc.state {
				t.Errorf("state %v, want %v", got, tc.state)
			}
			if got := cellOutput(t, d, "c"); got != tc.out {
				t.Errorf("output %q, want %q", got, tc.out)
			}
		})
	}
}

func TestScriptLoopForeverIsBounded(t *testing.T) {
	// A loop that never sleeps must not hang a transaction: each one runs
	// a bounded number of steps and the inmate catches up later.
	clk := newFakeClock()
	d := enabled(t, Options{Now: clk.Now})
	create(t, d, testCell(t, "c", []int{2}))
	must(t, d.LoadCell("c", script("loop forever", "print spin", "end")))
	done := make(chan error, 1)
	go func() {
		if err := d.StartCell("c"); err != nil {
			done <- err
			return
		}
		_, err := d.Cells()
		done <- err
	}()
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("a transaction with a spinning inmate did not return")
	}
	out := cellOutput(t, d, "c")
	n := strings.Count(out, "spin\n")
	if n == 0 || n > 4*maxStepsPerAdvance {
		t.Errorf("%d lines after a few transactions, want between 1 and %d", n, 4*maxStepsPerAdvance)
	}
}

func TestScriptEntryImage(t *testing.T) {
	// The first CPU starts at cpu_reset_address: a script there wins over
	// one loaded elsewhere; with no script there, the first script loaded
	// runs.
	tests := []struct {
		name   string
		images []jailhouse.Image
		out    string
	}{
		{"script at the reset address", []jailhouse.Image{
			{Data: []byte(ScriptMagic + "\nprint elsewhere\n"), Target: 0x8000},
			{Data: []byte(ScriptMagic + "\nprint entry\n"), Target: 0},
		}, "entry\n"},
		{"opaque payload at the reset address", []jailhouse.Image{
			{Data: []byte("\x7fELF..."), Target: 0},
			{Data: []byte(ScriptMagic + "\nprint first\n"), Target: 0x8000},
			{Data: []byte(ScriptMagic + "\nprint second\n"), Target: 0x9000},
		}, "first\n"},
		{"a later image overwrites the script", []jailhouse.Image{
			{Data: []byte(ScriptMagic + "\nprint gone\n"), Target: 0},
			{Data: []byte("\x7fELF"), Target: 0x4},
		}, ""},
		{"opaque payload only", []jailhouse.Image{{Data: []byte("\x7fELF"), Target: 0}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := enabled(t, Options{})
			create(t, d, testCell(t, "c", []int{2}))
			must(t, d.LoadCell("c", tc.images...))
			must(t, d.StartCell("c"))
			if got := cellOutput(t, d, "c"); got != tc.out {
				t.Errorf("output %q, want %q", got, tc.out)
			}
			if got := stateOf(t, d, "c"); got != jailhouse.StateRunning {
				t.Errorf("state %v, want running", got)
			}
		})
	}
}

func TestScriptPolicyChangesWhileWaiting(t *testing.T) {
	// A request to a cell that ignores it waits; when the inmate later
	// exits (a shut-down cell counts as having accepted), it goes ahead.
	clk := newFakeClock()
	d := enabled(t, Options{Now: clk.Now, ReplyTimeout: 10 * time.Second})
	run(t, d, testCell(t, "c", []int{2}), "on-shutdown ignore", "sleep 1s", "exit")
	errc := make(chan error, 1)
	go func() { errc <- d.DestroyCell("c") }()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-errc:
		t.Fatalf("destroy returned %v while the cell ignored the request", err)
	default:
	}
	clk.Advance(time.Second)
	select {
	case err := <-errc:
		must(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("destroy did not finish after the inmate exited")
	}
}

func TestRestartRunsTheScriptAgain(t *testing.T) {
	clk := newFakeClock()
	d := enabled(t, Options{Now: clk.Now})
	run(t, d, testCell(t, "c", []int{2}), "print hello", "exit")
	must(t, d.StartCell("c"))
	if got := cellOutput(t, d, "c"); got != "hello\nhello\n" {
		t.Errorf("output after a restart %q, want the script's output twice", got)
	}
}

// CheckScript is what `runphi image build` runs on a payload: the parse of
// CELL_START, so a script the inmate would crash on is refused at build
// time with the same message, and an opaque payload is left alone.
func TestCheckScript(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    string // "" when the payload is accepted
	}{
		{"a good script", "#!runphi-sim\nprint up\nsleep 1s\nexit\n", ""},
		{"an opaque payload", "\x7fELF binary bytes", ""},
		{"a script with CRLF lines", "#!runphi-sim\r\nprint up\r\n", ""},
		{"a script cut at its NUL", "#!runphi-sim\nprint up\n\x00garbage\nnot a command\n", ""},
		{"sleep without a unit", "#!runphi-sim\nprint a\n# wait\nsleep 1\n", `runphi-sim script line 4: sleep: "1" is not a Go duration`},
		{"loop without end", "#!runphi-sim\nloop 2\n", "runphi-sim script line 2: loop without end"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckScript([]byte(tc.payload))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckScript: %v", err)
				}
				return
			}
			var se *ScriptError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckScript = %v, want a *ScriptError saying %q", err, tc.want)
			}
		})
	}
}

// trickleInmate is a console that takes at most room bytes per run, as a
// ring its reader drains slowly does.
type trickleInmate struct {
	room int
	out  strings.Builder
}

func (in *trickleInmate) write(s string) int {
	n := min(len(s), in.room)
	in.out.WriteString(s[:n])
	in.room -= n
	return n
}
func (in *trickleInmate) readLine(*program) (string, bool) { return "", false }
func (in *trickleInmate) state(opKind)                     {}
func (in *trickleInmate) setPolicy(string)                 {}
func (in *trickleInmate) sleep()                           {}

// An inmate whose console is full waits at its print and goes on where it
// stopped, the line's newline included: a console with room for exactly
// the text leaves only the newline pending, and nothing is lost, doubled
// or reordered however the room falls.
func TestScriptPrintWaitsForTheConsole(t *testing.T) {
	ops, err := parseScript([]byte("#!runphi-sim\nprint abc\nprint \nprint de\nexit\n"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "abc\n\nde\n"
	for _, rooms := range [][]int{{3, 1, 1, 3}, {1, 1, 1, 1, 0, 1, 1, 1, 1}, {4, 0, 1, 2, 1}, {8}} {
		t.Run(fmt.Sprint(rooms), func(t *testing.T) {
			p := &program{Ops: ops}
			in := &trickleInmate{}
			now := time.Unix(0, 1)
			for i, room := range rooms {
				in.room = room
				p.run(now, in)
				if i < len(rooms)-1 && p.done() {
					t.Fatalf("done after %d runs with %q written, before the console took all of it", i+1, in.out.String())
				}
				if !p.done() {
					if _, timed := p.wake(now); timed {
						t.Fatalf("run %d: an inmate waiting for the console says it waits for time", i+1)
					}
				}
			}
			if !p.done() || in.out.String() != want {
				t.Errorf("output %q, done %v; want %q and the program ended", in.out.String(), p.done(), want)
			}
		})
	}
}
