package sim

// The simulated host lives in one JSON state file under the simulator's
// directory. Every access is a transaction: take the flock on the lock file,
// read the state, advance the scripted inmates to now, apply the change,
// write the state back (temp file + rename) and re-render the sysfs tree.
// The state is never kept in a Driver's memory between transactions, so any
// number of processes can share one simulated host and any of them may die
// at any time. What a Driver does remember is the answers of its last polls,
// each with the generation it was read at (gen.go, poll.go), so that it can
// tell when a transaction would give the same answer again.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// stateVersion changes whenever the state file's schema does.
const stateVersion = 2

// Files and directories under the simulator's directory.
const (
	stateFile   = "state.json"
	lockFile    = "state.lock"   // guards state.json and everything rendered from it
	requestLock = "request.lock" // the driver's global mutex (jailhouse_lock)
	consoleDir  = "console"      // per-cell console links, <serial>.con
	tmpDir      = "tmp"          // temp files, renamed into place
	dmesgFile   = "dmesg"        // the driver's kernel log lines
	sysfsSubdir = "sys/devices/jailhouse"
)

// hostState is the whole simulated host.
type hostState struct {
	Version int `json:"version"`
	// Arch is the build architecture of the simulated driver.
	Arch jailhouse.Arch `json:"arch"`
	// NrCPUIDs is Linux's nr_cpu_ids; 0 until the first enable when no
	// option fixed it, then the root cpu set's highest CPU + 1.
	NrCPUIDs      int  `json:"nr_cpu_ids"`
	NrCPUIDsFixed bool `json:"nr_cpu_ids_fixed"`

	Enabled bool `json:"enabled"`
	// System describes the enabled hypervisor; nil while disabled.
	System *systemState `json:"system,omitempty"`
	// Cells are the non-root cells in creation order (the driver's list).
	Cells []*cellState `json:"cells"`
	// NextSerial numbers cell instances, so that a console stream of a
	// destroyed cell is never confused with a new cell of the same name.
	NextSerial uint64 `json:"next_serial"`

	// Ring is the hypervisor's console page.
	Ring ring `json:"ring"`
	// ConsoleAvailable is the VIRTUAL_DEBUG_CONSOLE flag of the last enable.
	ConsoleAvailable bool `json:"console_available"`
	// LastConsole is the ring saved at disable (the driver's last_console).
	LastConsole lastConsole `json:"last_console"`
	// CoreWritten says the sysfs "core" file exists (first enable on).
	CoreWritten bool `json:"core_written"`

	// Stats are the per-CPU counters, indexed by the statistic codes of
	// CPU_GET_INFO (jailhouse-abi §3.2).
	Stats map[int]*cpuStats `json:"stats,omitempty"`

	// Injected maps a request name to the errno its next call fails with.
	Injected map[string]unix.Errno `json:"injected,omitempty"`
	// Delays maps a request name to how long its next call waits, holding
	// the driver's mutex, before it runs (InjectDelay).
	Delays map[string]time.Duration `json:"delays,omitempty"`
	// FaultGen counts ClearFaults calls; a delayed call that sees it change
	// stops waiting.
	FaultGen uint64 `json:"fault_gen,omitempty"`
	// Hanging are the requests waiting in an injected delay now, by
	// request name, so that `runphi sim faults` can say the driver is
	// wedged after the delay was taken.
	Hanging map[string]Hang `json:"hanging,omitempty"`
}

// Hang is a request waiting in an injected delay.
type Hang struct {
	PID   int       `json:"pid"`   // the process the request came from
	Until time.Time `json:"until"` // when the delay ends if nothing clears it
}

// systemState is what the hypervisor keeps of the system configuration.
type systemState struct {
	Flags     jailhouse.SystemFlags `json:"flags"`
	RootName  string                `json:"root_name"`
	RootCPUs  []int                 `json:"root_cpus"` // CPUs the root owns now
	GICDBase  uint64                `json:"gicd_base"`
	ConfigLen int                   `json:"config_len"`
	// RootPCI are the root cell's PCI devices (for returning devices to the
	// root and for ivshmem links).
	RootPCI []jailhouse.PCIDevice `json:"root_pci,omitempty"`
	Pool    pools                 `json:"pool"`
	// Links are the ivshmem links, by bdf.
	Links []ivshmemLink `json:"links,omitempty"`
}

type pools struct {
	MemSize   int `json:"mem_size"`
	MemUsed   int `json:"mem_used"`
	RemapSize int `json:"remap_size"`
	RemapUsed int `json:"remap_used"`
}

