package sim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// pollAnswers is everything a Driver answers to the polls that may skip a
// transaction, for one cell.
type pollAnswers struct {
	Enabled    bool
	Cells      []jailhouse.CellInfo
	Cell       jailhouse.CellInfo
	CellErr    string
	Gone, Done bool // the cell console's look at its cell
}

// answers polls d (with con, a console of the cell, when not nil).
func answers(t *testing.T, d *Driver, name string, con *cellConsole) pollAnswers {
	t.Helper()
	var a pollAnswers
	var err error
	a.Enabled, err = d.Enabled()
	must(t, err)
	a.Cells, err = d.Cells()
	must(t, err)
	a.Cell, err = d.Cell(name)
	if err != nil {
		if !errors.Is(err, jailhouse.ErrCellNotFound) {
			t.Fatal(err)
		}
		a.CellErr = err.Error()
	}
	if con != nil {
		a.Gone, a.Done, err = con.cellStatus()
		must(t, err)
	}
	return a
}

// truth is what the polls answer through transactions: a new Driver on
// the same directory and clock has nothing to remember. The console's
// status is read from the state by serial, as cellStatus does.
func truth(t *testing.T, d *Driver, clk *fakeClock, name string, con *cellConsole) pollAnswers {
	t.Helper()
	fresh, err := Open(d.Dir(), Options{Now: clk.Now})
	must(t, err)
	a := answers(t, fresh, name, nil)
	if con != nil {
		must(t, fresh.update(func(t *tx) error {
			c := t.s.cellBySerial(con.serial)
			a.Gone = c == nil
			a.Done = c != nil && c.Starts > 0 && c.State.Terminal()
			return nil
		}, nil))
	}
	return a
}

// crash does what a process killed in the middle of a commit leaves
// behind: the generation incremented and, if change is not nil, the state
// written with change applied, but no sysfs file rendered.
func crash(t *testing.T, d *Driver, change func(*hostState)) {
	t.Helper()
	unlock, err := flock(filepath.Join(d.dir, lockFile))
	must(t, err)
	defer unlock()
	g := d.gen.Load()
	if g == nil {
		t.Fatal("the driver has no generation file mapping")
	}
	g.bump(nil, true) // as a commit that changes anything would
	if change != nil {
		s, _, err := d.readState()
		must(t, err)
		change(s)
		_, err = d.writeState(s)
		must(t, err)
	}
}

