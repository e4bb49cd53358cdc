package partition

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// The payload step of Create (docs/payloads.md): read what the boot
// description names from the image before anything is allocated, then,
// once the cell's regions are planned, place it: compute every image's
// target, check it against the cell, and fix the cell's entry point.

// payloadKind is how a partition boots.
type payloadKind int

const (
	payloadRaw   payloadKind = iota // a raw binary, loaded at the load address
	payloadELF                      // an ELF whose PT_LOAD segments are loaded where linked
	payloadLinux                    // a Linux kernel through Jailhouse's linux-loader
)

// payload is what the payload step read from the image.
type payload struct {
	kind  payloadKind
	key   string // the boot description key naming the main file, for errors
	file  string // its image path
	raw   []byte
	elf   *elfImage
	linux *linuxPayload
}

// elfMagic starts every ELF file.
var elfMagic = []byte{0x7f, 'E', 'L', 'F'}

// readPayload reads the partition's payload through the rootfs. room is
// the bound of everything that can be loaded (payloadLimit). Linux
// payloads also read the board's linux-loader from the host. Nothing is
// read outside the rootfs except that loader.
func readPayload(root *os.Root, d *BootDescription, b *Board, room loadRoom) (*payload, error) {
	switch {
	case d.RPUReq:
		return nil, rpuNotImplemented(d)
	case d.IsLinux():
		lp, err := readLinuxPayload(root, d, b, room)
		if err != nil {
			return nil, err
		}
		return &payload{kind: payloadLinux, key: "kernel", file: d.Kernel, linux: lp}, nil
	}
	f, size, isELF, err := openInmate(root, d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fail := func(err error) error {
		return &BootDescriptionError{File: d.File, Key: "inmate", Err: fmt.Errorf("payload %s: %w", d.Inmate, err)}
	}
	if isELF {
		// An ELF carries symbols and debug info: its file size says
		// nothing about what is loaded, so it is read segment by segment.
		img, err := readELF(f, b.Arch, room)
		if err != nil {
			return nil, fail(err)
		}
		return &payload{kind: payloadELF, key: "inmate", file: d.Inmate, elf: img}, nil
	}
	data, err := readLimited(f, size, room.size, room.String())
	if err != nil {
		return nil, fail(err)
	}
	return &payload{kind: payloadRaw, key: "inmate", file: d.Inmate, raw: data}, nil
}

// openInmate opens the boot description's inmate, a regular file, and
// says whether it is an ELF.
func openInmate(root *os.Root, d *BootDescription) (_ *os.File, size int64, isELF bool, _ error) {
	fail := func(err error) error {
		return &BootDescriptionError{File: d.File, Key: "inmate", Err: err}
	}
	f, err := root.Open(imageRel(d.Inmate))
	if err != nil {
		return nil, 0, false, fail(fmt.Errorf("payload %s: %w", d.Inmate, imageFileError(err)))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, false, fail(fmt.Errorf("payload %s: %w", d.Inmate, err))
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, false, fail(fmt.Errorf("payload %s %w", d.Inmate, errNotRegular(fi)))
	}
	var magic [4]byte
	n, _ := f.ReadAt(magic[:], 0)
	return f, fi.Size(), n == len(magic) && bytes.Equal(magic[:], elfMagic), nil
}

// CheckPayload runs the checks of Create's payload step that need no board
// and no allocation, on the image whose rootfs is at the host path rootfs
// and whose boot description d is (from ReadBootDescription, which has
// already checked starting_vaddress the way Create does): what it finds
// wrong, the shim would refuse on any board. `runphi image build` runs it,
// so a broken payload fails the build rather than `ctr run`. Each check is
// the code Create runs (parseELF, readFiles, kernelMagic), not a copy.
//
//   - An ELF inmate: readable, little-endian, a linked executable (ET_EXEC,
//     not a position-independent ET_DYN), for a machine partitions run
//     (AArch64 on arm64 boards, ARM on arm boards), with PT_LOAD segments
//     that do not overlap or wrap and whose bytes are all in the file, and
//     an entry point inside one of them.
//   - A raw inmate: not empty.
//   - A Linux payload (os_var "linux"): the kernel an arm64 Image (or a
//     complete Image.gz) or an arm zImage, the device tree a valid FDT
//     whose root says its #address-cells and #size-cells, the initrd
//     (given once) not empty.
//   - A prebuilt cell ("cell"): a configuration that decodes, keeps the
//     rules of every board (checkPrebuiltShape: a CPU, RAM, a WRITE|LOADABLE
//     RAM region, a comm region of one page if any, only VETH ivshmem
//     devices on bus 0 function 0 with an INTx line each, no cache, port or
//     stream-id entries) and passes the
//     configuration checks of the cell alone (jailhouse.CheckCell: page
//     alignment, overlaps); a raw or ELF payload must fit its largest
//     LOADABLE region and land, at the cell's load address, in a region
//     that holds it (placeInPrebuilt). What the cell names on the board is
//     left to Create.
//   - rpu_req: refused, as Create refuses it on every board for now.
//
// Left to Create: whatever depends on the board (its architecture, the
// partition's RAM, where the payload lands in the cell). Errors are
// *BootDescriptionError naming the key, except rpu_req's NotImplemented
// and a prebuilt cell's *PrebuiltError or *CheckError, the errors Create
// returns for it.
func CheckPayload(rootfs string, d *BootDescription) error {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return fmt.Errorf("open rootfs %s: %w", rootfs, err)
	}
	defer root.Close()
	var prebuilt *jailhouse.Cell
	if d.Cell != "" {
		c, err := readPrebuilt(root, d)
		if err != nil {
			return err
		}
		if err := checkPrebuiltShape(c, d.Cell); err != nil {
			return err
		}
		prebuilt = c
	}
	switch {
	case d.RPUReq:
		return rpuNotImplemented(d)
	case d.IsLinux():
		// A Linux payload is placed with the board's linux-loader, so
		// even in a prebuilt cell where it lands is left to Create.
		var lp linuxPayload
		if err := lp.readFiles(root, d, anyRoom); err != nil {
			return err
		}
		if err := checkKernelAnyArch(lp.kernel); err != nil {
			return &BootDescriptionError{File: d.File, Key: "kernel", Err: fmt.Errorf("kernel %s: %w", d.Kernel, err)}
		}
		return checkPrebuiltAlone(d, prebuilt)
	}
	f, size, isELF, err := openInmate(root, d)
	if err != nil {
		return err
	}
	defer f.Close()
	if isELF {
		err = checkELF(f)
	} else if size == 0 {
		err = errEmptyFile
	}
	if err != nil {
		return &BootDescriptionError{File: d.File, Key: "inmate", Err: fmt.Errorf("payload %s: %w", d.Inmate, err)}
	}
	if prebuilt == nil {
		return nil
	}
	if err := placeInPrebuilt(root, d, prebuilt, f, isELF); err != nil {
		return err
	}
	return checkPrebuiltAlone(d, prebuilt)
}