// ivshmemLink is one virtual PCI bdf shared by peers; Peers[id] is the name
// of the cell holding device id, "" when free.
type ivshmemLink struct {
	BDF   uint16   `json:"bdf"`
	Peers []string `json:"peers"`
}

// cellState is one non-root cell.
type cellState struct {
	Serial uint64              `json:"serial"`
	ID     int                 `json:"id"`
	Name   string              `json:"name"`
	Flags  jailhouse.CellFlags `json:"flags"`
	CPUs   []int               `json:"cpus"`
	Failed []int               `json:"failed_cpus,omitempty"`
	State  jailhouse.CellState `json:"state"`
	// Loadable is set by CELL_LOAD and cleared by CELL_START.
	Loadable        bool                  `json:"loadable"`
	CPUResetAddress uint64                `json:"cpu_reset_address"`
	MsgReplyTimeout uint64                `json:"msg_reply_timeout"`
	Regions         []jailhouse.Memory    `json:"regions,omitempty"`
	PCI             []jailhouse.PCIDevice `json:"pci,omitempty"`
	PoolPages       int                   `json:"pool_pages"`

	// Images is the cell memory the simulator cares about: what was
	// loaded where, with the bytes kept only for scripts.
	Images []image `json:"images,omitempty"`
	// Program is the scripted inmate; nil for an opaque payload, before
	// the first start and after the inmate stopped.
	Program *program `json:"program,omitempty"`
	// Policy is how the inmate answers SHUTDOWN_REQUEST.
	Policy string `json:"policy"`
	// Starts counts CELL_STARTs; a cell console reader ends at a terminal
	// state only once the cell has run.
	Starts int `json:"starts"`
	// Con is the inmate's side of its ivshmem console link (ivcon.go).
	Con conInmate `json:"con"`
}

// image is one loaded preload image.
type image struct {
	Target uint64 `json:"target"`
	Size   uint64 `json:"size"`
	Script []byte `json:"script,omitempty"` // the payload, if it is a script
}

// cpuStats are one CPU's counters, indexed by statistic code.
type cpuStats [numStats]uint32

// ring is struct jailhouse_virt_console: a 2048-byte ring and a monotonic
// 32-bit tail (the write index is tail % 2048).
type ring struct {
	Content []byte `json:"content"`
	Tail    uint32 `json:"tail"`
}

// ringSize is sizeof(jailhouse_virt_console.content).
const ringSize = 2048

type lastConsole struct {
	Valid bool   `json:"valid"`
	ID    uint32 `json:"id"`
	Page  ring   `json:"page"`
}

func (r *ring) write(s string) {
	if len(r.Content) != ringSize {
		r.Content = make([]byte, ringSize)
	}
	for i := 0; i < len(s); i++ {
		r.Content[r.Tail%ringSize] = s[i]
		r.Tail++
	}
}

// dumpDelta is the driver's __jailhouse_console_dump_delta: the bytes from
// head to tail, at most the last 2048, and how many were lost before them.
// The arithmetic is the driver's unsigned 32-bit one, wrap-around included.
func (r *ring) dumpDelta(head uint32) (data []byte, missed uint32) {
	delta := r.Tail - head
	if delta > ringSize {
		missed = delta - ringSize
		head = r.Tail - ringSize
		delta = ringSize
	}
	if delta == 0 {
		return nil, missed
	}
	content := r.Content
	if len(content) != ringSize {
		content = make([]byte, ringSize)
	}
	data = make([]byte, 0, delta)
	start := head % ringSize
	if start+delta > ringSize {
		data = append(data, content[start:]...)
		data = append(data, content[:delta-(ringSize-start)]...)
	} else {
		data = append(data, content[start:start+delta]...)
	}
	return data, missed
}

func (s *hostState) cell(name string) *cellState {
	for _, c := range s.Cells {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (s *hostState) cellBySerial(serial uint64) *cellState {
	for _, c := range s.Cells {
		if c.Serial == serial {
			return c
		}
	}
	return nil
}

// lowestFreeID is the driver's id allocation: the lowest unused integer,
// root being 0.
func (s *hostState) lowestFreeID() int {
	for id := 1; ; id++ {
		if !slices.ContainsFunc(s.Cells, func(c *cellState) bool { return c.ID == id }) {
			return id
		}
	}
}

// flock takes an exclusive flock on path, creating the file. Each call opens
// its own file description, so goroutines of one process exclude each other
// as well as other processes.
func flock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	return func() {
		// Closing the last descriptor releases the lock.
		f.Close()
	}, nil
}

func (d *Driver) readState() (*hostState, []byte, error) {
	path := filepath.Join(d.dir, stateFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read simulator state: %w", err)
	}
	var s hostState
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, nil, fmt.Errorf("simulator state %s is corrupt: %w", path, err)
	}
	if s.Version != stateVersion {
		return nil, nil, fmt.Errorf("simulator state %s has version %d, this simulator reads version %d", path, s.Version, stateVersion)
	}
	return &s, raw, nil
}

