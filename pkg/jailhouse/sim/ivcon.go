package sim

// The per-cell ivshmem console. runphi's console protocol (docs/console.md,
// "The ivshmem console protocol") puts one byte ring in each peer's output
// section of a two-peer ivshmem link: the root cell (peer 0) writes the
// inmate's input into its section, the inmate (peer 1) writes its output
// into its own. Each section also carries its owner's consumer index into
// the other ring, so every field has exactly one writer and neither side
// needs a lock.
//
// The simulator keeps the link in one file per cell instance,
// console/<serial>.con: section 0 (root) at offset 0, section 1 (inmate)
// right after it. The inmate's indices are authoritative in state.json
// (cellState.Con) and copied into its section header after the state is
// written, so a writer killed mid-transaction never publishes bytes the
// state does not count. The root side belongs to whoever holds the console
// open (OpenCellConsole) and lives only in the file, as shared memory would.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// The section header of the console protocol, version 1. All fields are
// little-endian.
const (
	// ConsoleMagic opens every section header.
	ConsoleMagic = "RPCN"
	// ConsoleVersion is the protocol version this simulator speaks.
	ConsoleVersion = 1
	// ConsoleHeaderSize is the size of a section header; the ring's bytes
	// follow it.
	ConsoleHeaderSize = 64
	// ConsoleProtocol is the ivshmem protocol number of the console link
	// (the custom range 0x4000-0x7fff, jailhouse-abi §6).
	ConsoleProtocol = 0x4001
	// ConsoleReady is bit 0 of flags: the section's owner has initialised
	// it and is attached. An inmate may drop output instead of waiting
	// while the root's section is not ready (nobody reads).
	ConsoleReady = 1 << 0

	conOffMagic    = 0x00 // char[4] "RPCN"
	conOffVersion  = 0x04 // u32
	conOffSize     = 0x08 // u32: ring bytes after the header, a power of two
	conOffFlags    = 0x0c // u32: ConsoleReady
	conOffTail     = 0x10 // u32: bytes ever written into this section's ring
	conOffPeerHead = 0x14 // u32: bytes ever consumed from the peer's ring
	conOffDropped  = 0x18 // u32: bytes the owner dropped instead of waiting
)

// conRing is the ring size of each direction in the simulator: large
// enough that one transaction (which costs a state file write) moves a
// megabyte of output.
const conRing = 1 << 20

// conSection is the size of one simulated output section.
const conSection = ConsoleHeaderSize + conRing

// conPeerRoot and conPeerInmate are the section indexes of the two peers.
const (
	conPeerRoot   = 0
	conPeerInmate = 1
)

// conMaxLine bounds the input line an echo command collects.
const conMaxLine = 4096

// conHeader is one section header as read from the file.
type conHeader struct {
	Magic    [4]byte
	Version  uint32
	Size     uint32
	Flags    uint32
	Tail     uint32
	PeerHead uint32
	Dropped  uint32
}

func (h *conHeader) valid() bool {
	return string(h.Magic[:]) == ConsoleMagic && h.Version == ConsoleVersion && h.Size == conRing
}

func decodeConHeader(b []byte) conHeader {
	var h conHeader
	copy(h.Magic[:], b[conOffMagic:])
	h.Version = le.Uint32(b[conOffVersion:])
	h.Size = le.Uint32(b[conOffSize:])
	h.Flags = le.Uint32(b[conOffFlags:])
	h.Tail = le.Uint32(b[conOffTail:])
	h.PeerHead = le.Uint32(b[conOffPeerHead:])
	h.Dropped = le.Uint32(b[conOffDropped:])
	return h
}

// conInmate is the inmate's side of the link, kept in the state file: the
// header fields of its output section.
type conInmate struct {
	Tail     uint32 `json:"tail"`
	PeerHead uint32 `json:"peer_head"`
	Dropped  uint32 `json:"dropped,omitempty"`
}

func (d *Driver) conPath(serial uint64) string {
	return filepath.Join(d.dir, consoleDir, strconv.FormatUint(serial, 10)+".con")
}

// conDataOffset is the file offset of ring position pos of a peer's ring.
func conDataOffset(peer int, pos uint32) int64 {
	return int64(peer)*conSection + ConsoleHeaderSize + int64(pos%conRing)
}

