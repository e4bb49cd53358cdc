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
// So the directory holds "generation": 24 bytes, mapped MAP_SHARED by every
// Driver, holding native-endian counters:
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
//   - wake (uint32 at 16): a futex word. It is incremented with generation,
//     and by a console's Close, and every increment wakes whoever waits on
//     it (FUTEX_WAKE on the shared mapping reaches waiters in every
//     process). A cell console reader with nothing to read sleeps on it
//     (FUTEX_WAIT) until something changed, its inmate's sleep ends or its
//     poll period passes, instead of waking up every few milliseconds to
//     look: on the development VM each wakeup of an idle process costs
//     about 60 µs of CPU, so a 2 ms tick costs as much as the 20 ms
//     transactions it would replace.
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
	genSize = 24
)

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

func (g *genMap) wakeWord() *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Add(g.page, 16))
}

// load returns the generation.
func (g *genMap) load() uint64 {
	v := g.word(0).Load()
	runtime.KeepAlive(g)
	return v
}

// bump announces a change: the caller holds the state lock and is about to
// write. Waiters wake now; those that need a transaction wait for the lock.
func (g *genMap) bump() {
	g.word(0).Add(1)
	g.nudge()
}

// seq returns the futex word, to pass to sleep. Read it before looking at
// the generation: a change after the read then ends the sleep at once.
func (g *genMap) seq() uint32 {
	v := g.wakeWord().Load()
	runtime.KeepAlive(g)
	return v
}

// nudge increments the futex word and wakes every waiter, in any process.
func (g *genMap) nudge() {
	g.wakeWord().Add(1)
	futexWake(g.wakeWord())
	runtime.KeepAlive(g)
}

// sleep waits until the futex word is no longer seq (a change, or a
// nudge), or d passed, whichever is first. It may return early.
func (g *genMap) sleep(seq uint32, d time.Duration) {
	futexWait(g.wakeWord(), seq, d)
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
