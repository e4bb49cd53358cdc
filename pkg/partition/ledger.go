package partition

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// ledgerVersion is the version of the ledger file format this package
// writes; version 1 (CPUs and RAM only) is still read.
const ledgerVersion = 2

// Ledger is the node-wide record of what every partition holds: one JSON
// file shared by every shim process on the node. Every operation takes an
// exclusive flock on "<path>.lock" around its read-modify-write and replaces
// the file atomically (write a temporary file, fsync, rename), so concurrent
// shims never double-allocate and a crash never leaves a torn file. A Ledger
// value holds no open file and is safe for concurrent use; several values
// (or processes) on one path coordinate through the lock.
//
// Next to the file, the directory "cells" keeps the binary configuration of
// every live partition's cell (<cell>.cell), for operators (`runphi config
// inspect`) and for the cross-cell checks of later creations; it goes with
// the entry.
type Ledger struct {
	path string
}

// Entry is one ledger record.
type Entry struct {
	Allocation
	// Board is the name of the board profile the allocation was made on.
	Board string `json:"board"`
	// Created is when the allocation was made.
	Created time.Time `json:"created"`
	// PID is the process that made it (the owner shim) and PIDStart its
	// start time in clock ticks since boot (/proc/<pid>/stat field 22), so
	// that a reused pid is not mistaken for the owner.
	PID      int    `json:"pid,omitempty"`
	PIDStart uint64 `json:"pid_start,omitempty"`
	// Orphaned is when the entry's owner gave its cell up because the cell
	// could not be destroyed (an inmate that denies shutdown, a driver
	// error): the container is gone, the cell still holds its resources.
	// Zero for a live entry. Allocations retry destroying orphaned cells
	// (heal); the owner's id is free for a new container meanwhile.
	Orphaned time.Time `json:"orphaned,omitzero"`
	// OrphanReason says why the cell could not be destroyed.
	OrphanReason string `json:"orphan_reason,omitempty"`
}

// live reports whether e is owner's current entry, not an orphaned one.
func (e Entry) live(owner string) bool { return e.Owner == owner && e.Orphaned.IsZero() }

type ledgerFile struct {
	Version int     `json:"version"`
	Entries []Entry `json:"entries"`
}

// OpenLedger returns the ledger stored at path. Nothing is touched until the
// first operation; a missing file is an empty ledger. The directory is
// created 0700 and the file 0600 on the first write.
func OpenLedger(path string) *Ledger { return &Ledger{path: path} }

// Path returns the ledger file's path.
func (l *Ledger) Path() string { return l.path }

// ConfigPath returns where the configuration of the live cell named cell is
// kept.
func (l *Ledger) ConfigPath(cell string) string {
	return filepath.Join(filepath.Dir(l.path), "cells", cell+".cell")
}

// Allocate reserves the resources of req for owner on board b, all or
// nothing (allocate.go says how each resource is chosen), and records them
// with this process as the owner shim. It fails with errdefs.ErrAlreadyExists
// if owner already holds an allocation, with an *ExhaustedError
// (errdefs.ErrResourceExhausted) when the board has not enough left, with
// errdefs.ErrInvalidArgument for a request no board could satisfy, and with
// errdefs.ErrPermissionDenied for a prebuilt cell reaching outside what
// partitions may have.
//
// With a driver, every allocation first heals the ledger against the
// hypervisor: an entry whose cell does not exist and whose owner process is
// gone is reclaimed (its shim died between allocating and creating the cell,
// or after destroying it), and a cell the ledger does not know is logged and
// its CPUs (from sysfs), and the RAM, interrupts, devices, dedicated UART
// and ivshmem slots of its saved configuration if runphi created it, count
// as taken. The cell of an orphaned entry (MarkOrphaned) is destroyed
// again; once that works the entry is reclaimed. A saved configuration that
// neither an entry nor a live cell names is removed. The RAM of a foreign
// cell is not visible in sysfs: the pools are runphi's alone.
func (l *Ledger) Allocate(ctx context.Context, d jailhouse.Driver, owner string, b *Board, req Request) (Allocation, error) {
	ns, id, ok := strings.Cut(owner, "/")
	if !ok || ns == "" || id == "" {
		return Allocation{}, fmt.Errorf("ledger: owner %q is not <namespace>/<container id>: %w", owner, errdefs.ErrInvalidArgument)
	}
	var a Allocation
	err := l.update(func(f *ledgerFile) (bool, error) {
		for _, e := range f.Entries {
			if e.live(owner) {
				return false, fmt.Errorf("ledger: %s already holds cell %q (CPUs %s, RAM %s): %w",
					owner, e.Cell, jailhouse.FormatCPUList(e.CPUs), formatRanges(e.RAM), errdefs.ErrAlreadyExists)
			}
		}
		healed, foreign := l.heal(ctx, d, f)
		got, err := allocateEntry(f, foreign, owner, b, req)
		if err != nil {
			return healed, err
		}
		a = got
		return true, nil
	})
	if err != nil {
		return Allocation{}, err
	}
	return a, nil
}