// readConHeader reads one section header.
func readConHeader(f *os.File, peer int) (conHeader, error) {
	var b [ConsoleHeaderSize]byte
	if _, err := f.ReadAt(b[:], int64(peer)*conSection); err != nil {
		return conHeader{}, fmt.Errorf("read console section %d: %w", peer, err)
	}
	return decodeConHeader(b[:]), nil
}

// putConU32 writes one header field of a section.
func putConU32(f *os.File, peer int, field int64, v uint32) error {
	var b [4]byte
	le.PutUint32(b[:], v)
	if _, err := f.WriteAt(b[:], int64(peer)*conSection+field); err != nil {
		return fmt.Errorf("write console section %d: %w", peer, err)
	}
	return nil
}

// readRing copies n bytes of a peer's ring from position pos into p.
func readRing(f *os.File, peer int, pos uint32, p []byte) error {
	first := min(len(p), int(conRing-pos%conRing))
	if _, err := f.ReadAt(p[:first], conDataOffset(peer, pos)); err != nil {
		return err
	}
	if first < len(p) {
		if _, err := f.ReadAt(p[first:], conDataOffset(peer, 0)); err != nil {
			return err
		}
	}
	return nil
}

// writeRing copies p into a peer's ring at position pos.
func writeRing(f *os.File, peer int, pos uint32, p []byte) error {
	first := min(len(p), int(conRing-pos%conRing))
	if _, err := f.WriteAt(p[:first], conDataOffset(peer, pos)); err != nil {
		return err
	}
	if first < len(p) {
		if _, err := f.WriteAt(p[first:], conDataOffset(peer, 0)); err != nil {
			return err
		}
	}
	return nil
}

// initConsole creates the link file of a new cell: both section headers,
// the inmate's marked ready (the simulated inmate needs no setup), the
// root's not (nobody reads yet).
func (d *Driver) initConsole(serial uint64) error {
	f, err := os.OpenFile(d.conPath(serial), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("cell console: %w", err)
	}
	// The rings start as holes: reading them gives zeros, as fresh
	// shared memory might, and costs no disk.
	werr := f.Truncate(2 * conSection)
	for peer := range 2 {
		var h [ConsoleHeaderSize]byte
		copy(h[conOffMagic:], ConsoleMagic)
		le.PutUint32(h[conOffVersion:], ConsoleVersion)
		le.PutUint32(h[conOffSize:], conRing)
		if peer == conPeerInmate {
			le.PutUint32(h[conOffFlags:], ConsoleReady)
		}
		if werr == nil {
			_, werr = f.WriteAt(h[:], int64(peer)*conSection)
		}
	}
	return errors.Join(werr, f.Close())
}

// syncConsole writes the inmate's indices into its section header.
func (d *Driver) syncConsole(serial uint64, c conInmate) error {
	f, err := os.OpenFile(d.conPath(serial), os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cell console: %w", err)
	}
	var b [12]byte
	le.PutUint32(b[0:], c.Tail)
	le.PutUint32(b[4:], c.PeerHead)
	le.PutUint32(b[8:], c.Dropped)
	_, werr := f.WriteAt(b[:], conSection+conOffTail)
	return errors.Join(werr, f.Close())
}

// rootSide returns the root's section header of a cell's console as this
// transaction sees it: read once per transaction, like a load from shared
// memory the inmate polls. A missing file (a cell created in this
// transaction) reads as a fresh section.
func (t *tx) rootSide(c *cellState) conHeader {
	if h, ok := t.rootHdr[c.Serial]; ok {
		return h
	}
	var h conHeader
	if f, err := os.Open(t.d.conPath(c.Serial)); err == nil {
		h, _ = readConHeader(f, conPeerRoot)
		f.Close()
	}
	if t.rootHdr == nil {
		t.rootHdr = map[uint64]conHeader{}
	}
	t.rootHdr[c.Serial] = h
	return h
}

