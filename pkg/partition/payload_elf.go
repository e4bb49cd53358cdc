package partition

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// elfImage is an ELF payload: its loadable segments and entry point.
type elfImage struct {
	entry uint64
	segs  []elfSegment
}

// elfSegment is one PT_LOAD segment: Memsz bytes at the physical address
// Paddr, the file's bytes followed by zeros (.bss).
type elfSegment struct {
	index int // program header index, for messages
	paddr uint64
	vaddr uint64
	data  []byte
	flags elf.ProgFlag
}

func (s elfSegment) String() string {
	return fmt.Sprintf("ELF segment %d (PT_LOAD %s at %#x, %s)", s.index, s.flags, s.paddr, formatSize(uint64(len(s.data))))
}

// elfMachines are the machines an ELF for each board architecture may be
// built for; Jailhouse cells on arm64 run AArch64 inmates, on arm AArch32.
var elfMachines = map[jailhouse.Arch]struct {
	machine elf.Machine
	class   elf.Class
}{
	jailhouse.ArchARM64: {elf.EM_AARCH64, elf.ELFCLASS64},
	jailhouse.ArchARM:   {elf.EM_ARM, elf.ELFCLASS32},
}

// readELF reads the loadable segments of an ELF executable for arch. Segment
// sizes are checked against ram, the most a partition can load, before
// anything is allocated for them.
func readELF(r io.ReaderAt, arch jailhouse.Arch, ram uint64) (*elfImage, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("not a readable ELF file: %w", err)
	}
	want, ok := elfMachines[arch]
	if !ok {
		return nil, fmt.Errorf("ELF payloads are supported on arm and arm64 boards, not %v", arch)
	}
	switch {
	case f.Machine != want.machine || f.Class != want.class:
		return nil, fmt.Errorf("ELF for %v (%v), the board is %v and needs %v (%v)", f.Machine, f.Class, arch, want.machine, want.class)
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
		seg := elfSegment{index: i, paddr: p.Paddr, vaddr: p.Vaddr, flags: p.Flags}
		if p.Filesz > p.Memsz {
			return nil, fmt.Errorf("%s: file size %#x is larger than its memory size %#x", seg, p.Filesz, p.Memsz)
		}
		total += p.Memsz
		if p.Memsz > ram || total > ram {
			return nil, fmt.Errorf("ELF segment %d (PT_LOAD at %#x) brings the loaded size to %s, more than the partition's %s of RAM (raise linux.resources.memory.limit)",
				i, p.Paddr, formatSize(total), formatSize(ram))
		}
		if p.Paddr+p.Memsz < p.Paddr {
			return nil, fmt.Errorf("ELF segment %d (PT_LOAD at %#x, %#x bytes) wraps around the address space", i, p.Paddr, p.Memsz)
		}
		seg.data = make([]byte, p.Memsz)
		if _, err := io.ReadFull(p.Open(), seg.data[:p.Filesz]); err != nil {
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
		if prev.paddr+uint64(len(prev.data)) > cur.paddr {
			return nil, fmt.Errorf("%s overlaps %s", cur, prev)
		}
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
// ELF's entry point the cell's cpu_reset_address. Segments are loaded at
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
		if err := checkTarget(c, s.paddr, uint64(len(s.data))); err != nil {
			return nil, fail(fmt.Errorf("%s: %w; link it inside the partition's RAM, or set starting_vaddress to where it is linked", s, err))
		}
		images = append(images, jailhouse.Image{Data: s.data, Target: s.paddr})
	}
	i := slices.IndexFunc(img.segs, func(s elfSegment) bool {
		return img.entry >= s.vaddr && img.entry-s.vaddr < uint64(len(s.data))
	})
	if i < 0 {
		return nil, fail(fmt.Errorf("entry point %#x is in no loaded segment", img.entry))
	}
	s := img.segs[i]
	c.CPUResetAddress = img.entry - s.vaddr + s.paddr
	return images, nil
}