// allocateEntry is the ledger's allocation without the file: it picks the
// resources of req for owner on b given the entries of f and the cells the
// ledger does not know, names the cell, and appends the entry (owned by
// this process) to f. It changes f only on success.
func allocateEntry(f *ledgerFile, foreign []foreignCell, owner string, b *Board, req Request) (Allocation, error) {
	ns, id, _ := strings.Cut(owner, "/")
	h := newHoldings()
	for i := range f.Entries {
		h.add(&f.Entries[i].Allocation)
	}
	// The root cell's name is taken too: CELL_CREATE of a cell named like
	// it fails with EEXIST, and a container may well be named after the
	// board.
	foreignNames := []string{b.system.RootCell.Name}
	for _, c := range foreign {
		foreignNames = append(foreignNames, c.info.Name)
		c.hold(h, b)
	}
	name, err := freeCellName(f.Entries, foreignNames, ns, id)
	if err != nil {
		return Allocation{}, err
	}
	a, err := b.allocate(h, f.Entries, owner, req)
	if err != nil {
		return Allocation{}, err
	}
	a.Owner, a.Cell = owner, name
	pid, start := self()
	f.Entries = append(f.Entries, Entry{
		Allocation: a, Board: b.Name, Created: time.Now().UTC(), PID: pid, PIDStart: start,
	})
	return a, nil
}

// self is this process's pid and start time, read once.
var self = sync.OnceValues(func() (int, uint64) {
	pid := os.Getpid()
	start, _ := processStart(pid)
	return pid, start
})

// foreignCell is a cell in the hypervisor that no ledger entry names.
type foreignCell struct {
	info jailhouse.CellInfo
	// config is its saved configuration, when runphi created it and lost
	// the entry; nil otherwise.
	config *jailhouse.Cell
}

// hold marks what the cell is known to hold as taken: besides CPUs, RAM,
// interrupts and devices, the board's dedicated UART it maps and the
// ivshmem window slots its devices sit in, which a new partition given the
// same port or slot would otherwise share with it.
func (c foreignCell) hold(h *holdings, b *Board) {
	holder := fmt.Sprintf("cell %q (id %d, not in the ledger)", c.info.Name, c.info.ID)
	for _, cpu := range c.info.CPUs {
		h.cpus[cpu] = holder
	}
	if c.config == nil {
		return
	}
	for _, cpu := range c.config.CPUs() {
		h.cpus[cpu] = holder
	}
	for _, m := range c.config.MemoryRegions {
		switch {
		case m.Size == 0 || m.Flags&jailhouse.MemCommRegion != 0:
		case m.Flags&jailhouse.MemIO != 0:
			if u := b.uartAt(m); u != nil && !u.Shared {
				h.uarts[u.Name] = holder
			}
		default:
			h.ram = append(h.ram, heldRange{memRange(m), holder})
		}
	}
	for _, ic := range c.config.IRQChips {
		for _, p := range Pins(&jailhouse.Cell{IRQChips: []jailhouse.IRQChip{ic}}, ic.Address) {
			h.pins[p] = holder
		}
	}
	for _, p := range c.config.PCIDevices {
		dev := int(p.BDF >> 3)
		h.devices[dev] = holder
		if k := dev - b.IVSHMEM.FirstDevice; p.BDF>>8 == 0 && k >= 0 && k < b.IVSHMEM.Slots {
			h.slots[k] = holder
		}
	}
}

