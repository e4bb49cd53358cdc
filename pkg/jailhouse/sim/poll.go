package sim

// Polls answered from memory. A read-only poll (Cell, Cells, Enabled, a
// console's look at its cell, a hypervisor console read with nothing new)
// runs a transaction only to let due inmates run and to read what others
// changed. So a Driver keeps, with each answer, the mark of the transaction
// that produced it, and gives the same answer again without a transaction
// while the mark says that transaction would change nothing:
//
//   - no process committed a change since (the generation in the shared
//     generation file is the one the mark recorded, gen.go), and
//   - every scripted inmate is in a sleep whose end, on the Driver's
//     clock, is still ahead (quietUntil), or is done or absent. An inmate
//     waiting for its console, or behind its schedule, leaves no mark that
//     skips anything: only a transaction can tell what it does next.
//
// A poll about one cell (Cell, a console's look at its cell) keeps a cell
// mark instead, which asks less: no commit changed that cell or what all
// cells see (its cell word and the structural generation, gen.go), and
// that cell's inmate has nothing due. Other cells' inmates acting, and
// other cells coming and going, change nothing such a poll answers: a
// transaction would let them act, and then give the same answer.
//
// The caches live in the Driver, so they are per Driver and per process;
// the generation file is what makes them agree with every other process.

import (
	"slices"
	"sync"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// pollMark is what a Driver knew at the end of one of its transactions,
// under the state lock. The zero pollMark skips nothing.
type pollMark struct {
	g   *genMap // the mapping gen was read from
	gen uint64  // the generation the commit left
	// timed says that only time can make an inmate act; wake is then the
	// first time one does (Unix nanoseconds).
	timed bool
	wake  int64
	// cell says this is a cell mark: it holds while the structural
	// generation is structural and the cell word of slot is cellGen,
	// whatever the generation; timed and wake are about that cell's
	// inmate only.
	cell       bool
	slot       int
	cellGen    uint32
	structural uint64
}

// unchanged reports whether no transaction, of any process, committed a
// change since m was taken.
func (d *Driver) unchanged(m pollMark) bool {
	// The link check is a system call: last.
	if m.g == nil || m.g != d.gen.Load() {
		return false
	}
	if m.cell {
		if m.g.structural() != m.structural || m.g.cell(m.slot) != m.cellGen {
			return false
		}
	} else if m.g.load() != m.gen {
		return false
	}
	return m.g.linked()
}

// quiet reports whether a transaction run now would change nothing and see
// what the transaction that took m saw.
func (d *Driver) quiet(m pollMark) bool {
	return m.timed && d.now().UnixNano() < m.wake && d.unchanged(m)
}

// maxCellAnswers bounds the remembered Cell answers: names of destroyed
// cells are not looked up again, so when the map is full it starts over.
const maxCellAnswers = 64

// pollCache holds the Driver's last answers to the polls that may skip a
// transaction.
type pollCache struct {
	mu      sync.Mutex
	cells   map[string]cellAnswer // Cell, by name
	list    listAnswer            // Cells
	enabled enabledAnswer         // Enabled
}

type cellAnswer struct {
	mark pollMark
	info jailhouse.CellInfo
	err  error // nil or ErrCellNotFound: the only errors that are answers
}

type listAnswer struct {
	mark  pollMark
	cells []jailhouse.CellInfo
}

type enabledAnswer struct {
	mark    pollMark
	enabled bool
}

// cloneInfo copies a CellInfo, so that a caller changing its slices does
// not change what the cache hands out next.
func cloneInfo(c jailhouse.CellInfo) jailhouse.CellInfo {
	c.CPUs = slices.Clone(c.CPUs)
	c.FailedCPUs = slices.Clone(c.FailedCPUs)
	return c
}

func cloneInfos(cells []jailhouse.CellInfo) []jailhouse.CellInfo {
	if cells == nil {
		return nil
	}
	out := make([]jailhouse.CellInfo, len(cells))
	for i, c := range cells {
		out[i] = cloneInfo(c)
	}
	return out
}

func (p *pollCache) cell(name string) (cellAnswer, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.cells[name]
	return a, ok
}

func (p *pollCache) putCell(name string, a cellAnswer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.cells[name]; !ok && len(p.cells) >= maxCellAnswers {
		p.cells = nil
	}
	if p.cells == nil {
		p.cells = map[string]cellAnswer{}
	}
	p.cells[name] = a
}

func (p *pollCache) getList() listAnswer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.list
}

func (p *pollCache) putList(a listAnswer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.list = a
}

func (p *pollCache) getEnabled() enabledAnswer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.enabled
}

func (p *pollCache) putEnabled(a enabledAnswer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.enabled = a
}
