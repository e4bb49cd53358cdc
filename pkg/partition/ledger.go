package partition

import (
	"bytes"
	"cmp"
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
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// ledgerVersion is the version of the ledger file format.
const ledgerVersion = 1

// Ledger is the node-wide record of what every partition holds: one JSON
// file shared by every shim process on the node. Every operation takes an
// exclusive flock on "<path>.lock" around its read-modify-write and replaces
// the file atomically (write a temporary file, fsync, rename), so concurrent
// shims never double-allocate and a crash never leaves a torn file. A Ledger
// value holds no open file and is safe for concurrent use; several values
// (or processes) on one path coordinate through the lock.
type Ledger struct {
	path string
}

// Allocation is what one partition holds.
type Allocation struct {
	// Owner is "<namespace>/<container id>".
	Owner string `json:"owner"`
	// Cell is the Jailhouse cell name (CellName, or its hashed form when
	// another owner already has that name).
	Cell string `json:"cell"`
	// CPUs are the partition's CPUs, ascending.
	CPUs []int `json:"cpus"`
	// RAM are the physical RAM blocks of the partition (one today).
	RAM []Range `json:"ram"`
}

// Entry is one ledger record.
type Entry struct {
	Allocation
	// Board is the name of the board profile the allocation was made on.
	Board string `json:"board"`
	// Created is when the allocation was made.
	Created time.Time `json:"created"`
	// PID is the process that made it, for diagnostics and for reclaiming
	// entries of dead shims later.
	PID int `json:"pid,omitempty"`
}

type ledgerFile struct {
	Version int     `json:"version"`
	Entries []Entry `json:"entries"`
}

// ExhaustedError says which resource ran out and how much was asked versus
// free. It matches errdefs.ErrResourceExhausted.
type ExhaustedError struct {
	// Resource is "cpu" or "memory".
	Resource string
	// Detail says what was asked and what is free.
	Detail string
}

func (e *ExhaustedError) Error() string { return e.Resource + ": " + e.Detail }

// Unwrap returns errdefs.ErrResourceExhausted.
func (e *ExhaustedError) Unwrap() error { return errdefs.ErrResourceExhausted }

// OpenLedger returns the ledger stored at path. Nothing is touched until the
// first operation; a missing file is an empty ledger. The directory is
// created 0700 and the file 0600 on the first write.
func OpenLedger(path string) *Ledger { return &Ledger{path: path} }

// Path returns the ledger file's path.
func (l *Ledger) Path() string { return l.path }

// Allocate reserves CPUs and RAM for owner on board b, all or nothing:
// CPUs first-fit from the board's partition CPUs not held by any entry (or
// exactly req.CPUs), RAM first-fit over the pool, aligned to the granule,
// in a block no entry holds. It fails with errdefs.ErrAlreadyExists if owner
// already holds an allocation, with an *ExhaustedError
// (errdefs.ErrResourceExhausted) when the board has not enough left, and
// with errdefs.ErrInvalidArgument for a request no board could satisfy.
func (l *Ledger) Allocate(owner string, b *Board, req Request) (Allocation, error) {
	ns, id, ok := strings.Cut(owner, "/")
	if !ok || ns == "" || id == "" {
		return Allocation{}, fmt.Errorf("ledger: owner %q is not <namespace>/<container id>: %w", owner, errdefs.ErrInvalidArgument)
	}
	var a Allocation
	err := l.update(func(f *ledgerFile) (bool, error) {
		for _, e := range f.Entries {
			if e.Owner == owner {
				return false, fmt.Errorf("ledger: %s already holds cell %q (CPUs %s, RAM %s): %w",
					owner, e.Cell, jailhouse.FormatCPUList(e.CPUs), formatRanges(e.RAM), errdefs.ErrAlreadyExists)
			}
		}
		name, err := freeCellName(f.Entries, ns, id)
		if err != nil {
			return false, err
		}
		cpus, err := allocateCPUs(f.Entries, b, req)
		if err != nil {
			return false, err
		}
		ram, err := allocateRAM(f.Entries, b, req.Memory)
		if err != nil {
			return false, err
		}
		a = Allocation{Owner: owner, Cell: name, CPUs: cpus, RAM: []Range{ram}}
		f.Entries = append(f.Entries, Entry{
			Allocation: a, Board: b.Name, Created: time.Now().UTC(), PID: os.Getpid(),
		})
		return true, nil
	})
	if err != nil {
		return Allocation{}, err
	}
	return a, nil
}

// Release drops owner's entry. Releasing an owner without an entry is not an
// error, so Release may be repeated after a crash.
func (l *Ledger) Release(owner string) error {
	return l.update(func(f *ledgerFile) (bool, error) {
		n := len(f.Entries)
		f.Entries = slices.DeleteFunc(f.Entries, func(e Entry) bool { return e.Owner == owner })
		return len(f.Entries) != n, nil
	})
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

// Lookup returns owner's entry; found is false when there is none.
func (l *Ledger) Lookup(owner string) (e Entry, found bool, err error) {
	entries, err := l.Entries()
	if err != nil {
		return Entry{}, false, err
	}
	for _, e := range entries {
		if e.Owner == owner {
			return e, true, nil
		}
	}
	return Entry{}, false, nil
}

// update runs fn on the ledger under the exclusive lock and writes the
// result back if fn reports a change.
func (l *Ledger) update(fn func(*ledgerFile) (bool, error)) error {
	return l.locked(unix.LOCK_EX, func() error {
		f, err := l.read()
		if err != nil {
			return err
		}
		changed, err := fn(&f)
		if err != nil || !changed {
			return err
		}
		return l.write(f)
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
	if f.Version != ledgerVersion {
		return ledgerFile{}, fmt.Errorf("ledger %s: version %d, this runphi reads version %d: %w",
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
	data = append(data, '\n')
	dir := filepath.Dir(l.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(l.path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("ledger %s: %w", l.path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this is a no-op
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("ledger %s: write: %w", l.path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("ledger %s: fsync: %w", l.path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("ledger %s: %w", l.path, err)
	}
	if err := os.Rename(tmp.Name(), l.path); err != nil {
		return fmt.Errorf("ledger %s: %w", l.path, err)
	}
	if d, err := os.Open(dir); err == nil {
		// Make the rename itself durable.
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// allocateCPUs picks the request's CPUs among the board's partition CPUs no
// entry holds.
func allocateCPUs(entries []Entry, b *Board, req Request) ([]int, error) {
	holder := map[int]string{}
	for _, e := range entries {
		for _, c := range e.CPUs {
			holder[c] = e.Owner
		}
	}
	if req.CPUs != nil {
		for _, c := range req.CPUs {
			if !slices.Contains(b.PartitionCPUs, c) {
				return nil, fmt.Errorf("cpu: CPU %d is not available to partitions on board %s (partitions may use %s): %w",
					c, b.Name, jailhouse.FormatCPUList(b.PartitionCPUs), errdefs.ErrInvalidArgument)
			}
		}
		for _, c := range req.CPUs {
			if o, held := holder[c]; held {
				return nil, &ExhaustedError{Resource: "cpu", Detail: fmt.Sprintf("asked CPUs %s, CPU %d is held by %s",
					jailhouse.FormatCPUList(req.CPUs), c, o)}
			}
		}
		return slices.Clone(req.CPUs), nil
	}
	if req.NumCPUs < 1 {
		return nil, fmt.Errorf("cpu: asked %d CPUs, want at least 1: %w", req.NumCPUs, errdefs.ErrInvalidArgument)
	}
	var free []int
	for _, c := range b.PartitionCPUs {
		if _, held := holder[c]; !held {
			free = append(free, c)
		}
	}
	if len(free) < req.NumCPUs {
		return nil, &ExhaustedError{Resource: "cpu", Detail: fmt.Sprintf("asked %d CPUs, %d free (%s) of partition CPUs %s",
			req.NumCPUs, len(free), jailhouse.FormatCPUList(free), jailhouse.FormatCPUList(b.PartitionCPUs))}
	}
	return free[:req.NumCPUs], nil
}

// allocateRAM finds the first granule-aligned block of size bytes in the
// pool that overlaps no entry's RAM.
func allocateRAM(entries []Entry, b *Board, size uint64) (Range, error) {
	if size == 0 {
		return Range{}, fmt.Errorf("memory: asked 0 bytes: %w", errdefs.ErrInvalidArgument)
	}
	size = alignUp(size, b.Granule)
	var largest uint64
	for _, gap := range freeRanges(entries, b.Pool) {
		start := alignUp(gap.Start, b.Granule)
		if start >= gap.End {
			continue
		}
		if start+size <= gap.End && start+size > start {
			return Range{start, start + size}, nil
		}
		largest = max(largest, gap.End-start)
	}
	return Range{}, &ExhaustedError{Resource: "memory", Detail: fmt.Sprintf("asked %s, largest free block %s in pool %s",
		formatSize(size), formatSize(largest), b.Pool)}
}

// freeRanges returns the parts of pool no entry holds, ascending.
func freeRanges(entries []Entry, pool Range) []Range {
	var held []Range
	for _, e := range entries {
		for _, r := range e.RAM {
			if r.Overlaps(pool) {
				held = append(held, r)
			}
		}
	}
	slices.SortFunc(held, func(a, b Range) int { return cmp.Compare(a.Start, b.Start) })
	var free []Range
	at := pool.Start
	for _, h := range held {
		if h.Start > at {
			free = append(free, Range{at, min(h.Start, pool.End)})
		}
		at = max(at, h.End)
	}
	if at < pool.End {
		free = append(free, Range{at, pool.End})
	}
	return free
}

// formatSize renders a byte count in the largest binary unit that divides
// it: "64 MiB", "120 KiB", "4097 bytes".
func formatSize(n uint64) string {
	switch {
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
// form if another entry already uses that name.
func freeCellName(entries []Entry, namespace, id string) (string, error) {
	taken := func(n string) bool {
		return slices.ContainsFunc(entries, func(e Entry) bool { return e.Cell == n })
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
