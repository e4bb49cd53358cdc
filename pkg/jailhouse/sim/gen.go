package sim

// The generation file. Polls (Cell, Cells, Enabled, a console's look at its
// cell) are most of what the simulator does: every shim looks at each of
// its partitions every 100 ms, and each console reader at its cell
// whenever it has nothing to read. A
// transaction costs a flock, a read and decode of state.json and an encode
// to compare, so a Driver answers a poll from memory when running the
// transaction could not change anything: no process committed a change
// since it last looked, and no inmate has anything due. The second is known
// from the state (program.wake); the first needs a signal that every
// process sees at once, which file timestamps are not (coarse mtimes, inode
// numbers reused after a rename).
//
// So the directory holds "generation": one page (4096 bytes), mapped
// MAP_SHARED by every Driver, holding native-endian counters:
//
//   - generation (uint64 at 0): incremented by every transaction that is
//     about to write anything (console bytes, dmesg, state, sysfs), before
//     its first write and under the state lock, so a writer killed half way
//     has still announced its change;
//   - rendered (uint64 at 8): the generation the sysfs tree was last
//     completely rendered at, set under the lock after rendering. When it
//     differs from generation, a writer died before finishing the tree, and
//     the next transaction (or Open) renders the whole tree instead of a
//     delta;
//   - (uint32 at 16: unused, the futex word of the first layout);
//   - structural (uint64 at 24): incremented, with generation, by the
//     commits that change what every cell's polls see (enable, disable,
//     injected faults: sharedView in changes.go);
//   - cell words (uint32 at 64 + 4*i, genSlots of them): the change counter
//     of the cells whose name hashes to slot i, incremented by every commit
//     that changes anything a poll about such a cell can observe (its state
//     record, its CPUs' statistics, its creation or destruction), and by a
//     structural change. Each is also a futex word: every increment wakes
//     whoever waits on it (FUTEX_WAKE on the shared mapping reaches waiters
//     in every process), and a cell console reader with nothing to read
//     sleeps on its cell's word (FUTEX_WAIT) until its cell changed, its
//     inmate's sleep ends or its poll period passes, instead of waking up
//     every few milliseconds to look: on the development VM each wakeup of
//     an idle process costs about 60 µs of CPU, so a 2 ms tick costs as
//     much as the 20 ms transactions it would replace.
//
// So a poll about one cell (Driver.Cell, a console's look at its cell)
// depends on its own cell's changes, not on every change to the host:
// with N partitions printing, each print wakes one reader instead of N.
// Names, not serials, pick the slot, so that a Cell poll of a name that
// does not exist yet learns of its creation. Two names sharing a slot only
// cost each other transactions, never a wrong answer.
//
// Reading a counter is an atomic load from the shared page. A Driver
// that cannot map the file (it cannot be created or mapped) answers every
// poll with a transaction, as before, and its writes unlink the file
// instead of incrementing it, which invalidates every other Driver's
// mapping (they notice the link count 0 and map the file anew).

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	genFile = "generation"
	genSize = 4096
	// genSlotsOff is the offset of the first cell word.
	genSlotsOff = 64
	// genSlots is the number of cell words.
	genSlots = (genSize - genSlotsOff) / 4
)

// genSlot is the cell word of the cells named name: FNV-1a, modulo
// genSlots.
func genSlot(name string) int {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return int(h % genSlots)
}

// genMap is one mapping of the generation file. It is unmapped, and its
// descriptor closed, by a cleanup once nothing refers to it (a Driver that
// is garbage, or one that replaced it after the file was unlinked), or at
// process exit: a Driver has no Close. Every method keeps the genMap alive
// until its access to the page is over.
type genMap struct {
	page unsafe.Pointer // genSize bytes of the shared mapping
	fd   int            // kept open to see the file's link count
}

