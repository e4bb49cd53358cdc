package sim

// Console readers. The hypervisor console reproduces read() on
// /dev/jailhouse line by line from driver/main.c (jailhouse_console_read):
// a per-reader head into the 2048-byte ring, the "missed" line, the
// last_console snapshot after disable, and the O_NONBLOCK or 100 ms polling
// behaviour. A cell console is the root's end of the per-cell ivshmem
// console link (ivcon.go): it reads the inmate's output ring and writes its
// input ring.

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

const (
	// consolePoll is the driver's HZ/10 wait of a blocking console read.
	consolePoll = 100 * time.Millisecond
	// cellConsolePoll is how often a cell console reader waiting for
	// output runs a transaction when nothing tells it when to: its inmate
	// waits for its console (room for output, input), or the Driver has no
	// generation file. It is also how often a reader re-reads a clock that
	// is not time.Now (Options.Now: a fake clock moves without waking
	// anyone), and how often a blocked Write looks again.
	cellConsolePoll = 20 * time.Millisecond
	// cellConsoleGap is the least time between two transactions of a
	// waiting reader woken by changes to its cell (or to all cells, or to
	// a cell whose name shares its word), so that a burst of them does
	// not make it run a transaction each. A destroyed cell's console ends
	// within it.
	cellConsoleGap = 2 * time.Millisecond
	// cellConsoleMaxWait bounds a waiting reader's sleep while nothing is
	// due: the safety net for a wake it cannot get (a writer that could
	// not map the generation file unlinks it instead, and wakes nobody).
	cellConsoleMaxWait = time.Second
)

// OpenConsole opens the hypervisor console ring with the read semantics of
// /dev/jailhouse. With follow=false (O_NONBLOCK) a read returns io.EOF (the
// driver's 0) when there is no new data, and an error matching unix.EAGAIN
// while Jailhouse is disabled; with follow=true it waits, polling every
// 100 ms, and survives disable and re-enable. An enabled hypervisor without
// the virtual console flag fails reads with EPERM. Close unblocks a waiting
// read, which then returns io.EOF.
func (d *Driver) OpenConsole(follow bool) (io.ReadCloser, error) {
	return &hvConsole{d: d, follow: follow, closed: make(chan struct{})}, nil
}

type hvConsole struct {
	d      *Driver
	follow bool

	mu     sync.Mutex // serialises reads; guards the fields below
	head   uint32     // the driver's console_state.head
	lastID uint32     // console_state.last_console_id
	// idle remembers the last transaction that found nothing to read:
	// while the reader is where it was then and the mark is quiet, a
	// transaction would find nothing again (idleErrno, as then).
	idle      pollMark
	idleHead  uint32
	idleLast  uint32
	idleErrno unix.Errno

	closeOnce sync.Once
	closed    chan struct{}
}

func (r *hvConsole) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		select {
		case <-r.closed:
			return 0, io.EOF
		default:
		}
		var data []byte
		var missed uint32
		var errno unix.Errno
		head, lastID := r.head, r.lastID
		if head == r.idleHead && lastID == r.idleLast && r.d.quiet(r.idle) {
			errno = r.idleErrno
		} else {
			mark, err := r.d.updateMark(func(t *tx) error {
				s := t.s
				if s.LastConsole.Valid && s.LastConsole.ID != r.lastID {
					data, missed = s.LastConsole.Page.dumpDelta(r.head)
					if len(data) == 0 {
						r.lastID = s.LastConsole.ID
					}
					return nil
				}
				switch {
				case !s.Enabled:
					errno = unix.EAGAIN
				case !s.ConsoleAvailable:
					errno = unix.EPERM
				case s.Ring.Tail != r.head:
					data, missed = s.Ring.dumpDelta(r.head)
				}
				return nil
			}, nil)
			if err != nil {
				return 0, err
			}
			r.idle = pollMark{}
			if len(data) == 0 && r.lastID == lastID {
				// Found nothing and moved nothing: the same look
				// finds the same while the mark is quiet.
				r.idle, r.idleHead, r.idleLast, r.idleErrno = mark, head, lastID, errno
			}
		}
		if (len(data) == 0 || errno == unix.EAGAIN) && !r.follow {
			if errno != 0 {
				return 0, reqErr(jailhouse.RequestConsoleRead, "", errno, "")
			}
			return 0, io.EOF
		}
		switch {
		case errno == unix.EAGAIN:
			// Disabled: start over when it comes back.
			r.head = 0
		case errno != 0:
			return 0, reqErr(jailhouse.RequestConsoleRead, "", errno, "")
		case len(data) > 0:
			if missed > 0 {
				// Warn first; the data follows on the next read.
				r.head += missed
				return copy(p, jailhouse.MissedLine(missed)), nil
			}
			n := copy(p, data)
			r.head += uint32(n)
			return n, nil
		}
		select {
		case <-r.closed:
			return 0, io.EOF
		case <-time.After(consolePoll):
		}
	}
}

func (r *hvConsole) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	return nil
}

