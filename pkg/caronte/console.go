package caronte

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/containerd/log"
)

// chunkSize is the most the pump reads from the console, and writes to the
// FIFO, at a time. Together with the ring it bounds the pump's memory:
// ConsoleBuffer + 2*chunkSize (3*chunkSize with a terminal's translation).
const chunkSize = 128 << 10

// firstChunk is the size the pump's buffers start at. Most consoles print a
// line now and then, and every partition keeps its buffers for its whole
// life: starting small keeps an idle partition's pump at a few KiB instead
// of 256 KiB. A buffer doubles, up to chunkSize, each time a read or a take
// fills it, so a flood reaches full-size chunks within a few reads.
const firstChunk = 4 << 10

// grown returns buf, or a buffer twice its size (at most chunkSize) when
// the last use filled it.
func grown(buf []byte, used int) []byte {
	if used < len(buf) || len(buf) >= chunkSize {
		return buf
	}
	return make([]byte, min(2*len(buf), chunkSize))
}

// closeWait bounds how long the pump waits for its reader goroutine to return
// after closing the console stream.
const closeWait = 500 * time.Millisecond

// pump copies a cell's console stream into the stdout file through a bounded
// ring. One goroutine reads the console into the ring; another writes the
// ring to the FIFO and may block there when the client's reader is slow.
// When the ring is full the reader waits for the writer as long as the
// writer makes progress (so a slow reader loses nothing and the inmate
// feels backpressure); once a write has been stuck for the stall timeout
// the oldest output is dropped instead and a marker line takes its place
// (docs/console.md). The reader never waits on a stalled FIFO.
type pump struct {
	src      io.ReadCloser // the cell's console; nil if it has none
	dst      *os.File      // stdout; nil means /dev/null
	log      *log.Entry
	stall    time.Duration // a write stuck this long is a stalled reader
	terminal bool          // translate "\n" to "\r\n", as a pty's ONLCR does

	readDone  chan struct{} // closed when readLoop returns (immediately if src is nil)
	writeDone chan struct{} // closed when writeLoop returns (immediately if dst is nil)
	closeSrc  sync.Once     // src is closed once, by finish or stop

	mu       sync.Mutex // guards the fields below
	cond     *sync.Cond // on mu: signalled when ring, dropped or flushing change
	ring     ring       // console output not yet taken by writeLoop
	dropped  int64      // bytes dropped since the last marker was taken
	lastByte byte       // last byte taken from the ring, '\n' before any
	lastRead time.Time  // when readLoop last got data (or finished waiting for room)
	pushing  bool       // readLoop is inside push, possibly waiting for room
	writing  bool       // writeLoop is inside a Write to dst
	writeAt  time.Time  // when that Write began
	flushing bool       // no more input will come: writeLoop empties the ring and returns
	discard  bool       // the writer has stopped: readLoop throws input away
}

func newPump(src io.ReadCloser, dst *os.File, bufSize int, stall time.Duration, terminal bool, l *log.Entry) *pump {
	p := &pump{
		src:       src,
		dst:       dst,
		log:       l,
		stall:     stall,
		terminal:  terminal,
		readDone:  make(chan struct{}),
		writeDone: make(chan struct{}),
		ring:      ring{max: bufSize},
		lastByte:  '\n',
		discard:   dst == nil,
	}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// start launches the reader and writer goroutines. They are not tracked by
// the Proxy's WaitGroup: a console whose Close does not interrupt Read would
// otherwise hang Close; finish and stop wait for them with a bound instead.
func (p *pump) start() {
	if p.src == nil {
		close(p.readDone)
	} else {
		go p.readLoop()
	}
	if p.dst == nil {
		close(p.writeDone)
	} else {
		go p.writeLoop()
	}
}

func (p *pump) readLoop() {
	defer close(p.readDone)
	buf := make([]byte, firstChunk)
	for {
		n, err := p.src.Read(buf)
		if n > 0 {
			p.push(buf[:n])
			buf = grown(buf, n)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) && !errors.Is(err, os.ErrClosed) {
				p.log.WithError(err).Warn("read cell console")
			}
			return
		}
	}
}