// mapGen opens (creating it if create) and maps the generation file of the
// simulator directory dir. fresh says the file was new or too short: its
// counters say nothing about the state and the sysfs tree. The caller
// holds the state lock.
func mapGen(dir string, create bool) (g *genMap, fresh bool, err error) {
	flags := unix.O_RDWR | unix.O_CLOEXEC
	if create {
		flags |= unix.O_CREAT
	}
	path := filepath.Join(dir, genFile)
	fd, err := unix.Open(path, flags, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("generation file %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, false, fmt.Errorf("generation file %s: %w", path, err)
	}
	if st.Size < genSize {
		fresh = true
		// Zeros: a generation and a rendered generation of 0, which
		// the caller does not trust (fresh).
		if err := errors.Join(unix.Ftruncate(fd, 0), unix.Ftruncate(fd, genSize)); err != nil {
			unix.Close(fd)
			return nil, false, fmt.Errorf("generation file %s: %w", path, err)
		}
	}
	page, err := unix.MmapPtr(fd, 0, nil, genSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, false, fmt.Errorf("map generation file %s: %w", path, err)
	}
	g = &genMap{page: page, fd: fd}
	runtime.AddCleanup(g, func(m genMap) {
		unix.MunmapPtr(m.page, genSize)
		unix.Close(m.fd)
	}, *g)
	return g, fresh, nil
}

// The page is page-aligned, so both words are 8-byte aligned, as 64-bit
// atomics need on 32-bit arm.
func (g *genMap) word(i uintptr) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Add(g.page, 8*i))
}

func (g *genMap) cellWord(slot int) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Add(g.page, genSlotsOff+4*slot))
}

// load returns the generation.
func (g *genMap) load() uint64 {
	v := g.word(0).Load()
	runtime.KeepAlive(g)
	return v
}

// structural returns the structural generation.
func (g *genMap) structural() uint64 {
	v := g.word(3).Load()
	runtime.KeepAlive(g)
	return v
}

// cell returns the change counter of a cell slot. It is also the futex
// word to pass to sleep: read it before looking at the cell, and a change
// after the read ends the sleep at once.
func (g *genMap) cell(slot int) uint32 {
	v := g.cellWord(slot).Load()
	runtime.KeepAlive(g)
	return v
}

// bump announces a change: the caller holds the state lock and is about to
// write. slots are the cells it changes; structural says it changes what
// every cell's polls see, which counts as a change of every cell. Waiters
// wake now; those that need a transaction wait for the lock.
func (g *genMap) bump(slots []int, structural bool) {
	g.word(0).Add(1)
	if structural {
		g.word(3).Add(1)
		for i := range genSlots {
			g.nudge(i)
		}
		return
	}
	for _, i := range slots {
		g.nudge(i)
	}
}

// nudge increments a cell word and wakes every waiter on it, in any
// process.
func (g *genMap) nudge(slot int) {
	w := g.cellWord(slot)
	w.Add(1)
	futexWake(w)
	runtime.KeepAlive(g)
}

// sleep waits until the cell word of slot is no longer seq (a change of
// one of its cells, or a nudge), or d passed, whichever is first. It may
// return early.
func (g *genMap) sleep(slot int, seq uint32, d time.Duration) {
	futexWait(g.cellWord(slot), seq, d)
	runtime.KeepAlive(g)
}

// rendered returns the generation the sysfs tree was last wholly rendered
// at.
func (g *genMap) rendered() uint64 {
	v := g.word(1).Load()
	runtime.KeepAlive(g)
	return v
}

// setRendered records that the tree is rendered at the current
// generation. The caller holds the state lock.
func (g *genMap) setRendered() {
	g.word(1).Store(g.word(0).Load())
	runtime.KeepAlive(g)
}

// linked reports whether the mapped file is still the directory's
// generation file: once it is unlinked (the directory was removed, or a
// Driver without a mapping invalidated it) nobody increments it any more.
func (g *genMap) linked() bool {
	var st unix.Stat_t
	err := unix.Fstat(g.fd, &st)
	runtime.KeepAlive(g)
	return err == nil && st.Nlink > 0
}

// genForTx returns the generation file mapping a transaction uses, mapping
// it anew if the Driver has none or its file was unlinked. fresh says the
// counters of the returned mapping say nothing yet (the sysfs tree must be
// rendered whole). nil means there is none: the transaction unlinks the
// file before it writes (invalidate). The caller holds the state lock.
func (d *Driver) genForTx() (g *genMap, fresh bool) {
	if g = d.gen.Load(); g != nil && g.linked() {
		return g, false
	}
	g, fresh, err := mapGen(d.dir, true)
	if err != nil {
		d.gen.Store(nil)
		return nil, false
	}
	d.gen.Store(g)
	return g, fresh
}

// invalidate is what a writer without a mapping does instead of
// incrementing the generation: it unlinks the file, so that every Driver
// that mapped it stops trusting what it remembers.
func (d *Driver) invalidate() {
	// If this fails too, nothing can tell the others: they answer polls
	// from memory until they see another change (docs/simulator.md).
	os.Remove(filepath.Join(d.dir, genFile))
}
