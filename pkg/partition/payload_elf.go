package partition

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// elfImage is an ELF payload: its loadable segments and entry point.
type elfImage struct {
	entry uint64
	segs  []elfSegment
	// entrySeg is the index in segs of the segment holding entry.
	entrySeg int
}

// elfSegment is one PT_LOAD segment: Memsz bytes at the physical address
// Paddr, the file's bytes followed by zeros (.bss).
type elfSegment struct {
	index int // program header index, for messages
	paddr uint64
	vaddr uint64
	memsz uint64
	data  []byte // memsz bytes; nil when only checked (checkELF)
	flags elf.ProgFlag
}

func (s elfSegment) String() string {
	return fmt.Sprintf("ELF segment %d (PT_LOAD %s at %#x, %s)", s.index, s.flags, s.paddr, formatSize(s.memsz))
}

// elfTarget is the machine and class of the ELFs a board architecture
// runs.
type elfTarget struct {
	arch    jailhouse.Arch
	machine elf.Machine
	class   elf.Class
}

// elfTargets are the machines an ELF may be built for, per board
// architecture: Jailhouse cells on arm64 run AArch64 inmates, on arm
// AArch32.
var elfTargets = []elfTarget{
	{jailhouse.ArchARM64, elf.EM_AARCH64, elf.ELFCLASS64},
	{jailhouse.ArchARM, elf.EM_ARM, elf.ELFCLASS32},
}

// readELF reads the loadable segments of an ELF executable for arch. Segment
// sizes are checked against room, the most a partition can load, before
// anything is allocated for them.
func readELF(r io.ReaderAt, arch jailhouse.Arch, room loadRoom) (*elfImage, error) {
	return parseELFFor(r, arch, room, true)
}

// scanELF is readELF without keeping the segments' bytes: what place
// checks (targets and sizes) without allocating what they load.
func scanELF(r io.ReaderAt, arch jailhouse.Arch, room loadRoom) (*elfImage, error) {
	return parseELFFor(r, arch, room, false)
}

// parseELFFor is parseELF for the architecture of a board or a cell. A
// cell of revision 12 or 13 names none (ArchUnknown): its ELF may be for
// any architecture that runs ELFs, and Create holds it to the board's.
func parseELFFor(r io.ReaderAt, arch jailhouse.Arch, room loadRoom, keep bool) (*elfImage, error) {
	if arch == jailhouse.ArchUnknown {
		return parseELF(r, elfTargets, room, keep)
	}
	i := slices.IndexFunc(elfTargets, func(t elfTarget) bool { return t.arch == arch })
	if i < 0 {
		return nil, fmt.Errorf("ELF payloads are supported on arm and arm64 boards, not %v", arch)
	}
	return parseELF(r, elfTargets[i:i+1], room, keep)
}

// checkELF checks an ELF payload as readELF does, for any board runphi
// runs ELFs on and whatever its RAM: the header, and every segment's file
// bytes, which are read through but not kept.
func checkELF(r io.ReaderAt) error {
	_, err := parseELF(r, elfTargets, anyRoom, false)
	return err
}