// heal reclaims the entries of partitions that are gone and returns the
// cells the ledger does not know. It reports whether it changed f. Without
// a driver, or when the hypervisor cannot be read, it changes nothing.
func (l *Ledger) heal(ctx context.Context, d jailhouse.Driver, f *ledgerFile) (bool, []foreignCell) {
	if d == nil {
		return false, nil
	}
	logger := log.G(ctx)
	cells, err := d.Cells()
	if err != nil && !errors.Is(err, jailhouse.ErrNotLoaded) {
		logger.WithError(err).Warn("ledger: cannot list the hypervisor's cells; not reclaiming entries this time")
		return false, nil
	}
	// live names the non-root cells that exist; an orphan destroyed below
	// leaves it, though still listed in cells, so that it does not come
	// back as a cell nobody knows.
	live := map[string]bool{}
	for _, c := range cells {
		if c.ID != 0 {
			live[c.Name] = true
		}
	}
	changed := false
	kept := f.Entries[:0]
	for _, e := range f.Entries {
		if live[e.Cell] && !e.Orphaned.IsZero() {
			// Its owner gave it up; nobody else will ever destroy it.
			l := logger.WithField("owner", e.Owner).WithField("cell", e.Cell).WithField("orphaned", e.Orphaned.Format(time.RFC3339))
			if err := destroyCell(d, e.Cell); err != nil {
				l.WithError(err).Warn("ledger: the orphaned cell still cannot be destroyed; its CPUs and RAM stay taken")
				kept = append(kept, e)
				continue
			}
			l.Warn("ledger: destroyed an orphaned cell and reclaimed its entry")
			live[e.Cell] = false
		}
		if !live[e.Cell] && !processAlive(e.PID, e.PIDStart) {
			logger.WithField("owner", e.Owner).WithField("cell", e.Cell).WithField("pid", e.PID).
				WithField("cpus", jailhouse.FormatCPUList(e.CPUs)).WithField("ram", formatRanges(e.RAM)).
				Warn("ledger: reclaiming the entry of a partition whose cell and owner shim are both gone")
			l.removeConfig(e.Cell)
			changed = true
			continue
		}
		kept = append(kept, e)
	}
	f.Entries = kept

	known := map[string]bool{}
	for _, e := range f.Entries {
		known[e.Cell] = true
	}
	var foreign []foreignCell
	for _, c := range cells {
		if !live[c.Name] || known[c.Name] {
			continue
		}
		fc := foreignCell{info: c}
		if data, err := os.ReadFile(l.ConfigPath(c.Name)); err == nil {
			if cfg, err := jailhouse.DecodeCell(data); err == nil && cfg.Name == c.Name {
				fc.config = cfg
			}
		}
		logger.WithField("cell", c.Name).WithField("cell_id", c.ID).WithField("cpus", jailhouse.FormatCPUList(c.CPUs)).
			WithField("config_known", fc.config != nil).
			Warn("ledger: the hypervisor has a cell the ledger does not know; treating its CPUs (and its RAM, interrupts, devices, UART and slots, if its configuration is known) as taken")
		foreign = append(foreign, fc)
	}
	l.sweepConfigs(logger, func(cell string) bool { return known[cell] || live[cell] })
	return changed, foreign
}

// sweepConfigs removes the saved configurations that keep does not want:
// those of a cell whose entry was lost and which is gone too (its shim's
// Release found no entry, so nothing else would ever remove the file). The
// caller holds the ledger lock, under which every configuration is saved.
func (l *Ledger) sweepConfigs(logger *log.Entry, keep func(cell string) bool) {
	dir := filepath.Dir(l.ConfigPath("x"))
	names, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, n := range names {
		cell, ok := strings.CutSuffix(n.Name(), ".cell")
		if !ok || !n.Type().IsRegular() || keep(cell) {
			continue
		}
		if os.Remove(filepath.Join(dir, n.Name())) == nil {
			logger.WithField("cell", cell).Warn("ledger: removed the saved configuration of a cell that neither the ledger nor the hypervisor knows")
		}
	}
}

// Release drops owner's entry and its saved cell configuration. Releasing
// an owner without an entry is not an error, so Release may be repeated
// after a crash. An orphaned entry of the same owner stays: its cell still
// exists.
func (l *Ledger) Release(owner string) error {
	return l.locked(unix.LOCK_EX, func() error {
		f, err := l.read()
		if err != nil {
			return err
		}
		var released []string
		f.Entries = slices.DeleteFunc(f.Entries, func(e Entry) bool {
			if e.live(owner) {
				released = append(released, e.Cell)
				return true
			}
			return false
		})
		if len(released) == 0 {
			return nil
		}
		if err := l.write(f); err != nil {
			return err
		}
		// The saved configuration goes only once the entry is gone from
		// the file, still under the lock (a new partition may take the
		// same cell name right after): an entry that stays because the
		// write failed keeps the configuration that says what its cell
		// holds.
		for _, cell := range released {
			l.removeConfig(cell)
		}
		return nil
	})
}

