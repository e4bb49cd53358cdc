package caronte

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// DefaultConsolePoll is how often the hypervisor's virtual console is
// polled when it has nothing new: the driver's own blocking read polls at
// HZ/10, so looking more often gains nothing.
const DefaultConsolePoll = 100 * time.Millisecond

// maxSkip bounds the reads that skip a busy ring's old content at open: the
// ring holds 2 KiB, so a handful of reads empties it unless something
// prints faster than we read, and then what is left is new output anyway.
const maxSkip = 64

// hvConsole turns the hypervisor's virtual console ring (opened
// non-blocking: a read with nothing new returns io.EOF) into the console
// stream of the partition that owns it. Only one partition may own the
// virtual console (pkg/partition records the owner), so its caronte is the
// ring's only reader on the host and every line that is not the
// hypervisor's own is that partition's output:
//
//   - hypervisor messages (jailhouse.IsHypervisorMessage: "Created cell",
//     page pool lines, …) go to the shim log, not the stream;
//   - the driver's "<missed N bytes of console log>" becomes a marked line
//     in the stream, so a reader sees where output was lost;
//   - a partial line (a prompt without a newline) is held for one poll
//     period, in case the rest is on its way, and then passed on.
//
// Reads block, polling every poll, until there is output; Close makes a
// pending Read return io.EOF. A disabled hypervisor (EAGAIN) is waited
// out; any other read error is returned.
type hvConsole struct {
	src  io.ReadCloser
	log  *log.Entry
	poll time.Duration

	closeOnce sync.Once
	closed    chan struct{}

	mu       sync.Mutex // serialises Read; guards the fields below
	buf      []byte     // one read of the ring
	out      []byte     // filtered output not yet returned
	partial  []byte     // the current line, not yet ended
	heldAt   time.Time  // when partial stopped growing
	lastByte byte       // last byte put in out, '\n' before any
}

// newHVConsole wraps the ring and skips what it already holds: that is
// the boot messages and the previous owner's output, not this partition's
// (its console is opened before its cell starts).
func newHVConsole(src io.ReadCloser, l *log.Entry, poll time.Duration) *hvConsole {
	c := &hvConsole{src: src, log: l, poll: poll, closed: make(chan struct{}), buf: make([]byte, 4096), lastByte: '\n'}
	skipped := 0
	for range maxSkip {
		n, err := src.Read(c.buf)
		skipped += n
		if err != nil || n == 0 {
			break
		}
	}
	if skipped > 0 {
		l.WithField("bytes", skipped).Debug("virtual console: skipped what the ring held before this partition")
	}
	return c
}

func (c *hvConsole) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		select {
		case <-c.closed:
			return 0, io.EOF
		default:
		}
		n, err := c.src.Read(c.buf)
		if n > 0 {
			c.feed(c.buf[:n])
			continue
		}
		switch {
		case err == nil, errors.Is(err, io.EOF):
			// Nothing new. A held partial line that did not grow for a
			// whole poll period is all there is for now (a prompt).
			if len(c.partial) > 0 && time.Since(c.heldAt) >= c.poll {
				c.emit(c.partial)
				c.partial = c.partial[:0]
				continue
			}
		case errors.Is(err, unix.EAGAIN):
			// The hypervisor is disabled; wait for it to come back.
		default:
			return 0, fmt.Errorf("read the virtual console: %w", err)
		}
		select {
		case <-c.closed:
			return 0, io.EOF
		case <-time.After(c.poll):
		}
	}
}

// feed splits one read of the ring into lines and sorts them.
func (c *hvConsole) feed(b []byte) {
	// The driver returns its "missed" line as a read of its own, cut to
	// the reader's buffer; whatever line was in progress lost its end.
	if missed, ok := jailhouse.ParseMissedLine(string(b)); ok {
		if len(c.partial) > 0 {
			c.emit(append(c.partial, '\n'))
			c.partial = c.partial[:0]
		}
		c.emit(fmt.Appendf(nil, "[runphi: the virtual console overran, %d bytes of console output were lost]\n", missed))
		return
	}
	for len(b) > 0 {
		i := strings.IndexByte(string(b), '\n')
		if i < 0 {
			c.partial = append(c.partial, b...)
			c.heldAt = time.Now()
			return
		}
		line := append(c.partial, b[:i+1]...)
		b = b[i+1:]
		c.partial = c.partial[:0]
		if jailhouse.IsHypervisorMessage(string(line)) {
			c.log.WithField("line", strings.TrimRight(string(line), "\r\n")).Info("hypervisor console")
			// line aliases partial's array, which is reused: done with it.
			continue
		}
		c.emit(line)
	}
}

// emit appends bytes to the output; a marker always starts a line.
func (c *hvConsole) emit(b []byte) {
	if len(b) == 0 {
		return
	}
	if b[0] == '[' && c.lastByte != '\n' && strings.HasPrefix(string(b), "[runphi:") {
		c.out = append(c.out, '\n')
	}
	c.out = append(c.out, b...)
	c.lastByte = b[len(b)-1]
}

func (c *hvConsole) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closed)
		err = c.src.Close()
	})
	return err
}