// parseELF reads an ELF executable for one of targets, its loaded size at
// most room, keeping each segment's bytes when keep is set.
func parseELF(r io.ReaderAt, targets []elfTarget, room loadRoom, keep bool) (*elfImage, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("not a readable ELF file: %w", err)
	}
	if !slices.ContainsFunc(targets, func(t elfTarget) bool { return f.Machine == t.machine && f.Class == t.class }) {
		var want []string
		for _, t := range targets {
			want = append(want, fmt.Sprintf("%v (%v) on %v boards", t.machine, t.class, t.arch))
		}
		if len(targets) == 1 {
			t := targets[0]
			return nil, fmt.Errorf("ELF for %v (%v), the board is %v and needs %v (%v)", f.Machine, f.Class, t.arch, t.machine, t.class)
		}
		return nil, fmt.Errorf("ELF for %v (%v); partitions run %s", f.Machine, f.Class, strings.Join(want, ", "))
	}
	switch {
	case f.Data != elf.ELFDATA2LSB:
		return nil, fmt.Errorf("big-endian ELF (%v); cells run little-endian", f.Data)
	case f.Type != elf.ET_EXEC:
		return nil, fmt.Errorf("ELF type %v; a payload must be a linked executable (ET_EXEC), loaded where it was linked", f.Type)
	}
	img := &elfImage{entry: f.Entry}
	var total uint64
	for i, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		seg := elfSegment{index: i, paddr: p.Paddr, vaddr: p.Vaddr, memsz: p.Memsz, flags: p.Flags}
		if p.Filesz > p.Memsz {
			return nil, fmt.Errorf("%s: file size %#x is larger than its memory size %#x", seg, p.Filesz, p.Memsz)
		}
		total += p.Memsz
		if p.Memsz > room.size || total > room.size {
			return nil, fmt.Errorf("ELF segment %d (PT_LOAD at %#x) brings the loaded size to %s, more than %s",
				i, p.Paddr, formatSize(total), room)
		}
		if p.Paddr+p.Memsz < p.Paddr {
			return nil, fmt.Errorf("ELF segment %d (PT_LOAD at %#x, %#x bytes) wraps around the address space", i, p.Paddr, p.Memsz)
		}
		if keep {
			seg.data = make([]byte, p.Memsz)
			if _, err := io.ReadFull(p.Open(), seg.data[:p.Filesz]); err != nil {
				return nil, fmt.Errorf("read ELF segment %d: %w", i, err)
			}
		} else if n, err := io.Copy(io.Discard, p.Open()); err != nil || uint64(n) != p.Filesz {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read ELF segment %d: %w", i, err)
		}
		img.segs = append(img.segs, seg)
	}
	if len(img.segs) == 0 {
		return nil, errors.New("the ELF has no loadable (PT_LOAD) segment")
	}
	slices.SortFunc(img.segs, func(a, b elfSegment) int { return compareU64(a.paddr, b.paddr) })
	for i := 1; i < len(img.segs); i++ {
		prev, cur := img.segs[i-1], img.segs[i]
		if prev.paddr+prev.memsz > cur.paddr {
			return nil, fmt.Errorf("%s overlaps %s", cur, prev)
		}
	}
	// Where the entry point is needs no cell: checked here, a CPU that
	// would start outside the payload fails the build, not only Create.
	img.entrySeg = slices.IndexFunc(img.segs, func(s elfSegment) bool {
		return img.entry >= s.vaddr && img.entry-s.vaddr < s.memsz
	})
	if img.entrySeg < 0 {
		return nil, fmt.Errorf("entry point %#x is in no loaded segment", img.entry)
	}
	return img, nil
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// place checks every segment against the cell's loadable RAM and makes the
// ELF's entry point (found in a segment by parseELF) the cell's
// cpu_reset_address. Segments are loaded at
// their physical addresses (p_paddr), which is where a CPU starting with
// its MMU off sees them; the entry (a virtual address) is translated
// through the segment that holds it. A segment outside is an
// InvalidArgument naming it.
func (img *elfImage) place(c *jailhouse.Cell, d *BootDescription, file string) ([]jailhouse.Image, error) {
	fail := func(err error) error {
		return &BootDescriptionError{File: d.File, Key: "inmate", Err: fmt.Errorf("payload %s: %w", file, err)}
	}
	images := make([]jailhouse.Image, 0, len(img.segs))
	for _, s := range img.segs {
		if err := checkTarget(c, s.paddr, s.memsz); err != nil {
			return nil, fail(fmt.Errorf("%s: %w; link it inside the partition's RAM, or set starting_vaddress to where it is linked", s, err))
		}
		images = append(images, jailhouse.Image{Data: s.data, Target: s.paddr})
	}
	s := img.segs[img.entrySeg]
	c.CPUResetAddress = img.entry - s.vaddr + s.paddr
	return images, nil
}