// push appends console output to the ring. When the ring lacks room it
// waits for the writer while the writer is making progress, and otherwise
// drops the oldest bytes: it never waits on a stalled FIFO.
func (p *pump) push(b []byte) {
	p.mu.Lock()
	p.lastRead = time.Now()
	p.pushing = true
	firstDrop := false
	for len(b) > 0 && !p.discard {
		room := p.ring.max - p.ring.n
		if room == 0 && !p.flushing {
			// Full: wait for the writer unless it has been stuck in one
			// write for the stall timeout. A writer not in a write has
			// been signalled and is about to take data.
			wait := p.stall
			if p.writing {
				wait -= time.Since(p.writeAt)
			}
			if wait > 0 {
				p.waitLocked(wait)
				continue
			}
		}
		k := len(b)
		if room > 0 {
			k = min(k, room)
		}
		// With no room (a stalled reader, or flushing) the oldest output
		// makes way.
		dropped := p.ring.write(b[:k])
		b = b[k:]
		firstDrop = firstDrop || dropped > 0 && p.dropped == 0
		p.dropped += int64(dropped)
		p.cond.Broadcast()
	}
	p.pushing = false
	p.lastRead = time.Now()
	p.mu.Unlock()
	if firstDrop {
		p.log.WithField("buffer", p.ring.max).Warn("stdout reader is not keeping up, dropping oldest console output")
	}
}

// waitLocked waits on cond for at most d. p.mu must be held.
func (p *pump) waitLocked(d time.Duration) {
	t := time.AfterFunc(d, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	p.cond.Wait()
	t.Stop()
}

// takeLocked fills buf with the next output to write: a drop marker if bytes
// were dropped since the last take, then ring data. p.mu must be held.
func (p *pump) takeLocked(buf []byte) []byte {
	out := buf[:0]
	if p.dropped > 0 {
		if p.lastByte != '\n' {
			out = append(out, '\n') // the marker gets a line of its own
		}
		out = fmt.Appendf(out, "[runphi: dropped %d bytes of console output]\n", p.dropped)
		p.dropped = 0
	}
	n := p.ring.read(buf[len(out):cap(buf)])
	out = buf[:len(out)+n]
	if len(out) > 0 {
		p.lastByte = out[len(out)-1]
	}
	return out
}

func (p *pump) writeLoop() {
	defer close(p.writeDone)
	// Room for a chunk of data plus a marker.
	const markerRoom = 128
	buf := make([]byte, 0, firstChunk+markerRoom)
	var tbuf []byte // terminal translation of buf
	for {
		p.mu.Lock()
		for p.ring.n == 0 && p.dropped == 0 && !p.flushing {
			p.cond.Wait()
		}
		if p.ring.n == 0 && p.dropped == 0 {
			p.mu.Unlock()
			return // flushing and empty
		}
		out := p.takeLocked(buf)
		if len(out) == cap(buf) && cap(buf) < chunkSize+markerRoom {
			// A full take: more is waiting, take bigger chunks. out
			// keeps the old array until it is written.
			buf = make([]byte, 0, min(2*(cap(buf)-markerRoom), chunkSize)+markerRoom)
		}
		p.writing, p.writeAt = true, time.Now()
		p.cond.Broadcast() // room in the ring
		p.mu.Unlock()

		if p.terminal {
			tbuf = appendONLCR(tbuf[:0], out)
			out = tbuf
		}
		n, err := p.dst.Write(out)
		p.mu.Lock()
		p.writing = false
		p.mu.Unlock()
		if err != nil {
			p.mu.Lock()
			lost := int64(len(out)-n) + int64(p.ring.n) + p.dropped
			p.discard = true
			p.ring = ring{max: p.ring.max}
			p.dropped = 0
			flushing := p.flushing
			p.mu.Unlock()
			l := p.log.WithError(err).WithField("lost_bytes", lost)
			if flushing && errors.Is(err, os.ErrDeadlineExceeded) {
				l.Warn("stdout reader stalled at exit, dropping the rest of the console output")
			} else {
				l.Error("write console output to stdout, dropping further output")
			}
			return
		}
	}
}

// finish ends the pump after the cell stopped: it lets the console drain
// until EOF, or until no output has arrived for idle (the inmate has stopped,
// so what it wrote is already in the stream), or until timeout; closes the
// console; then writes out the ring within timeout. abort, when closed,
// skips the waits. It returns when the writer has stopped; dst stays open.
func (p *pump) finish(timeout, idle time.Duration, abort <-chan struct{}) {
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	if p.src != nil {
	drain:
		for {
			p.mu.Lock()
			last := p.lastRead
			p.mu.Unlock()
			if last.Before(start) {
				last = start
			}
			wait := idle - time.Since(last)
			p.mu.Lock()
			pushing := p.pushing
			p.mu.Unlock()
			if pushing {
				// The reader waits for room in the ring: the console
				// may hold more, it is not idle.
				wait = max(wait, idle/4)
			} else if wait <= 0 {
				break // idle: the console has nothing more for us
			}
			idleTimer := time.NewTimer(wait)
			select {
			case <-p.readDone:
				idleTimer.Stop()
				break drain
			case <-deadline.C:
				idleTimer.Stop()
				p.log.WithField("timeout", timeout).Warn("cell console still producing output after the cell stopped, closing it")
				break drain
			case <-abort:
				idleTimer.Stop()
				break drain
			case <-idleTimer.C:
			}
		}
		p.closeSource()
	}
	p.stopWriter(timeout, abort)
}

// stop ends the pump at once (Close before exit): no drain, no flush wait.
func (p *pump) stop() {
	if p.src != nil {
		p.closeSource()
	}
	closed := make(chan struct{})
	close(closed)
	p.stopWriter(0, closed)
}

// closeSource closes the console stream and waits, bounded, for readLoop.
func (p *pump) closeSource() {
	p.closeSrc.Do(func() {
		if err := p.src.Close(); err != nil {
			p.log.WithError(err).Debug("close cell console")
		}
	})
	select {
	case <-p.readDone:
	case <-time.After(closeWait):
		p.log.Warn("cell console reader did not return after close, abandoning it")
	}
}

// stopWriter lets writeLoop empty the ring into dst within timeout (or
// stops it at once if abort is closed) and waits for it to return.
func (p *pump) stopWriter(timeout time.Duration, abort <-chan struct{}) {
	p.mu.Lock()
	p.flushing = true
	p.cond.Broadcast()
	p.mu.Unlock()
	if p.dst == nil {
		return
	}
	select {
	case <-abort:
		timeout = 0
	default:
	}
	// A write parked on a full FIFO wakes up when the deadline passes. Files
	// that do not support deadlines (regular files, /dev/null) never block.
	if err := p.dst.SetWriteDeadline(time.Now().Add(timeout)); err != nil && !errors.Is(err, os.ErrNoDeadline) {
		p.log.WithError(err).Debug("set stdout write deadline")
	}
	select {
	case <-p.writeDone:
	case <-time.After(timeout + closeWait):
		p.log.Warn("console writer did not stop in time, closing stdout under it")
	}
	// A console reader abandoned by closeSource may still push: drop it.
	p.mu.Lock()
	p.discard = true
	p.ring = ring{max: p.ring.max}
	p.mu.Unlock()
}

// appendONLCR appends b to dst with every "\n" turned into "\r\n": the
// output processing (OPOST|ONLCR) a pty gives a serial console, so that a
// terminal returns to column 0 at each line end.
func appendONLCR(dst, b []byte) []byte {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return append(dst, b...)
		}
		dst = append(dst, b[:i]...)
		dst = append(dst, '\r', '\n')
		b = b[i+1:]
	}
	return dst
}

