package sim

import (
	"testing"
	"time"
)

// idleHost is an enabled host with one cell whose scripted inmate printed
// a line and now sleeps for an hour, and another cell running an opaque
// payload: what a shim polls while its partitions print nothing.
func idleHost(b testing.TB) *Driver {
	d := enabled(b, Options{})
	run(b, d, testCell(b, "c", []int{2}), "print started", "loop forever", "sleep 1h", "print tick", "end")
	create(b, d, testCell(b, "opaque", []int{3}))
	must(b, d.StartCell("opaque"))
	return d
}

// BenchmarkIdleCellPoll is what caronte's watcher costs per look at a
// partition whose inmate sleeps: one Driver.Cell.
func BenchmarkIdleCellPoll(b *testing.B) {
	d := idleHost(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Cell("c"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdleConsoleStatus is what an idle cell console reader costs per
// poll: the look at the cell's status that lets a sleeping inmate run.
func BenchmarkIdleConsoleStatus(b *testing.B) {
	d := idleHost(b)
	r, err := d.OpenCellConsole("c")
	must(b, err)
	defer r.Close()
	con := r.(*cellConsole)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := con.cellStatus(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenExisting is sim.Open of a directory that already holds an
// enabled host with two cells, as every shim after the first does.
func BenchmarkOpenExisting(b *testing.B) {
	d := idleHost(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(d.Dir(), Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdleCellPollWhileAnotherPrints is one print of another cell
// (a commit by its own Driver) followed by the look of an idle partition's
// shim at its cell: what every print used to cost every other partition.
// idle-tx/op is the transactions the idle Driver ran per print.
func BenchmarkIdleCellPollWhileAnotherPrints(b *testing.B) {
	clk := newFakeClock()
	d := enabled(b, Options{Now: clk.Now})
	run(b, d, testCell(b, "printer", []int{1}), "loop forever", "sleep 1s", "print tick", "end")
	run(b, d, testCell(b, "c", []int{2}), "print up", "sleep 1h")
	idle, err := Open(d.Dir(), Options{Now: clk.Now})
	must(b, err)
	if _, err := idle.Cell("c"); err != nil {
		b.Fatal(err)
	}
	txs := idle.txs.Load()
	n := 0
	for ; b.Loop(); n++ {
		clk.Advance(time.Second)
		if _, err := d.Cell("printer"); err != nil {
			b.Fatal(err)
		}
		if _, err := idle.Cell("c"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(idle.txs.Load()-txs)/float64(n), "idle-tx/op")
}