// checkPrebuiltAlone runs the configuration checks of the cell alone
// (jailhouse.CheckCell: page alignment, overlaps within the cell, ivshmem
// region counts), which Create runs (checkCell) after placing the payload,
// with the board's system configuration and the live partitions besides.
func checkPrebuiltAlone(d *BootDescription, c *jailhouse.Cell) error {
	if c == nil {
		return nil
	}
	if bad := cellErrors(jailhouse.CheckCell(nil, c)); len(bad) > 0 {
		return fmt.Errorf("prebuilt cell %s: %w", d.Cell, &CheckError{Cell: c.Name, Findings: bad})
	}
	return nil
}

// placeInPrebuilt does what Create does with a raw or ELF payload and a
// prebuilt cell, none of which depends on the board: read the payload
// within the cell's largest LOADABLE region, for the cell's architecture,
// and place it where the cell loads it (starting_vaddress, else the cell's
// cpu_reset_address), into a WRITE|LOADABLE region that holds all of it.
// An ELF's segments are checked, not loaded: the .cell alone bounds their
// size, and it may name more RAM than the building machine has (Create
// refuses such a cell on the board before it reads the payload).
func placeInPrebuilt(root *os.Root, d *BootDescription, c *jailhouse.Cell, inmate io.ReaderAt, isELF bool) error {
	room := payloadLimit(Request{}, c)
	cell := cloneCell(c)
	if isELF {
		img, err := scanELF(inmate, c.Arch, room)
		if err != nil {
			return &BootDescriptionError{File: d.File, Key: "inmate", Err: fmt.Errorf("payload %s: %w", d.Inmate, err)}
		}
		_, err = img.place(&cell, d, d.Inmate)
		return err
	}
	// A raw payload needs no architecture (&Board only carries it).
	p, err := readPayload(root, d, &Board{Arch: c.Arch}, room)
	if err != nil {
		return err
	}
	load := c.CPUResetAddress
	if d.HasStartingVAddress {
		load = d.StartingVAddress
	}
	_, err = p.place(&cell, d, load)
	return err
}

// errEmptyFile is a payload file of no bytes: nothing to boot.
var errEmptyFile = errors.New("the file is empty")