// conWrite is the inmate writing s to its output ring. It returns how many
// bytes the ring took; the rest waits for the reader. With no reader
// attached (the root's section not ready) the inmate drops what does not
// fit and counts it, so an inmate never blocks on a console nobody reads.
// Writing into an empty ring rings the reader's doorbell (an MMIO exit).
func (t *tx) conWrite(c *cellState, s string) int {
	h := t.rootSide(c)
	used := c.Con.Tail - h.PeerHead
	free := 0
	if used <= conRing {
		free = int(conRing - used)
	}
	n := min(len(s), free)
	if n > 0 {
		if used == 0 && len(c.CPUs) > 0 {
			t.stat(c.CPUs[0], statMMIO, 1)
		}
		t.ringOut(c, []byte(s[:n]))
	}
	if n < len(s) && h.Flags&ConsoleReady == 0 {
		c.Con.Dropped += uint32(len(s) - n)
		t.markCon(c)
		return len(s)
	}
	return n
}

// segmentData recycles the buffers of console segments between
// transactions. A flooding inmate fills its 1 MiB ring in every
// transaction; growing a fresh buffer each time made the simulator, which
// runs its inmates inside the shim that started them, allocate ~2.5 bytes
// for every byte printed, and the shim's RSS under a console flood swing
// with the garbage.
var segmentData = sync.Pool{New: func() any { return new([]byte) }}

// newSegmentData returns an empty buffer from segmentData.
func newSegmentData() []byte {
	return (*segmentData.Get().(*[]byte))[:0]
}

// recycleOut hands the buffers of the transaction's segments back to
// segmentData once the commit has written them.
func (t *tx) recycleOut() {
	for i := range t.out {
		if b := t.out[i].data; cap(b) <= 2*conRing {
			b = b[:0]
			segmentData.Put(&b)
		}
		t.out[i].data = nil
	}
	t.out = t.out[:0]
}

// ringOut queues b for the inmate's ring at its tail and advances the tail.
func (t *tx) ringOut(c *cellState, b []byte) {
	pos := c.Con.Tail
	for len(b) > 0 {
		chunk := min(len(b), int(conRing-pos%conRing))
		off := conDataOffset(conPeerInmate, pos)
		if n := len(t.out); n > 0 && t.out[n-1].serial == c.Serial && t.out[n-1].off+int64(len(t.out[n-1].data)) == off {
			t.out[n-1].data = append(t.out[n-1].data, b[:chunk]...)
		} else {
			t.out = append(t.out, segment{serial: c.Serial, off: off, data: append(newSegmentData(), b[:chunk]...)})
		}
		b = b[chunk:]
		pos += uint32(chunk)
	}
	c.Con.Tail = pos
	t.markCon(c)
}

// conPeek returns up to conMaxLine bytes of input the root wrote and the
// inmate has not consumed.
func (t *tx) conPeek(c *cellState) []byte {
	h := t.rootSide(c)
	avail := h.Tail - c.Con.PeerHead
	if avail == 0 || avail > conRing {
		return nil
	}
	f, err := os.Open(t.d.conPath(c.Serial))
	if err != nil {
		return nil
	}
	defer f.Close()
	p := make([]byte, min(int(avail), conMaxLine))
	if err := readRing(f, conPeerRoot, c.Con.PeerHead, p); err != nil {
		return nil
	}
	return p
}

// conConsume is the inmate taking n bytes of input.
func (t *tx) conConsume(c *cellState, n int) {
	c.Con.PeerHead += uint32(n)
	t.markCon(c)
}

// markCon records that the inmate's header must be written at commit.
func (t *tx) markCon(c *cellState) {
	if t.conDirty == nil {
		t.conDirty = map[uint64]conInmate{}
	}
	t.conDirty[c.Serial] = c.Con
}

// cellInput reads input for an echo: one line, without its terminator
// ('\n', '\r' or "\r\n"), or at most conMaxLine bytes. ok is false when no
// complete line is there yet; the bytes taken so far wait in line.
func (t *tx) cellInput(c *cellState, p *program) (line string, ok bool) {
	in := t.conPeek(c)
	taken := 0
	defer func() { t.conConsume(c, taken) }()
	if len(in) == 0 {
		return "", false
	}
	if p.SkipLF {
		p.SkipLF = false
		if in[0] == '\n' {
			taken++
		}
	}
	for taken < len(in) {
		b := in[taken]
		taken++
		if b == '\n' || b == '\r' {
			p.SkipLF = b == '\r'
			line, p.Line = p.Line, ""
			return line, true
		}
		p.Line += string(b)
		if len(p.Line) >= conMaxLine {
			line, p.Line = p.Line, ""
			return line, true
		}
	}
	return "", false
}