// ring is a FIFO byte queue of at most max bytes that drops its oldest bytes
// to make room. Its storage grows on demand up to max, so an idle or
// well-drained console does not cost max bytes. Not safe for concurrent use.
type ring struct {
	buf  []byte
	r, n int // read offset and length in buf
	max  int
}

// write appends b and returns how many of the oldest bytes (already queued
// or at the front of b) were dropped to keep at most max bytes.
func (q *ring) write(b []byte) (dropped int) {
	if len(b) == 0 {
		return 0
	}
	if len(b) >= q.max {
		dropped = q.n + len(b) - q.max
		b = b[len(b)-q.max:]
		q.r, q.n = 0, 0
	} else if over := q.n + len(b) - q.max; over > 0 {
		q.discard(over)
		dropped = over
	}
	q.grow(q.n + len(b))
	w := (q.r + q.n) % len(q.buf)
	c := copy(q.buf[w:], b)
	copy(q.buf, b[c:])
	q.n += len(b)
	return dropped
}

// read moves up to len(p) bytes out of the queue into p.
func (q *ring) read(p []byte) int {
	n := min(len(p), q.n)
	if n == 0 {
		return 0
	}
	c := copy(p[:n], q.buf[q.r:])
	copy(p[c:n], q.buf)
	q.discard(n)
	return n
}

func (q *ring) discard(n int) {
	q.n -= n
	if q.n == 0 {
		q.r = 0
		return
	}
	q.r = (q.r + n) % len(q.buf)
}

// grow makes room for need bytes (need <= max), keeping the queued bytes.
func (q *ring) grow(need int) {
	if need <= len(q.buf) {
		return
	}
	size := min(max(need, 2*len(q.buf), 4096), q.max)
	buf := make([]byte, size)
	n := q.n
	q.read(buf[:n])
	q.buf, q.r, q.n = buf, 0, n
}