// readLimited reads a file of size bytes, refusing it unchanged if it is
// larger than limit (named what) or empty.
func readLimited(f io.Reader, size int64, limit uint64, what string) ([]byte, error) {
	if size == 0 {
		return nil, errEmptyFile
	}
	if uint64(size) > limit {
		return nil, fmt.Errorf("it is %s, more than %s",
			formatSize(uint64(size)), what)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, err
	}
	return data, nil
}

// loadRoom is the most a payload may load, and where that bound comes
// from, so that an error says what to change: the partition's RAM (the
// spec's memory limit), or a prebuilt cell's largest LOADABLE region,
// which only the .cell sets.
type loadRoom struct {
	size     uint64
	prebuilt bool
}

// anyRoom bounds nothing: CheckPayload's checks, which know no partition.
var anyRoom = loadRoom{size: ^uint64(0)}

// String names the bound and what raises it, for "more than …" errors.
func (r loadRoom) String() string {
	if r.prebuilt {
		return fmt.Sprintf("the %s of the prebuilt cell's largest LOADABLE region (the .cell sets it; linux.resources.memory.limit does not)", formatSize(r.size))
	}
	return fmt.Sprintf("the partition's %s of RAM (raise linux.resources.memory.limit)", formatSize(r.size))
}

// place computes the images to load into the planned cell, in load order,
// and sets the cell's cpu_reset_address to the payload's entry point. For
// a raw binary that is the load address the plan already chose; an ELF
// starts at its entry; Linux starts in the linux-loader at the board's
// reset address. load is the load address of a raw binary.
func (p *payload) place(c *jailhouse.Cell, d *BootDescription, load uint64) ([]jailhouse.Image, error) {
	switch p.kind {
	case payloadELF:
		return p.elf.place(c, d, p.file)
	case payloadLinux:
		return p.linux.place(c, d)
	}
	key := "inmate"
	if d.HasStartingVAddress {
		key = "starting_vaddress"
	}
	if err := checkTarget(c, load, uint64(len(p.raw))); err != nil {
		return nil, &BootDescriptionError{File: d.File, Key: key, Err: fmt.Errorf("payload %s: %w", p.file, err)}
	}
	c.CPUResetAddress = load
	return []jailhouse.Image{{Data: p.raw, Target: load}}, nil
}

// checkTarget checks, as the driver will at CELL_LOAD, that size bytes at
// the cell address target lie entirely in the first region containing
// target, and that the region is WRITE|LOADABLE. It also refuses an empty
// range.
func checkTarget(c *jailhouse.Cell, target, size uint64) error {
	if size == 0 {
		return errors.New("nothing to load")
	}
	img := Range{target, target + size}
	if img.End < img.Start {
		return fmt.Errorf("%s at %#x wraps around the address space", formatSize(size), target)
	}
	for _, m := range c.MemoryRegions {
		r := Range{m.VirtStart, m.VirtStart + m.Size}
		if target < r.Start || target >= r.End {
			continue
		}
		if m.Flags&(jailhouse.MemWrite|jailhouse.MemLoadable) != jailhouse.MemWrite|jailhouse.MemLoadable {
			return fmt.Errorf("%s lies in a region of cell %q that cannot be loaded (%s, flags %v)", img, c.Name, r, m.Flags)
		}
		if !r.Contains(img) {
			return fmt.Errorf("%s (%s) does not fit the loadable RAM at %s", img, formatSize(size), r)
		}
		return nil
	}
	return fmt.Errorf("%s is not in the loadable RAM of cell %q (%s)", img, c.Name, loadableRanges(c))
}

// loadableRanges lists the cell's WRITE|LOADABLE regions for messages.
func loadableRanges(c *jailhouse.Cell) string {
	var rs []Range
	for _, m := range c.MemoryRegions {
		if m.Flags&(jailhouse.MemWrite|jailhouse.MemLoadable) == jailhouse.MemWrite|jailhouse.MemLoadable {
			rs = append(rs, Range{m.VirtStart, m.VirtStart + m.Size})
		}
	}
	if len(rs) == 0 {
		return "none"
	}
	return formatRanges(rs)
}

// rpuNotImplemented is the answer to rpu_req on every board: the
// Omnivisor fork's load path (jailhouse_cell_load with rCPU images,
// remoteproc firmware) has its ABI in pkg/jailhouse/internal/abi but no
// driver backend yet. It is NotImplemented, not InvalidArgument, so it is
// no *BootDescriptionError.
func rpuNotImplemented(d *BootDescription) error {
	return fmt.Errorf("boot description %s: key %q: Cortex-R5 partitions need an Omnivisor board and its fork of the Jailhouse driver; this runphi has no RPU load path on any board: %w",
		d.File, "rpu_req", errdefs.ErrNotImplemented)
}