func TestPollsAnswerAsTransactions(t *testing.T) {
	const (
		sleeper  = "sleeper"  // prints, then sleeps 1s and exits
		echoer   = "echoer"   // waits for a line of input, echoes it and exits
		flooder  = "flooder"  // prints more than its console ring holds, then exits
		newcomer = "newcomer" // does not exist until an action creates it
		idler    = "idler"    // prints, then sleeps for an hour
		// bystander is another cell, created in every case: its
		// inmate prints a tick every 10s.
		bystander = "bystander"
	)
	scripts := map[string][]string{
		sleeper: {"print hello", "sleep 1s", "exit"},
		idler:   {"print hello", "sleep 1h"},
		echoer:  {"echo", "exit"},
		flooder: floodScript(1100, 1000), // 1.1 MB through a 1 MiB ring
	}
	tests := []struct {
		name string
		cell string
		// action changes the host; other is a second Driver on the
		// directory, as another process would have.
		action func(t *testing.T, other *Driver, clk *fakeClock, con *cellConsole)
		// quiet says the polls must not run a transaction after the
		// action: nothing changed and nothing was due.
		quiet bool
		// cellQuiet says the polls about the cell (Cell, its console's
		// look) must not run a transaction after the action: only
		// other cells changed. Otherwise they must run one.
		cellQuiet bool
		check     func(t *testing.T, got pollAnswers)
	}{
		{
			name: "nothing happens", cell: sleeper, quiet: true,
			action: func(*testing.T, *Driver, *fakeClock, *cellConsole) {},
		},
		{
			name: "the sleep has not ended yet", cell: sleeper, quiet: true,
			action: func(_ *testing.T, _ *Driver, clk *fakeClock, _ *cellConsole) { clk.Advance(999 * time.Millisecond) },
		},
		{
			name: "the sleep ends", cell: sleeper,
			action: func(_ *testing.T, _ *Driver, clk *fakeClock, _ *cellConsole) { clk.Advance(time.Second) },
			check: func(t *testing.T, got pollAnswers) {
				if got.Cell.State != jailhouse.StateShutDown || !got.Done {
					t.Errorf("after the sleep: %v, console done %v; want shut down, done", got.Cell.State, got.Done)
				}
			},
		},
		{
			name: "another driver destroys the cell", cell: sleeper,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) { must(t, other.DestroyCell(sleeper)) },
			check: func(t *testing.T, got pollAnswers) {
				if got.CellErr == "" || !got.Gone || len(got.Cells) != 2 {
					t.Errorf("after destroy: %+v; want no cell, console gone", got)
				}
			},
		},
		{
			name: "another driver creates, loads and starts a cell", cell: newcomer,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				run(t, other, testCell(t, newcomer, []int{4}), "sleep 1h")
			},
			check: func(t *testing.T, got pollAnswers) {
				if got.CellErr != "" || got.Cell.State != jailhouse.StateRunning || len(got.Cells) != 3 {
					t.Errorf("after create: %+v; want the new cell running", got)
				}
			},
		},
		{
			name: "another driver sets the cell failed", cell: sleeper,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				must(t, other.SetCellState(sleeper, jailhouse.StateFailed))
			},
			check: func(t *testing.T, got pollAnswers) {
				if got.Cell.State != jailhouse.StateFailed || !got.Done {
					t.Errorf("after SetCellState: %v, console done %v; want failed, done", got.Cell.State, got.Done)
				}
			},
		},
		{
			name: "another driver fails a CPU", cell: sleeper,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) { must(t, other.FailCPU(sleeper, 2)) },
			check: func(t *testing.T, got pollAnswers) {
				if got.Cell.State != jailhouse.StateFailed || !reflect.DeepEqual(got.Cell.FailedCPUs, []int{2}) {
					t.Errorf("after FailCPU: %+v; want failed with CPU 2", got.Cell)
				}
			},
		},
		{
			name: "another driver injects an error", cell: sleeper,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				must(t, other.InjectError("destroy", unix.EPERM))
			},
		},
		{
			name: "another driver disables", cell: sleeper,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) { must(t, other.Disable()) },
			check: func(t *testing.T, got pollAnswers) {
				if got.Enabled || got.CellErr == "" || !got.Gone {
					t.Errorf("after disable: %+v; want disabled, no cell", got)
				}
			},
		},
		{
			name: "the reader makes room for an inmate blocked on a full ring", cell: flooder,
			action: func(t *testing.T, _ *Driver, _ *fakeClock, con *cellConsole) {
				// Consume what the ring holds, as a reader does:
				// through the link only, no transaction.
				in, err := readConHeader(con.f, conPeerInmate)
				must(t, err)
				if in.Tail != conRing {
					t.Fatalf("the inmate wrote %d bytes, want a full ring of %d", in.Tail, conRing)
				}
				con.head = in.Tail
				must(t, putConU32(con.f, conPeerRoot, conOffPeerHead, con.head))
			},
			check: func(t *testing.T, got pollAnswers) {
				if got.Cell.State != jailhouse.StateShutDown {
					t.Errorf("after the reader made room: %v, want the inmate to have finished and exited", got.Cell.State)
				}
			},
		},
		{
			name: "input comes for an inmate waiting for it", cell: echoer,
			action: func(t *testing.T, _ *Driver, _ *fakeClock, con *cellConsole) {
				if _, err := con.Write([]byte("hi\n")); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, got pollAnswers) {
				if got.Cell.State != jailhouse.StateShutDown {
					t.Errorf("after input: %v, want the inmate to have echoed and exited", got.Cell.State)
				}
			},
		},
		{
			name: "another cell's inmate prints", cell: idler, cellQuiet: true,
			action: func(t *testing.T, other *Driver, clk *fakeClock, _ *cellConsole) {
				clk.Advance(10 * time.Second)
				// Its own partition's poll lets it run.
				_, err := other.Cell(bystander)
				must(t, err)
				must(t, other.update(func(t2 *tx) error {
					if c := t2.s.cell(bystander); c.Con.Tail == 0 {
						t.Errorf("the bystander printed nothing after its sleep")
					}
					return nil
				}, nil))
			},
		},
		{
			name: "another cell is created, loaded and started", cell: idler, cellQuiet: true,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				run(t, other, testCell(t, newcomer, []int{4}), "print hi", "sleep 1h")
			},
		},
		{
			name: "another cell is destroyed", cell: idler, cellQuiet: true,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) { must(t, other.DestroyCell(bystander)) },
		},
		{
			name: "another cell changes state", cell: idler, cellQuiet: true,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				must(t, other.SetCellState(bystander, jailhouse.StateFailed))
			},
		},
		{
			name: "another cell's CPU fails", cell: idler, cellQuiet: true,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) { must(t, other.FailCPU(bystander, 3)) },
		},
		{
			// Nothing changes on the host; Close wakes the
			// bystander's readers only.
			name: "another cell's console is opened and closed", cell: idler, quiet: true, cellQuiet: true,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				r, err := other.OpenCellConsole(bystander)
				must(t, err)
				must(t, r.Close())
			},
		},
		{
			name: "another driver sets this idle cell failed", cell: idler,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				must(t, other.SetCellState(idler, jailhouse.StateFailed))
			},
			check: func(t *testing.T, got pollAnswers) {
				if got.Cell.State != jailhouse.StateFailed || !got.Done {
					t.Errorf("after SetCellState: %v, console done %v; want failed, done", got.Cell.State, got.Done)
				}
			},
		},
		{
			name: "another driver destroys this idle cell and creates one of its name", cell: idler,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				must(t, other.DestroyCell(idler))
				create(t, other, testCell(t, idler, []int{5}))
			},
			check: func(t *testing.T, got pollAnswers) {
				if got.CellErr != "" || !reflect.DeepEqual(got.Cell.CPUs, []int{5}) || !got.Gone {
					t.Errorf("after destroy and create: %+v; want the new cell on CPU 5, the console's cell gone", got)
				}
			},
		},
		{
			name: "another driver disables while this cell idles", cell: idler,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) { must(t, other.Disable()) },
			check: func(t *testing.T, got pollAnswers) {
				if got.Enabled || got.CellErr == "" || !got.Gone {
					t.Errorf("after disable: %+v; want disabled, no cell", got)
				}
			},
		},
		{
			name: "another driver injects an error while this cell idles", cell: idler,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				must(t, other.InjectError("destroy", unix.EPERM))
			},
		},
		{
			name: "a writer dies after announcing a change and writes nothing", cell: sleeper,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) { crash(t, other, nil) },
		},
		{
			name: "a writer dies after writing the state, before the sysfs tree", cell: sleeper,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				crash(t, other, func(s *hostState) {
					s.cell(sleeper).State = jailhouse.StateFailed
					s.cell(sleeper).Program = nil
				})
			},
			check: func(t *testing.T, got pollAnswers) {
				if got.Cell.State != jailhouse.StateFailed {
					t.Errorf("after the half commit: %v, want the failed state it wrote (the tree rendered again)", got.Cell.State)
				}
			},
		},
		{
			name: "the generation file is removed and another driver sets the cell failed", cell: sleeper,
			action: func(t *testing.T, other *Driver, _ *fakeClock, _ *cellConsole) {
				must(t, os.Remove(filepath.Join(other.Dir(), genFile)))
				must(t, other.SetCellState(sleeper, jailhouse.StateFailed))
			},
			check: func(t *testing.T, got pollAnswers) {
				if got.Cell.State != jailhouse.StateFailed {
					t.Errorf("after the change: %v, want failed", got.Cell.State)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			d := enabled(t, Options{Now: clk.Now})
			other, err := Open(d.Dir(), Options{Now: clk.Now})
			must(t, err)
			// Another cell with a sleeping inmate, whose deadline the
			// polls must keep in mind too.
			run(t, d, testCell(t, bystander, []int{3}), "loop forever", "sleep 10s", "print tick", "end")
			var con *cellConsole
			if lines, ok := scripts[tc.cell]; ok {
				create(t, d, testCell(t, tc.cell, []int{2}))
				// Attached before start, so that the flooder waits
				// for the reader instead of dropping output.
				r, err := d.OpenCellConsole(tc.cell)
				must(t, err)
				t.Cleanup(func() { r.Close() })
				con = r.(*cellConsole)
				must(t, d.LoadCell(tc.cell, script(lines...)))
				must(t, d.StartCell(tc.cell))
			}
			before := answers(t, d, tc.cell, con)
			if want := truth(t, d, clk, tc.cell, con); !reflect.DeepEqual(before, want) {
				t.Fatalf("before the action, the polls answer\n%+v\nwant\n%+v", before, want)
			}
			// Primed: the polls remember their answers now.
			answers(t, d, tc.cell, con)

			tc.action(t, other, clk, con)
			txs := d.txs.Load()
			cellGot, cellErr := d.Cell(tc.cell)
			var gone, done bool
			if con != nil {
				gone, done, err = con.cellStatus()
				must(t, err)
			}
			cellRan := d.txs.Load() - txs
			got := answers(t, d, tc.cell, con)
			ran := d.txs.Load() - txs
			if !reflect.DeepEqual(cellGot, got.Cell) || (cellErr != nil) != (got.CellErr != "") || gone != got.Gone || done != got.Done {
				t.Errorf("the cell polls answered %+v (%v), console gone %v done %v; then %+v", cellGot, cellErr, gone, done, got)
			}
			switch {
			case tc.cellQuiet && cellRan != 0:
				t.Errorf("the polls about the cell ran %d transactions; only other cells changed", cellRan)
			case !tc.quiet && !tc.cellQuiet && cellRan == 0:
				t.Errorf("the polls about the cell ran no transaction after a change")
			case tc.cellQuiet && (!reflect.DeepEqual(got.Cell, before.Cell) || got.Gone != before.Gone || got.Done != before.Done):
				t.Errorf("only other cells changed, yet the cell's answers did:\n%+v\nthen\n%+v", before, got)
			}
			if want := truth(t, d, clk, tc.cell, con); !reflect.DeepEqual(got, want) {
				t.Errorf("after the action, the polls answer\n%+v\nwant (transactions)\n%+v", got, want)
			}
			if tc.quiet && ran != 0 {
				t.Errorf("the polls ran %d transactions; nothing changed and nothing was due", ran)
			}
			if !tc.quiet && ran == 0 {
				t.Errorf("the polls ran no transaction after a change")
			}
			if tc.quiet && !reflect.DeepEqual(got, before) {
				t.Errorf("nothing changed, yet the answers did:\n%+v\nthen\n%+v", before, got)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

func TestIdlePollsRunNoTransaction(t *testing.T) {
	d := idleHost(t)
	r, err := d.OpenCellConsole("c")
	must(t, err)
	defer r.Close()
	con := r.(*cellConsole)
	answers(t, d, "c", con) // prime
	txs := d.txs.Load()
	// Allocation is what an idle shim's heap grows by: every poll of
	// the slow path decodes the whole state (over 100 allocations).
	for _, tc := range []struct {
		name string
		poll func()
		max  float64
	}{
		{"Cell", func() { d.Cell("c") }, 2}, // the CPU lists are copies
		{"Cells", func() { d.Cells() }, 10},
		{"Enabled", func() { d.Enabled() }, 0},
		// Under -race the header's buffer escapes: one allocation.
		{"a waiting console reader's look", func() {
			readConHeader(con.f, conPeerInmate)
			con.lookAtCell(true)
		}, 1},
	} {
		if got := testing.AllocsPerRun(100, tc.poll); got > tc.max {
			t.Errorf("an idle %s poll allocates %.0f times, want at most %.0f", tc.name, got, tc.max)
		}
	}
	if ran := d.txs.Load() - txs; ran != 0 {
		t.Errorf("idle polls ran %d transactions, want none", ran)
	}
}

// A reader waiting on an inmate that waits for input (not for time) runs
// a transaction every cellConsolePoll, as it always did: only a
// transaction can tell whether input came.
func TestWaitingReaderLooksAtABlockedInmateEveryPoll(t *testing.T) {
	d := enabled(t, Options{})
	run(t, d, testCell(t, "c", []int{2}), "echo", "exit")
	r, err := d.OpenCellConsole("c")
	must(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := readOnce(t, r, 10)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	txs := d.txs.Load()
	const wait = 200 * time.Millisecond
	time.Sleep(wait)
	ran := d.txs.Load() - txs
	// At most one per poll, with slack for timer jitter; a transaction
	// per tick would be ten times as many.
	if max := uint64(wait/cellConsolePoll) + 5; ran == 0 || ran > max {
		t.Errorf("a reader waiting %v on an inmate waiting for input ran %d transactions, want 1 to %d", wait, ran, max)
	}
	must(t, r.Close())
	if err := <-done; err != io.EOF {
		t.Errorf("read after Close: %v, want io.EOF", err)
	}
}

// The answers a Driver remembers are its own: a caller changing what it
// got does not change the next answer.
func TestRememberedAnswersAreCopies(t *testing.T) {
	d := idleHost(t)
	first, err := d.Cell("c")
	must(t, err)
	first.CPUs[0] = 99
	list, err := d.Cells()
	must(t, err)
	list[1].CPUs[0] = 99
	again, err := d.Cell("c")
	must(t, err)
	list, err = d.Cells()
	must(t, err)
	if again.CPUs[0] != 2 || list[1].CPUs[0] != 2 {
		t.Errorf("after callers changed their copies: Cell CPUs %v, Cells[1] CPUs %v; want [2]", again.CPUs, list[1].CPUs)
	}
}

func TestHypervisorConsoleReadSkipsIdleTransactions(t *testing.T) {
	clk := newFakeClock()
	d := enabled(t, Options{Now: clk.Now})
	other, err := Open(d.Dir(), Options{Now: clk.Now})
	must(t, err)
	run(t, d, testCell(t, "loud", []int{2}, active), "sleep 1s", "print loud", "sleep 1h")
	r, err := d.OpenConsole(false)
	must(t, err)
	defer r.Close()
	if _, err := io.ReadAll(r); err != nil {
		t.Fatal(err)
	}
	readNew := func() (string, uint64) {
		t.Helper()
		txs := d.txs.Load()
		b, err := io.ReadAll(r)
		must(t, err)
		return string(b), d.txs.Load() - txs
	}
	if got, ran := readNew(); got != "" || ran != 0 {
		t.Errorf("idle read: %q after %d transactions, want nothing after none", got, ran)
	}
	clk.Advance(time.Second)
	if got, _ := readNew(); got != "loud\n" {
		t.Errorf("read after the sleep: %q, want the inmate's print", got)
	}
	must(t, other.DestroyCell("loud"))
	if got, _ := readNew(); !strings.Contains(got, `Closing cell "loud"`) {
		t.Errorf("read after another driver destroyed the cell: %q, want the closing message", got)
	}
}

func TestOpenExistingWritesNothing(t *testing.T) {
	d := idleHost(t)
	files := []string{
		filepath.Join(d.Dir(), stateFile),
		filepath.Join(d.SysfsRoot(), "enabled"),
		filepath.Join(d.SysfsRoot(), "cells", "1", "state"),
	}
	stat := func() []os.FileInfo {
		var fis []os.FileInfo
		for _, f := range files {
			fi, err := os.Stat(f)
			must(t, err)
			fis = append(fis, fi)
		}
		return fis
	}
	before := stat()
	if _, err := Open(d.Dir(), Options{}); err != nil {
		t.Fatal(err)
	}
	for i, fi := range stat() {
		// Every write is a rename of a new file: the same file means
		// no write.
		if !os.SameFile(before[i], fi) {
			t.Errorf("Open of an existing host replaced %s", files[i])
		}
	}
}

func TestOpenRendersWhatNothingVouchesFor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, d *Driver)
	}{
		{"a writer died before rendering the tree", func(t *testing.T, d *Driver) {
			crash(t, d, func(s *hostState) { s.cell("c").State = jailhouse.StateFailed })
		}},
		{"the directory has no generation file (an older simulator's)", func(t *testing.T, d *Driver) {
			crash(t, d, func(s *hostState) { s.cell("c").State = jailhouse.StateFailed })
			must(t, os.Remove(filepath.Join(d.Dir(), genFile)))
		}},
		{"a cell's directory is gone", func(t *testing.T, d *Driver) {
			// The state says failed; remove the stale tree of
			// the cell entirely.
			crash(t, d, func(s *hostState) { s.cell("c").State = jailhouse.StateFailed })
			d.gen.Load().setRendered()
			must(t, os.RemoveAll(filepath.Join(d.SysfsRoot(), "cells", "1")))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := enabled(t, Options{})
			create(t, d, testCell(t, "c", []int{2}))
			tc.damage(t, d)
			if _, err := Open(d.Dir(), Options{}); err != nil {
				t.Fatal(err)
			}
			got, err := jailhouse.ReadCell(d.SysfsRoot(), "c")
			must(t, err)
			if got.State != jailhouse.StateFailed {
				t.Errorf("the tree after Open says %v, the state failed", got.State)
			}
		})
	}
}

// BenchmarkCellConsoleEndAfterDestroy measures how long after a destroy
// by another Driver a reader waiting on the cell's idle console gets
// io.EOF: what P4's kill waits for (docs/performance.md).
func BenchmarkCellConsoleEndAfterDestroy(b *testing.B) {
	d := enabled(b, Options{})
	other, err := Open(d.Dir(), Options{})
	must(b, err)
	var total time.Duration
	n := 0
	for ; b.Loop(); n++ {
		name := fmt.Sprintf("c%d", n)
		run(b, d, testCell(b, name, []int{2}), "sleep 1h")
		r, err := d.OpenCellConsole(name)
		must(b, err)
		eof := make(chan time.Time, 1)
		go func() {
			var buf [64]byte
			for {
				if _, err := r.Read(buf[:]); err != nil {
					eof <- time.Now()
					return
				}
			}
		}()
		time.Sleep(30 * time.Millisecond) // the reader waits in its poll loop
		start := time.Now()
		must(b, other.DestroyCell(name))
		total += (<-eof).Sub(start)
		r.Close()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(n), "µs-to-EOF/op")
}

// A host of partitions, each polled by its own Driver as its shim does,
// while one other partition prints: the idle partitions' polls must not
// pay for its prints. With one generation for the whole host, every print
// made each of them run a transaction, so the host's idle cost grew with
// the square of its partitions.
func TestIdleCellsDoNotPayForAnotherCellsPrints(t *testing.T) {
	const (
		idle   = 8
		prints = 20
	)
	clk := newFakeClock()
	d := enabled(t, Options{Now: clk.Now})
	run(t, d, testCell(t, "printer", []int{1}), "loop forever", "sleep 1s", "print tick", "end")
	type shim struct {
		name string
		d    *Driver
		con  *cellConsole
	}
	var shims []shim
	for i := range idle {
		name := fmt.Sprintf("idle%d", i)
		run(t, d, testCell(t, name, []int{2 + i}), "print up", "sleep 1h")
		sd, err := Open(d.Dir(), Options{Now: clk.Now})
		must(t, err)
		r, err := sd.OpenCellConsole(name)
		must(t, err)
		t.Cleanup(func() { r.Close() })
		shims = append(shims, shim{name, sd, r.(*cellConsole)})
	}
	printer, err := Open(d.Dir(), Options{Now: clk.Now})
	must(t, err)
	poll := func(s shim) {
		t.Helper()
		info, err := s.d.Cell(s.name)
		must(t, err)
		gone, ended, err := s.con.cellStatus()
		must(t, err)
		if info.State != jailhouse.StateRunning || gone || ended {
			t.Fatalf("%s: %v, console gone %v ended %v; want running", s.name, info.State, gone, ended)
		}
	}
	for _, s := range shims {
		poll(s) // primed
	}
	txs := make([]uint64, idle)
	for i, s := range shims {
		txs[i] = s.d.txs.Load()
	}
	for range prints {
		clk.Advance(time.Second)
		// The printer's own shim lets it print.
		_, err := printer.Cell("printer")
		must(t, err)
		for _, s := range shims {
			poll(s)
		}
	}
	must(t, printer.update(func(t2 *tx) error {
		if got, want := t2.s.cell("printer").Con.Tail, uint32(prints*len("tick\n")); got != want {
			t.Errorf("the printer wrote %d bytes, want %d", got, want)
		}
		return nil
	}, nil))
	for i, s := range shims {
		if ran := s.d.txs.Load() - txs[i]; ran != 0 {
			t.Errorf("%s's polls ran %d transactions over %d prints of another cell, want none", s.name, ran, prints)
		}
	}
}

// A reader blocked on an idle cell's console sleeps on its cell's futex
// word: another cell's output, one commit every few milliseconds, does not
// wake it into transactions (it used to run one every cellConsoleGap).
func TestWaitingReaderSleepsThroughAnotherCellsOutput(t *testing.T) {
	d := enabled(t, Options{})
	run(t, d, testCell(t, "busy", []int{2}), "loop forever", "sleep 5ms", "print tick", "end")
	run(t, d, testCell(t, "quiet", []int{3}), "sleep 1h")
	busy, err := d.OpenCellConsole("busy")
	must(t, err)
	quietDrv, err := Open(d.Dir(), Options{})
	must(t, err)
	quiet, err := quietDrv.OpenCellConsole("quiet")
	must(t, err)
	read := func(r io.Reader, out chan<- int) {
		buf := make([]byte, 4096)
		n := 0
		for {
			k, err := r.Read(buf)
			n += k
			if err != nil {
				out <- n
				return
			}
		}
	}
	busyN, quietN := make(chan int, 1), make(chan int, 1)
	go read(busy, busyN)
	go read(quiet, quietN)
	time.Sleep(50 * time.Millisecond) // both wait in their poll loops
	txs := quietDrv.txs.Load()
	const wait = 300 * time.Millisecond
	time.Sleep(wait)
	ran := quietDrv.txs.Load() - txs
	must(t, busy.Close())
	must(t, quiet.Close())
	if n := <-busyN; n < 5*len("tick\n") {
		t.Errorf("the busy cell's reader got %d bytes in %v, want a tick every 5ms", n, wait)
	}
	<-quietN
	// One look when cellConsoleMaxWait passes, with slack; a transaction
	// per print of the busy cell would be about 60.
	if ran > 2 {
		t.Errorf("the idle cell's reader ran %d transactions in %v while another cell printed, want at most 2", ran, wait)
	}
}