// OpenCellConsole opens the root's end of the named cell's ivshmem console
// link. Read returns the inmate's output; Write (the stream is an
// io.ReadWriteCloser) sends it input. The link carries what the inmate
// wrote and nobody consumed yet: a reader opened between create and start
// misses nothing, and only one reader at a time should hold a cell's
// console (each consumes what it reads). While it is open the root's
// section is marked ready, so the inmate waits for it instead of dropping
// output.
//
// Reads block until output arrives, and return
// io.EOF once everything has been read and the cell is gone, or has run
// and reached a terminal state (shut down, failed); and after Close. A
// cell that was never started is not at its end. Output the inmate had to
// drop while nobody read comes first as one line saying how much. Writes
// block while the input ring is full and fail with io.ErrClosedPipe once
// the inmate can no longer read (the cell is gone or stopped).
func (d *Driver) OpenCellConsole(name string) (io.ReadCloser, error) {
	var serial uint64
	var f *os.File
	err := d.update(func(t *tx) error {
		c := t.s.cell(name)
		if c == nil {
			return fmt.Errorf("open console of cell %q: %w", name, jailhouse.ErrCellNotFound)
		}
		serial = c.Serial
		t.markCon(c) // publish the inmate's indices, whatever a crash left
		// Under the lock the cell exists, so this file is its link
		// (and will be removed with it).
		var err error
		f, err = os.OpenFile(d.conPath(serial), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open console of cell %q: %w", name, err)
		}
		return nil
	}, nil)
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	r := &cellConsole{d: d, name: name, serial: serial, f: f, closed: make(chan struct{})}
	root, err := readConHeader(f, conPeerRoot)
	if err == nil {
		r.head, r.tail = root.PeerHead, root.Tail
		err = putConU32(f, conPeerRoot, conOffFlags, root.Flags|ConsoleReady)
	}
	if err == nil {
		var in conHeader
		if in, err = readConHeader(f, conPeerInmate); err == nil {
			if !in.valid() {
				err = fmt.Errorf("console link %s has no valid inmate section", d.conPath(serial))
			}
			r.dropped = 0 // report what was dropped before we came
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open console of cell %q: %w", name, err)
	}
	return r, nil
}

type cellConsole struct {
	d      *Driver
	name   string
	serial uint64
	f      *os.File

	rmu     sync.Mutex // serialises reads; guards head and dropped
	head    uint32     // bytes consumed from the inmate's ring (the root's peer_head)
	dropped uint32     // the inmate's dropped counter last reported

	wmu  sync.Mutex // serialises writes; guards tail
	tail uint32     // bytes written into the root's ring

	smu sync.Mutex // guards the last status, below
	// status is what the last status transaction saw, taken at
	// statusAt (real time); statusOK says there is one.
	status                  pollMark
	statusGone, statusEnded bool
	statusAt                time.Time
	statusOK                bool

	closeOnce sync.Once
	closed    chan struct{}
}

var _ io.ReadWriteCloser = (*cellConsole)(nil)

// cellStatus runs a transaction, which advances the inmates, and reports
// whether the cell is gone or has run and stopped. It answers from memory
// when that transaction would change nothing (poll.go).
func (r *cellConsole) cellStatus() (gone, ended bool, err error) {
	return r.lookAtCell(false)
}

// lookAtCell is cellStatus. waiting says the caller is a reader waiting
// for output after its first look: it also answers from memory while
// waitLeft says its next transaction is not due.
func (r *cellConsole) lookAtCell(waiting bool) (gone, ended bool, err error) {
	r.smu.Lock()
	defer r.smu.Unlock()
	if r.statusOK && (r.d.quiet(r.status) || waiting && r.waitLeft() > 0) {
		return r.statusGone, r.statusEnded, nil
	}
	mark, err := r.d.updateCellMark(r.name, func(t *tx) error {
		c := t.s.cellBySerial(r.serial)
		if c == nil {
			gone = true
			return nil
		}
		ended = c.Starts > 0 && c.State.Terminal()
		t.markCon(c)
		return nil
	}, nil)
	if err != nil {
		r.statusOK = false
		return false, false, err
	}
	r.status, r.statusGone, r.statusEnded, r.statusAt, r.statusOK = mark, gone, ended, time.Now(), true
	return gone, ended, nil
}

// waitLeft is how long a reader waiting for output has until its next
// transaction is due, after the last one (status, taken at statusAt):
//
//   - its cell changed, or all cells did (a cell mark, poll.go): one
//     transaction per cellConsoleGap;
//   - its inmate waits for its console, or there is no generation file:
//     one per cellConsolePoll, as always;
//   - else (only time makes the inmate act): when its sleep ends, looking
//     at a clock other than time.Now every cellConsolePoll, and at most
//     cellConsoleMaxWait.
//
// r.smu is held.
func (r *cellConsole) waitLeft() time.Duration {
	if !r.statusOK {
		return 0
	}
	m := r.status
	since := time.Since(r.statusAt)
	switch {
	case m.g == nil:
		return cellConsolePoll - since
	case !r.d.unchanged(m):
		return cellConsoleGap - since
	case !m.timed:
		return cellConsolePoll - since
	}
	left := time.Duration(m.wake - r.d.now().UnixNano())
	if !r.d.realClock {
		left = min(left, cellConsolePoll)
	}
	return min(left, cellConsoleMaxWait)
}

// wait sleeps until the reader's next transaction is due (waitLeft) or its
// cell changes, whichever is first, and reports false if the console was
// closed meanwhile. seq is its cell's word in g, read before the reader
// last looked at its link.
func (r *cellConsole) wait(g *genMap, seq uint32) bool {
	r.smu.Lock()
	left := r.waitLeft()
	r.smu.Unlock()
	if left > 0 {
		if g != nil {
			g.sleep(genSlot(r.name), seq, left) // Close nudges it
		} else {
			t := time.NewTimer(left)
			select {
			case <-r.closed:
			case <-t.C:
			}
			t.Stop()
		}
	}
	select {
	case <-r.closed:
		return false
	default:
		return true
	}
}

func (r *cellConsole) Read(p []byte) (int, error) {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	polled := false
	for {
		// The cell's futex word before anything is looked at:
		// whatever changes after this ends the wait below at once.
		var seq uint32
		g := r.d.gen.Load()
		if g != nil {
			seq = g.cell(genSlot(r.name))
		}
		select {
		case <-r.closed:
			return 0, io.EOF
		default:
		}
		in, err := readConHeader(r.f, conPeerInmate)
		if err != nil {
			return 0, fmt.Errorf("console of cell %q: %w", r.name, err)
		}
		if d := in.Dropped - r.dropped; d > 0 {
			r.dropped = in.Dropped
			return copy(p, fmt.Sprintf("[runphi-sim: the inmate dropped %d bytes of console output while nobody read it]\n", d)), nil
		}
		if avail := in.Tail - r.head; avail > 0 && avail <= conRing {
			n := min(len(p), int(avail))
			if err := readRing(r.f, conPeerInmate, r.head, p[:n]); err != nil {
				return 0, fmt.Errorf("console of cell %q: %w", r.name, err)
			}
			r.head += uint32(n)
			if err := putConU32(r.f, conPeerRoot, conOffPeerHead, r.head); err != nil {
				return 0, fmt.Errorf("console of cell %q: %w", r.name, err)
			}
			return n, nil
		}
		if polled && !r.wait(g, seq) {
			return 0, io.EOF
		}
		// Nothing to read: let the simulated inmate run (it only runs in
		// transactions, which lookAtCell runs when that can change
		// anything), then look again before waiting.
		gone, ended, err := r.lookAtCell(polled)
		if err != nil {
			return 0, err
		}
		if gone || ended {
			// The final indices are in the file now; read what is left.
			in, err := readConHeader(r.f, conPeerInmate)
			if err != nil {
				return 0, fmt.Errorf("console of cell %q: %w", r.name, err)
			}
			if in.Tail == r.head && in.Dropped == r.dropped {
				return 0, io.EOF
			}
		}
		polled = true
	}
}

// Write sends p to the inmate's console input, waiting while the input
// ring is full.
func (r *cellConsole) Write(p []byte) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	written := 0
	for written < len(p) {
		select {
		case <-r.closed:
			return written, io.ErrClosedPipe
		default:
		}
		in, err := readConHeader(r.f, conPeerInmate)
		if err != nil {
			return written, fmt.Errorf("console of cell %q: %w", r.name, err)
		}
		used := r.tail - in.PeerHead
		if used < conRing {
			n := min(len(p)-written, int(conRing-used))
			if err := writeRing(r.f, conPeerRoot, r.tail, p[written:written+n]); err != nil {
				return written, fmt.Errorf("console of cell %q: %w", r.name, err)
			}
			r.tail += uint32(n)
			if err := putConU32(r.f, conPeerRoot, conOffTail, r.tail); err != nil {
				return written, fmt.Errorf("console of cell %q: %w", r.name, err)
			}
			written += n
			continue
		}
		gone, ended, err := r.cellStatus()
		if err != nil {
			return written, err
		}
		if gone || ended {
			return written, fmt.Errorf("console input of cell %q: the inmate has stopped: %w", r.name, io.ErrClosedPipe)
		}
		select {
		case <-r.closed:
			return written, io.ErrClosedPipe
		case <-time.After(cellConsolePoll):
		}
	}
	return written, nil
}

// Close detaches the reader: the root's section is no longer ready, and
// a Read or Write in progress returns.
func (r *cellConsole) Close() error {
	var err error
	r.closeOnce.Do(func() {
		close(r.closed)
		// Wake a Read sleeping on its cell's word (and the other
		// waiters on it, which look and sleep again).
		if g := r.d.gen.Load(); g != nil {
			g.nudge(genSlot(r.name))
		}
		// Reads and writes in progress use the file; wait for them to
		// notice closed.
		r.rmu.Lock()
		r.wmu.Lock()
		if h, herr := readConHeader(r.f, conPeerRoot); herr == nil {
			putConU32(r.f, conPeerRoot, conOffFlags, h.Flags&^ConsoleReady)
		}
		err = r.f.Close()
		r.wmu.Unlock()
		r.rmu.Unlock()
	})
	return err
}
