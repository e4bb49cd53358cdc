package jailhouse

// The sysfs tree of the driver (jailhouse-abi §4). The real tree lives under
// DefaultSysfsRoot; the simulator renders the same files, in the same
// formats, under a directory of its own and reads them back with these same
// functions, so every reader here takes the root as a parameter.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DefaultSysfsRoot is where jailhouse.ko registers its root device.
const DefaultSysfsRoot = "/sys/devices/jailhouse"

// MaxCPUs bounds the CPU numbers the parsers accept. A cell's cpu_set is at
// most 4096 bytes (the hypervisor rejects more, jailhouse-abi §1.3), so no
// valid CPU number reaches 4096*8; the bound keeps a list such as
// "0-4294967295" from allocating gigabytes.
const MaxCPUs = 4096 * 8

// FormatCPUMask formats cpus the way the kernel's %*pb does with a field
// width of nrCPUIDs: ceil(nrCPUIDs/4) lowercase, zero-padded hex digits, with
// a comma between 32-bit chunks (every 8 digits from the right). Examples:
// "c" (nrCPUIDs 4), "0c" (8), "00000000,0000000c" (64). CPUs outside
// [0, nrCPUIDs) are not representable and are left out, as the kernel never
// has them in a mask. The result has no trailing newline.
func FormatCPUMask(cpus []int, nrCPUIDs int) string {
	if nrCPUIDs <= 0 {
		return ""
	}
	nchunks := (nrCPUIDs + 31) / 32
	chunks := make([]uint32, nchunks)
	for _, c := range cpus {
		if c < 0 || c >= nrCPUIDs {
			continue
		}
		chunks[c/32] |= 1 << (c % 32)
	}
	// The most significant chunk is only as wide as the bits it holds
	// (lib/vsprintf.c bitmap_string); every other chunk has 8 digits.
	firstBits := nrCPUIDs % 32
	if firstBits == 0 {
		firstBits = 32
	}
	var b strings.Builder
	for i := nchunks - 1; i >= 0; i-- {
		width := 8
		if i == nchunks-1 {
			width = (firstBits + 3) / 4
		} else {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%0*x", width, chunks[i])
	}
	return b.String()
}

// FormatCPUList formats cpus the way the kernel's %*pbl does: ascending,
// consecutive CPUs folded into "a-b" ranges, comma separated ("2-3",
// "0,2-5"); empty when there are none. Duplicates and order in cpus do not
// matter. The result has no trailing newline.
func FormatCPUList(cpus []int) string {
	sorted := slices.Clone(cpus)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var b strings.Builder
	for i := 0; i < len(sorted); {
		j := i
		for j+1 < len(sorted) && sorted[j+1] == sorted[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(sorted[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(sorted[j]))
		}
		i = j + 1
	}
	return b.String()
}

// ParseCPUMask parses the %*pb format of FormatCPUMask (one trailing newline
// allowed) into the ascending list of set CPUs; nil when none is set. Every
// chunk but the first must have exactly 8 hex digits, as the kernel writes.
func ParseCPUMask(s string) ([]int, error) {
	text := strings.TrimSuffix(s, "\n")
	if text == "" {
		return nil, nil
	}
	chunks := strings.Split(text, ",")
	if len(chunks)*32 > MaxCPUs {
		return nil, fmt.Errorf("cpu mask %q: more than %d cpus", s, MaxCPUs)
	}
	var cpus []int
	for i, chunk := range chunks {
		if chunk == "" || len(chunk) > 8 || (i > 0 && len(chunk) != 8) {
			return nil, fmt.Errorf("cpu mask %q: chunk %d %q is not 8 hex digits (1 to 8 for the first)", s, i, chunk)
		}
		v, err := strconv.ParseUint(chunk, 16, 32)
		if err != nil {
			return nil, fmt.Errorf("cpu mask %q: chunk %d %q is not hexadecimal", s, i, chunk)
		}
		base := (len(chunks) - 1 - i) * 32
		for bit := 0; bit < 32; bit++ {
			if v&(1<<bit) != 0 {
				cpus = append(cpus, base+bit)
			}
		}
	}
	slices.Sort(cpus)
	return cpus, nil
}

// ParseCPUList parses the %*pbl format of FormatCPUList (one trailing newline
// allowed) into an ascending list without duplicates; nil for an empty list.
func ParseCPUList(s string) ([]int, error) {
	text := strings.TrimSuffix(s, "\n")
	if text == "" {
		return nil, nil
	}
	var cpus []int
	for _, item := range strings.Split(text, ",") {
		lo, hi, isRange := strings.Cut(item, "-")
		first, err := parseCPUNumber(lo)
		if err != nil {
			return nil, fmt.Errorf("cpu list %q: item %q: %w", s, item, err)
		}
		last := first
		if isRange {
			if last, err = parseCPUNumber(hi); err != nil {
				return nil, fmt.Errorf("cpu list %q: item %q: %w", s, item, err)
			}
			if last < first {
				return nil, fmt.Errorf("cpu list %q: range %q is decreasing", s, item)
			}
		}
		for c := first; c <= last; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}

func parseCPUNumber(s string) (int, error) {
	// ParseUint rejects signs and spaces, which the kernel never writes.
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a cpu number", s)
	}
	if n >= MaxCPUs {
		return 0, fmt.Errorf("cpu %d is not below %d", n, MaxCPUs)
	}
	return int(n), nil
}

// ReadEnabled reports <sysfsRoot>/enabled. It returns ErrNotLoaded when the
// root directory does not exist (the module is not loaded).
func ReadEnabled(sysfsRoot string) (bool, error) {
	if err := checkLoaded(sysfsRoot); err != nil {
		return false, err
	}
	path := filepath.Join(sysfsRoot, "enabled")
	text, err := readSysfsFile(path)
	if err != nil {
		return false, err
	}
	switch text {
	case "1":
		return true, nil
	case "0":
		return false, nil
	}
	return false, fmt.Errorf("%s: %q is neither 0 nor 1", path, text)
}

// ReadCells lists the cells under <sysfsRoot>/cells, root cell included,
// ordered by id (not alphabetically as the jailhouse CLI does). A cell whose
// directory disappears while it is read (a concurrent destroy) is left out.
// It returns ErrNotLoaded when the root directory does not exist; while
// Jailhouse is disabled the list is empty.
func ReadCells(sysfsRoot string) ([]CellInfo, error) {
	ids, err := readCellIDs(sysfsRoot)
	if err != nil {
		return nil, err
	}
	cells := make([]CellInfo, 0, len(ids))
	for _, id := range ids {
		info, err := readCellDir(sysfsRoot, id)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		cells = append(cells, info)
	}
	return cells, nil
}

// ReadCell returns the cell named name. It returns an error wrapping
// ErrCellNotFound if no cell has that name, and ErrNotLoaded when the root
// directory does not exist.
func ReadCell(sysfsRoot string, name string) (CellInfo, error) {
	ids, err := readCellIDs(sysfsRoot)
	if err != nil {
		return CellInfo{}, err
	}
	for _, id := range ids {
		// Only the name is read for each cell: reading state costs the
		// real driver a hypercall.
		got, err := readSysfsFile(filepath.Join(cellDir(sysfsRoot, id), "name"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return CellInfo{}, err
		}
		if got != name {
			continue
		}
		info, err := readCellDir(sysfsRoot, id)
		if errors.Is(err, fs.ErrNotExist) {
			break // destroyed between the two reads
		}
		return info, err
	}
	return CellInfo{}, fmt.Errorf("cell %q in %s: %w", name, sysfsRoot, ErrCellNotFound)
}

// CellStatistics holds the counters under cells/<id>/statistics.
type CellStatistics struct {
	// Total maps a stat name (such as "vmexits_total") to its sum over the
	// cell's CPUs.
	Total map[string]uint64
	// PerCPU maps a CPU number to that CPU's counters. The kernel prints
	// them with %d and 31-bit wrapping and reports negative values as 0, so
	// they are always below 2^31.
	PerCPU map[int]map[string]uint64
}

// ReadStatistics reads the statistics of the cell with the given id. The stat
// names differ per architecture (jailhouse-abi §4), so every file present is
// returned. It returns ErrNotLoaded when the root does not exist, and an error
// wrapping ErrCellNotFound when there is no cell with that id.
func ReadStatistics(sysfsRoot string, id int) (CellStatistics, error) {
	if err := checkLoaded(sysfsRoot); err != nil {
		return CellStatistics{}, err
	}
	dir := filepath.Join(cellDir(sysfsRoot, id), "statistics")
	total, subdirs, err := readStatDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, statErr := os.Stat(cellDir(sysfsRoot, id)); errors.Is(statErr, fs.ErrNotExist) {
			return CellStatistics{}, fmt.Errorf("cell id %d in %s: %w", id, sysfsRoot, ErrCellNotFound)
		}
	}
	if err != nil {
		return CellStatistics{}, err
	}
	stats := CellStatistics{Total: total, PerCPU: map[int]map[string]uint64{}}
	for _, sub := range subdirs {
		num, ok := strings.CutPrefix(sub, "cpu")
		if !ok {
			continue
		}
		cpu, err := parseCPUNumber(num)
		if err != nil {
			continue // not a cpu<N> directory
		}
		counters, _, err := readStatDir(filepath.Join(dir, sub))
		if err != nil {
			return CellStatistics{}, err
		}
		stats.PerCPU[cpu] = counters
	}
	return stats, nil
}

// readStatDir reads every regular file of dir as a decimal counter and
// returns them with the names of the subdirectories.
func readStatDir(dir string) (map[string]uint64, []string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	counters := map[string]uint64{}
	var subdirs []string
	for _, e := range entries {
		if e.IsDir() {
			subdirs = append(subdirs, e.Name())
			continue
		}
		path := filepath.Join(dir, e.Name())
		text, err := readSysfsFile(path)
		if err != nil {
			return nil, nil, err
		}
		v, err := strconv.ParseUint(text, 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %q is not a decimal counter", path, text)
		}
		counters[e.Name()] = v
	}
	return counters, subdirs, nil
}

// Pools is the hypervisor's page accounting under <sysfsRoot>: the
// mem_pool_* and remap_pool_* files, in pages (jailhouse-abi §4). The driver
// reports zeros while Jailhouse is disabled.
type Pools struct {
	MemSize   uint64 // mem_pool_size: pages of hypervisor memory for its own allocations
	MemUsed   uint64 // mem_pool_used
	RemapSize uint64 // remap_pool_size: pages of hypervisor virtual address space for mappings
	RemapUsed uint64 // remap_pool_used
}

// ReadPools reads the four pool files. It returns ErrNotLoaded when the
// root directory does not exist; a file that is missing or not a decimal
// count is an error naming it.
func ReadPools(sysfsRoot string) (Pools, error) {
	if err := checkLoaded(sysfsRoot); err != nil {
		return Pools{}, err
	}
	var p Pools
	for _, f := range []struct {
		name string
		dst  *uint64
	}{
		{"mem_pool_size", &p.MemSize},
		{"mem_pool_used", &p.MemUsed},
		{"remap_pool_size", &p.RemapSize},
		{"remap_pool_used", &p.RemapUsed},
	} {
		path := filepath.Join(sysfsRoot, f.name)
		text, err := readSysfsFile(path)
		if err != nil {
			return Pools{}, err
		}
		if *f.dst, err = strconv.ParseUint(text, 10, 64); err != nil {
			return Pools{}, fmt.Errorf("%s: %q is not a decimal page count", path, text)
		}
	}
	return p, nil
}

func cellDir(sysfsRoot string, id int) string {
	return filepath.Join(sysfsRoot, "cells", strconv.Itoa(id))
}

func checkLoaded(sysfsRoot string) error {
	if _, err := os.Stat(sysfsRoot); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s does not exist: %w", sysfsRoot, ErrNotLoaded)
	} else if err != nil {
		return err
	}
	return nil
}

// readCellIDs returns the ids of the cells/<id> directories in ascending
// order. Entries that are not decimal ids are ignored.
func readCellIDs(sysfsRoot string) ([]int, error) {
	if err := checkLoaded(sysfsRoot); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(sysfsRoot, "cells"))
	if err != nil {
		return nil, err
	}
	var ids []int
	for _, e := range entries {
		id, err := strconv.Atoi(e.Name())
		if err != nil || id < 0 || strconv.Itoa(id) != e.Name() {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// readCellDir reads one cells/<id> directory. An error wrapping
// fs.ErrNotExist means the cell went away.
func readCellDir(sysfsRoot string, id int) (CellInfo, error) {
	dir := cellDir(sysfsRoot, id)
	info := CellInfo{ID: id}
	var err error
	if info.Name, err = readSysfsFile(filepath.Join(dir, "name")); err != nil {
		return CellInfo{}, err
	}
	path := filepath.Join(dir, "state")
	text, err := readSysfsFile(path)
	if err != nil {
		return CellInfo{}, err
	}
	if info.State, err = ParseCellState(text); err != nil {
		return CellInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	for _, f := range []struct {
		name string
		dst  *[]int
	}{
		{"cpus_assigned_list", &info.CPUs},
		{"cpus_failed_list", &info.FailedCPUs},
	} {
		path := filepath.Join(dir, f.name)
		text, err := readSysfsFile(path)
		if err != nil {
			return CellInfo{}, err
		}
		if *f.dst, err = ParseCPUList(text); err != nil {
			return CellInfo{}, fmt.Errorf("%s: %w", path, err)
		}
	}
	return info, nil
}

// readSysfsFile returns the content of a one-value sysfs file without its
// trailing newline. The error names the path (os.ReadFile's does).
func readSysfsFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}