func (d *Driver) writeState(s *hostState) ([]byte, error) {
	raw, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode simulator state: %w", err)
	}
	if err := d.writeFileAtomic(filepath.Join(d.dir, stateFile), raw, 0o600); err != nil {
		return nil, err
	}
	return raw, nil
}

// writeFileAtomic writes a file through a temp file in the simulator's tmp
// directory and a rename, so no reader ever sees it half written and no
// temp file ever shows up in a directory someone lists.
func (d *Driver) writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Join(d.dir, tmpDir), "w-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, mode)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// tx is one transaction on the host state.
type tx struct {
	d   *Driver
	s   *hostState
	now time.Time
	// out collects console output to write, at file offsets of the
	// cells' console links, before the state that counts it.
	out []segment
	// created lists the cells created in this transaction, whose console
	// links are made at commit.
	created []uint64
	// gone lists the cells destroyed in this transaction, whose console
	// links are removed at commit (open readers keep reading them).
	gone []uint64
	// rootHdr caches the root's console section header of each cell, read
	// once per transaction (rootSide).
	rootHdr map[uint64]conHeader
	// conDirty holds the inmate console indices to write into the links'
	// headers after the state.
	conDirty map[uint64]conInmate
	// dmesg collects driver log lines.
	dmesg []string
	// gen is the generation file mapping the commit increments; nil when
	// the Driver has none (it then unlinks the file instead).
	gen *genMap
	// rerender says the sysfs tree cannot be trusted to match the state
	// read (a writer died before finishing it, or the generation file is
	// new): the commit renders it whole.
	rerender bool
}

// segment is a piece of a cell's console link at a file offset.
type segment struct {
	serial uint64
	off    int64
	data   []byte
}

// update runs fn as one transaction. fn may change tx.s; the state is
// written back (and sysfs re-rendered) if anything changed, even when fn
// fails, because the real driver keeps partial effects too (images loaded
// before a bad one, console messages). after, if not nil, runs after the
// render while the lock is still held: readers of the sysfs tree use it.
func (d *Driver) update(fn func(t *tx) error, after func() error) error {
	_, err := d.updateMark(fn, after)
	return err
}

// updateMark is update that also returns, when it succeeds, the mark a
// poll keeps with its answer (poll.go): the generation after the commit and
// when the next inmate is due, both taken under the lock.
func (d *Driver) updateMark(fn func(t *tx) error, after func() error) (pollMark, error) {
	return d.updateMarkOf("", false, fn, after)
}

// updateCellMark is updateMark for a poll about the cell called name: the
// mark is a cell mark (poll.go).
func (d *Driver) updateCellMark(name string, fn func(t *tx) error, after func() error) (pollMark, error) {
	return d.updateMarkOf(name, true, fn, after)
}

func (d *Driver) updateMarkOf(name string, cell bool, fn func(t *tx) error, after func() error) (pollMark, error) {
	unlock, err := flock(filepath.Join(d.dir, lockFile))
	if err != nil {
		return pollMark{}, err
	}
	defer unlock()
	d.txs.Add(1)
	s, raw, err := d.readState()
	if err != nil {
		return pollMark{}, err
	}
	t := &tx{d: d, s: s, now: d.now()}
	var fresh bool
	t.gen, fresh = d.genForTx()
	t.rerender = fresh || (t.gen != nil && t.gen.rendered() != t.gen.load())
	t.advance()
	var ferr error
	if fn != nil {
		ferr = fn(t)
		t.advance()
	}
	err = t.commit(raw)
	t.recycleOut()
	if err != nil {
		return pollMark{}, errors.Join(ferr, err)
	}
	if ferr != nil {
		return pollMark{}, ferr
	}
	if after != nil {
		// The mark holds even when after fails: it says what the
		// transaction saw, and some failures are answers (a cell that
		// does not exist).
		return t.mark(name, cell), after()
	}
	return t.mark(name, cell), nil
}