// SaveConfig keeps the configuration of owner's cell at ConfigPath, written
// atomically. The entry must exist; the file goes when the entry goes.
func (l *Ledger) SaveConfig(owner string, config []byte) error {
	return l.locked(unix.LOCK_EX, func() error {
		f, err := l.read()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(f.Entries, func(e Entry) bool { return e.live(owner) })
		if i < 0 {
			return fmt.Errorf("ledger %s: no entry for %s: %w", l.path, owner, errdefs.ErrNotFound)
		}
		p := l.ConfigPath(f.Entries[i].Cell)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("ledger %s: %w", l.path, err)
		}
		return writeFileAtomic(p, config)
	})
}

// MarkOrphaned records that owner gave up its entry's cell, which could
// not be destroyed (reason says why): the entry stays, since the cell
// still holds its CPUs and RAM, but it no longer belongs to a container.
// The owner's id is free for a new container, and every later allocation
// tries to destroy the cell again (heal) and reclaims the entry once that
// works. Marking an owner without a live entry is not an error.
func (l *Ledger) MarkOrphaned(owner, reason string) error {
	return l.update(func(f *ledgerFile) (bool, error) {
		for i := range f.Entries {
			if e := &f.Entries[i]; e.live(owner) {
				e.Orphaned, e.OrphanReason = time.Now().UTC(), reason
				// No process owns it any more.
				e.PID, e.PIDStart = 0, 0
				return true, nil
			}
		}
		return false, nil
	})
}

// removeConfig removes a cell's saved configuration; a missing file is fine.
func (l *Ledger) removeConfig(cell string) {
	_ = os.Remove(l.ConfigPath(cell))
}

// Entries returns every entry, in allocation order.
func (l *Ledger) Entries() ([]Entry, error) {
	var entries []Entry
	err := l.locked(unix.LOCK_SH, func() error {
		f, err := l.read()
		entries = f.Entries
		return err
	})
	return entries, err
}

// Lookup returns owner's entry, not an orphaned one; found is false when
// there is none.
func (l *Ledger) Lookup(owner string) (e Entry, found bool, err error) {
	entries, err := l.Entries()
	if err != nil {
		return Entry{}, false, err
	}
	for _, e := range entries {
		if e.live(owner) {
			return e, true, nil
		}
	}
	return Entry{}, false, nil
}

// update runs fn on the ledger under the exclusive lock and writes the
// result back if fn reports a change, even when fn also fails (a heal that
// reclaimed entries before the allocation failed is kept).
func (l *Ledger) update(fn func(*ledgerFile) (bool, error)) error {
	return l.locked(unix.LOCK_EX, func() error {
		f, err := l.read()
		if err != nil {
			return err
		}
		changed, err := fn(&f)
		if changed {
			if werr := l.write(f); werr != nil && err == nil {
				err = werr
			}
		}
		return err
	})
}

// locked runs fn holding a flock of the given kind on the lock file. flock
// locks belong to the open file description, so goroutines of one process
// exclude each other as well as separate processes do, and the kernel drops
// the lock when a holder dies.
func (l *Ledger) locked(how int, fn func() error) error {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
		return fmt.Errorf("ledger %s: %w", l.path, err)
	}
	lf, err := os.OpenFile(l.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("ledger %s: open lock: %w", l.path, err)
	}
	defer lf.Close()
	for {
		err = unix.Flock(int(lf.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("ledger %s: lock: %w", l.path, err)
	}
	// Closing the file releases the lock.
	return fn()
}

func (l *Ledger) read() (ledgerFile, error) {
	data, err := os.ReadFile(l.path)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(bytes.TrimSpace(data)) == 0) {
		return ledgerFile{Version: ledgerVersion}, nil
	}
	if err != nil {
		return ledgerFile{}, fmt.Errorf("ledger %s: %w", l.path, err)
	}
	var f ledgerFile
	if err := json.Unmarshal(data, &f); err != nil {
		return ledgerFile{}, fmt.Errorf("ledger %s: %v: %w", l.path, jsonError(data, err), errdefs.ErrFailedPrecondition)
	}
	if f.Version != 1 && f.Version != ledgerVersion {
		return ledgerFile{}, fmt.Errorf("ledger %s: version %d, this runphi reads versions 1 and %d: %w",
			l.path, f.Version, ledgerVersion, errdefs.ErrFailedPrecondition)
	}
	return f, nil
}

