package sim

// Console readers. The hypervisor console reproduces read() on
// /dev/jailhouse line by line from driver/main.c (jailhouse_console_read):
// a per-reader head into the 2048-byte ring, the "missed" line, the
// last_console snapshot after disable, and the O_NONBLOCK or 100 ms polling
// behaviour. A cell console is the simulator's model of the per-cell
// ivshmem console: a file per cell instance that only grows.

import (
	"errors"
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
	// cellConsolePoll is how often a cell console reader looks for output.
	cellConsolePoll = 20 * time.Millisecond
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

	mu     sync.Mutex // serialises reads; guards head and lastID
	head   uint32     // the driver's console_state.head
	lastID uint32     // console_state.last_console_id

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
		err := r.d.update(func(t *tx) error {
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

// OpenCellConsole opens the console stream of the named cell: everything
// its inmate printed since the cell was created. Reads block (polling every
// 20 ms) until output arrives, and return io.EOF once everything has been
// read and the cell is gone, or has run and reached a terminal state (shut
// down, failed); and after Close. A cell that was never started is not at
// its end, so a reader may be opened between create and start.
func (d *Driver) OpenCellConsole(name string) (io.ReadCloser, error) {
	var serial uint64
	var f *os.File
	err := d.update(func(t *tx) error {
		c := t.s.cell(name)
		if c == nil {
			return fmt.Errorf("open console of cell %q: %w", name, jailhouse.ErrCellNotFound)
		}
		serial = c.Serial
		// Under the lock the cell exists, so this file is its stream
		// (and will be removed with it).
		var err error
		f, err = os.OpenFile(d.consolePath(serial), os.O_RDONLY|os.O_CREATE, 0o600)
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
	return &cellConsole{d: d, name: name, serial: serial, f: f, closed: make(chan struct{})}, nil
}

type cellConsole struct {
	d      *Driver
	name   string
	serial uint64
	f      *os.File

	mu  sync.Mutex // serialises reads; guards off
	off int64

	closeOnce sync.Once
	closed    chan struct{}
}

func (r *cellConsole) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	for {
		select {
		case <-r.closed:
			return 0, io.EOF
		default:
		}
		var avail int64
		var gone, ended bool
		err := r.d.update(func(t *tx) error {
			c := t.s.cellBySerial(r.serial)
			if c == nil {
				gone = true
				return nil
			}
			avail = c.OutLen
			ended = c.Starts > 0 && c.State.Terminal()
			return nil
		}, nil)
		if err != nil {
			return 0, err
		}
		if gone {
			// The file was cut to its final length at destroy; what
			// is left of it is the rest of the stream.
			n, err := r.f.ReadAt(p, r.off)
			r.off += int64(n)
			if n > 0 {
				return n, nil
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return 0, err
			}
			return 0, io.EOF
		}
		if r.off < avail {
			want := min(int64(len(p)), avail-r.off)
			n, err := r.f.ReadAt(p[:want], r.off)
			r.off += int64(n)
			if n > 0 {
				return n, nil
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("console of cell %q: %w", r.name, err)
			}
		} else if ended {
			return 0, io.EOF
		}
		select {
		case <-r.closed:
			return 0, io.EOF
		case <-time.After(cellConsolePoll):
		}
	}
}

func (r *cellConsole) Close() error {
	var err error
	r.closeOnce.Do(func() {
		close(r.closed)
		// A Read in progress holds mu; closing the file under it would
		// race with its ReadAt, so wait for it to notice closed.
		r.mu.Lock()
		err = r.f.Close()
		r.mu.Unlock()
	})
	return err
}