// mark is what this transaction leaves a poll to remember: a cell mark
// for the cell called name if cell. The caller holds the lock, so the
// counters are the ones the commit left.
func (t *tx) mark(name string, cell bool) pollMark {
	if t.gen == nil {
		return pollMark{}
	}
	if !cell {
		wake, timed := t.s.quietUntil(t.now)
		return pollMark{g: t.gen, gen: t.gen.load(), timed: timed, wake: wake}
	}
	slot := genSlot(name)
	wake, timed := t.s.cellQuietUntil(name, t.now)
	return pollMark{
		g: t.gen, gen: t.gen.load(), timed: timed, wake: wake,
		cell: true, slot: slot, cellGen: t.gen.cell(slot), structural: t.gen.structural(),
	}
}

// commit writes what the transaction changed: console ring bytes first,
// then the state that counts them, then the console indices that publish
// them, then the sysfs tree. Before the first write it increments the
// generation, so that every Driver's remembered answers are void even if
// this process dies half way; a commit that writes nothing leaves it.
// Publishing the inmate's console indices again (markCon on a state that
// did not change) rewrites what the link should already hold and counts
// as nothing.
func (t *tx) commit(old []byte) error {
	raw, err := json.Marshal(t.s)
	if err != nil {
		return fmt.Errorf("encode simulator state: %w", err)
	}
	changed := !bytes.Equal(raw, old)
	// prev is the state as it was, when it changed: for the cells the
	// commit announces (changes.go) and the sysfs delta.
	var prev *hostState
	if changed {
		prev = new(hostState)
		if json.Unmarshal(old, prev) != nil {
			prev = nil
		}
	}
	switch {
	case changed:
		slots, structural := changes(prev, t.s)
		t.d.announce(t.gen, slots, structural || t.rerender)
	case t.rerender || len(t.created) > 0 || len(t.out) > 0 || len(t.gone) > 0:
		// Writes of cells whose state did not change: unknown, so
		// every cell's polls look again.
		t.d.announce(t.gen, nil, true)
	case len(t.dmesg) > 0:
		// No poll reads dmesg; the generation says the host moved.
		t.d.announce(t.gen, nil, false)
	}
	for _, serial := range t.created {
		if err := t.d.initConsole(serial); err != nil {
			return err
		}
	}
	for _, seg := range t.out {
		if err := t.d.writeConsole(seg.serial, seg.off, seg.data); err != nil {
			return err
		}
	}
	if len(t.dmesg) > 0 {
		if err := t.d.appendDmesg(t.now, t.dmesg); err != nil {
			return err
		}
	}
	if changed {
		if err := t.d.writeFileAtomic(filepath.Join(t.d.dir, stateFile), raw, 0o600); err != nil {
			return err
		}
	}
	for serial, c := range t.conDirty {
		if err := t.d.syncConsole(serial, c); err != nil {
			return err
		}
	}
	for _, serial := range t.gone {
		// Readers that have the link open keep reading it.
		os.Remove(t.d.conPath(serial))
	}
	switch {
	case t.rerender:
		err = t.d.render(t.s)
	case changed && prev == nil:
		err = t.d.render(t.s)
	case changed:
		err = t.d.renderDelta(prev, t.s)
	default:
		return nil // the tree is as the last commit left it
	}
	if err != nil {
		return err
	}
	if t.gen != nil {
		t.gen.setRendered()
	}
	return nil
}

// announce is done under the state lock before a change is written:
// increment the generation, the cell words of slots and, if structural,
// the structural generation, or without a mapping unlink the file
// (invalidate).
func (d *Driver) announce(g *genMap, slots []int, structural bool) {
	if g != nil {
		g.bump(slots, structural)
	} else {
		d.invalidate()
	}
}

// writeConsole writes data at the file offset off of a cell's console
// link. Offsets come from the state, not from what the file holds, so
// bytes a crashed writer left behind without counting them are
// overwritten.
func (d *Driver) writeConsole(serial uint64, off int64, data []byte) error {
	f, err := os.OpenFile(d.conPath(serial), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cell console: %w", err)
	}
	_, werr := f.WriteAt(data, off)
	return errors.Join(werr, f.Close())
}

func (d *Driver) appendDmesg(now time.Time, lines []string) error {
	f, err := os.OpenFile(filepath.Join(d.dir, dmesgFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("dmesg: %w", err)
	}
	var b bytes.Buffer
	for _, l := range lines {
		fmt.Fprintf(&b, "[%s] %s\n", now.UTC().Format(time.RFC3339Nano), l)
	}
	_, werr := f.Write(b.Bytes())
	return errors.Join(werr, f.Close())
}