// write replaces the ledger file atomically: a reader sees the old or the
// new content, never a mix, even across a crash.
func (l *Ledger) write(f ledgerFile) error {
	f.Version = ledgerVersion
	if f.Entries == nil {
		f.Entries = []Entry{}
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("ledger %s: %w", l.path, err)
	}
	if err := writeFileAtomic(l.path, append(data, '\n')); err != nil {
		return fmt.Errorf("ledger %s: %w", l.path, err)
	}
	return nil
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory, fsynced, renamed over path, and the directory fsynced.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this is a no-op
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		// Make the rename itself durable.
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// processStart returns the start time of process pid in clock ticks since
// boot (field 22 of /proc/<pid>/stat), and false when the process does not
// exist or is a zombie: a dead shim its parent has not reaped yet.
func processStart(pid int) (uint64, bool) {
	if pid <= 0 {
		return 0, false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces and
	// parentheses itself: fields start after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 || fields[0] == "Z" || fields[0] == "X" {
		return 0, false
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, false
	}
	return start, true
}

// OwnerAlive reports whether the process that made the entry (its owner
// shim) still runs. An entry whose owner is gone and whose cell does not
// exist is reclaimed by the next allocation.
func (e Entry) OwnerAlive() bool { return processAlive(e.PID, e.PIDStart) }

// processAlive reports whether the process that made an entry still runs:
// pid exists, is not a zombie, and (when recorded) started at start.
func processAlive(pid int, start uint64) bool {
	now, ok := processStart(pid)
	return ok && (start == 0 || now == start)
}

// formatSize renders a byte count in the largest binary unit that divides
// it: "64 MiB", "120 KiB", "4097 bytes", "1 byte".
func formatSize(n uint64) string {
	switch {
	case n == 1:
		return "1 byte"
	case n == 0:
		return "0 bytes"
	case n%(1<<30) == 0:
		return strconv.FormatUint(n>>30, 10) + " GiB"
	case n%(1<<20) == 0:
		return strconv.FormatUint(n>>20, 10) + " MiB"
	case n%(1<<10) == 0:
		return strconv.FormatUint(n>>10, 10) + " KiB"
	}
	return strconv.FormatUint(n, 10) + " bytes"
}

// maxCellName is JAILHOUSE_CELL_ID_NAMELEN: 31 bytes plus the NUL.
const maxCellName = 31

// CellName returns the Jailhouse cell name for a container: the container id
// itself when it fits Jailhouse's 31 bytes and uses only [A-Za-z0-9._-]
// (every containerd id does); otherwise its first 22 bytes (other bytes
// replaced by '_') + "-" + the first 8 hex digits of
// sha256("<namespace>/<id>"). 64-character ids (Kubernetes, Docker) take
// the second form. The ledger switches to the second form as well when two
// namespaces use the same short id.
func CellName(namespace, id string) string {
	if len(id) > 0 && len(id) <= maxCellName && strings.Trim(id, nameChars) == "" {
		return id
	}
	return hashedCellName(namespace, id)
}

const nameChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

func hashedCellName(namespace, id string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + id))
	prefix := []byte(id[:min(len(id), 22)])
	for i, c := range prefix {
		if !strings.ContainsRune(nameChars, rune(c)) {
			prefix[i] = '_'
		}
	}
	return string(prefix) + "-" + hex.EncodeToString(sum[:4])
}

// freeCellName picks the cell name for a new entry: CellName, or the hashed
// form if another entry, or a cell the ledger does not know (the root cell
// among them), already uses that name.
func freeCellName(entries []Entry, foreign []string, namespace, id string) (string, error) {
	taken := func(n string) bool {
		return slices.Contains(foreign, n) || slices.ContainsFunc(entries, func(e Entry) bool { return e.Cell == n })
	}
	name := CellName(namespace, id)
	if !taken(name) {
		return name, nil
	}
	if h := hashedCellName(namespace, id); !taken(h) {
		return h, nil
	}
	return "", fmt.Errorf("ledger: cell names %q and %q for %s/%s are both taken: %w",
		name, hashedCellName(namespace, id), namespace, id, errdefs.ErrAlreadyExists)
}

// MarshalJSON writes the addresses as hex strings, the way operators read
// them.
func (r Range) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, `{"start":"%#x","end":"%#x"}`, r.Start, r.End), nil
}

// UnmarshalJSON reads what MarshalJSON writes (and plain numbers).
func (r *Range) UnmarshalJSON(data []byte) error {
	var raw struct {
		Start, End json.RawMessage
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	var err error
	if r.Start, err = decodeAddress(raw.Start); err != nil {
		return fmt.Errorf("range start: %w", err)
	}
	if r.End, err = decodeAddress(raw.End); err != nil {
		return fmt.Errorf("range end: %w", err)
	}
	return nil
}
