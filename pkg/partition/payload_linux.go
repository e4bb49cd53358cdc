package partition

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/fdt"
	"github.com/runphi/runphi/pkg/jailhouse"
)

// The Linux boot path: what `jailhouse cell linux` does on arm and arm64
// (jailhouse-abi §5.1, tools/jailhouse-cell-linux at siemens/jailhouse
// e57d1eff), done in Go: the address computation, the device tree patch,
// and the images in the tool's order.

// Constants of jailhouse-cell-linux.
const (
	linuxParamsOffset = 0x1000   // the loader's command line buffer, from cpu_reset_address
	linuxLoaderRoom   = 0x2000   // skipped at the start of a RAM region at address 0
	linuxDTBSlack     = 0x1000   // room for the DTB to grow when patched
	linuxExtra        = 0x2000   // "in case the region contains the loader"
	linuxLoaderArea   = 0x10000  // a RAM region at 0 this small is the loader's, not Linux's memory
	arm64KernelAlign  = 0x200000 // the arm64 Image must sit 2 MiB aligned (plus text_offset)
	armKernelAlign    = 0x1000
	arm64DecompFactor = 1 // space kept after the kernel before the initrd, in kernel sizes
	armDecompFactor   = 4
	maxLinuxLoader    = 1 << 20 // linux-loader.bin is a few KiB
	maxDTB            = 1 << 20
)

// Magic numbers of the kernel images (Linux Documentation/arch/arm64/booting.rst
// and arm/booting.rst).
const (
	arm64ImageMagic    = 0x644d5241 // "ARM\x64" at byte 56
	arm64ImageMagicOff = 56
	arm64TextOffsetOff = 8
	armZImageMagic     = 0x016f2818 // at byte 0x24
	armZImageMagicOff  = 0x24
)

// linuxPayload is a Linux inmate read from the image and the host.
type linuxPayload struct {
	arch       jailhouse.Arch
	kernel     []byte // as loaded: an uncompressed arm64 Image, or an arm zImage
	gzipped    bool   // the image's kernel was an Image.gz
	textOffset uint64
	dtb        *fdt.Tree
	dtbLen     int // the size of the DTB file, which the layout is computed from
	initrd     []byte
	initrdKey  string
	cmdline    string
	hasCmdline bool
	loader     []byte
	factor     uint64
}

// readLinuxPayload reads the kernel, DTB and initrd the boot description
// names, and the board's linux-loader. room bounds each file.
func readLinuxPayload(root *os.Root, d *BootDescription, b *Board, room loadRoom) (*linuxPayload, error) {
	lp := &linuxPayload{arch: b.Arch, cmdline: d.Cmdline, hasCmdline: d.HasCmdline}
	switch b.Arch {
	case jailhouse.ArchARM64:
		lp.factor = arm64DecompFactor
	case jailhouse.ArchARM:
		lp.factor = armDecompFactor
	default:
		return nil, fmt.Errorf("boot description %s: Linux inmates are supported on arm and arm64 boards, board %s is %v: %w",
			d.File, b.Name, b.Arch, errdefs.ErrNotImplemented)
	}
	if err := lp.readFiles(root, d, room); err != nil {
		return nil, err
	}
	if err := lp.checkKernel(room); err != nil {
		return nil, &BootDescriptionError{File: d.File, Key: "kernel", Err: fmt.Errorf("kernel %s: %w", d.Kernel, err)}
	}
	var err error
	if lp.loader, err = readLinuxLoader(b); err != nil {
		return nil, err
	}
	return lp, nil
}

// readFiles reads the image's part of a Linux payload: the kernel as it
// is in the image, the device tree (parsed) and the initrd, each at most
// room.size bytes (a device tree at most maxDTB) and not empty.
func (lp *linuxPayload) readFiles(root *os.Root, d *BootDescription, room loadRoom) error {
	fail := func(key string, err error) error { return &BootDescriptionError{File: d.File, Key: key, Err: err} }
	if d.Kernel == "" {
		return fail("kernel", errors.New(`os_var "linux" needs the kernel Image (or Image.gz) to boot`))
	}
	if d.DTB == "" {
		return fail("dtb", errors.New(`os_var "linux" needs a device tree for the partition (jailhouse cell linux -d)`))
	}
	var err error
	if lp.kernel, err = readImage(root, d.Kernel, room.size, room.String()); err != nil {
		return fail("kernel", err)
	}
	dtb, err := readImage(root, d.DTB, min(room.size, maxDTB), dtbRoom(room))
	if err != nil {
		return fail("dtb", err)
	}
	if lp.dtb, err = fdt.Parse(dtb); err != nil {
		return fail("dtb", fmt.Errorf("device tree %s: %w", d.DTB, err))
	}
	// The cell widths are needed to patch the tree whatever the cell is.
	if _, _, err := rootCells(lp.dtb); err != nil {
		return fail("dtb", fmt.Errorf("device tree %s: %w", d.DTB, err))
	}
	lp.dtbLen = len(dtb)
	key, path, err := d.initrdPath()
	if err != nil {
		return err
	}
	if path != "" {
		lp.initrdKey = key
		if lp.initrd, err = readImage(root, path, room.size, room.String()); err != nil {
			return fail(key, err)
		}
	}
	return nil
}

// dtbRoom names the bound of a device tree: maxDTB, or room when that is
// smaller.
func dtbRoom(room loadRoom) string {
	if room.size < maxDTB {
		return room.String()
	}
	return fmt.Sprintf("the %s a device tree may be", formatSize(maxDTB))
}

// readImage reads a file of the image, at most limit bytes.
func readImage(root *os.Root, p string, limit uint64, what string) ([]byte, error) {
	f, err := root.Open(imageRel(p))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, imageFileError(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %w", p, errNotRegular(fi))
	}
	data, err := readLimited(f, fi.Size(), limit, what)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return data, nil
}

// readLinuxLoader reads the board's Jailhouse linux-loader.bin from the
// host: it comes with the hypervisor, not with the image.
func readLinuxLoader(b *Board) ([]byte, error) {
	path := b.LinuxLoader
	if path == "" {
		return nil, fmt.Errorf("board profile %s names no Jailhouse linux-loader (partitions.linux_loader), which Linux inmates boot through: %w",
			b.Source, errdefs.ErrFailedPrecondition)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("board profile %s: partitions.linux_loader: %w: %w", b.Source, err, errdefs.ErrFailedPrecondition)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("board profile %s: partitions.linux_loader: %w: %w", b.Source, err, errdefs.ErrFailedPrecondition)
	}
	data, err := readLimited(f, fi.Size(), maxLinuxLoader, "the 1 MiB a linux-loader may be")
	if err != nil {
		return nil, fmt.Errorf("board profile %s: partitions.linux_loader %s: %w: %w", b.Source, path, err, errdefs.ErrFailedPrecondition)
	}
	return data, nil
}

// initrdPath returns the one initrd key set: initrd, cpio (runPHI's name)
// or ramdisk (its Xen backend's).
func (d *BootDescription) initrdPath() (key, path string, err error) {
	for _, k := range []struct {
		key string
		v   string
	}{{"initrd", d.Initrd}, {"cpio", d.CPIO}, {"ramdisk", d.Ramdisk}} {
		if k.v == "" {
			continue
		}
		if path != "" {
			return "", "", &BootDescriptionError{File: d.File, Key: k.key, Err: fmt.Errorf(
				"%q is set too: give the initrd once, under initrd", key)}
		}
		key, path = k.key, k.v
	}
	return key, path, nil
}

// checkKernel decompresses an arm64 Image.gz and checks the image's magic.
func (lp *linuxPayload) checkKernel(room loadRoom) error {
	gz := isGzip(lp.kernel)
	if gz && lp.arch == jailhouse.ArchARM {
		return errors.New("a gzip file: 32-bit arm boots a zImage, which decompresses itself")
	}
	if gz {
		zr, err := gzip.NewReader(bytes.NewReader(lp.kernel))
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		// A gzip bomb stops at the RAM it could ever be loaded into.
		out, err := io.ReadAll(io.LimitReader(zr, int64(min(room.size, math.MaxInt64-1))+1))
		if err != nil {
			return fmt.Errorf("gunzip: %w", err)
		}
		if uint64(len(out)) > room.size {
			return fmt.Errorf("it decompresses to more than %s", room)
		}
		lp.kernel, lp.gzipped = out, true
	}
	if err := kernelMagic(lp.arch, lp.kernel); err != nil {
		return err
	}
	if lp.arch == jailhouse.ArchARM64 {
		lp.textOffset = le64(lp.kernel[arm64TextOffsetOff:])
	}
	return nil
}

// checkKernelAnyArch checks a kernel as checkKernel does, for any board
// runphi boots Linux on (an arm64 Image or Image.gz, an arm zImage) and
// whatever its RAM: a gzip stream is read through to its end but not kept.
func checkKernelAnyArch(kernel []byte) error {
	if !isGzip(kernel) {
		if kernelMagic(jailhouse.ArchARM64, kernel) == nil || kernelMagic(jailhouse.ArchARM, kernel) == nil {
			return nil
		}
		return fmt.Errorf("neither an arm64 Image (no \"ARM\\x64\" magic at byte %d) nor an arm zImage (no magic %#x at byte %#x)",
			arm64ImageMagicOff, armZImageMagic, armZImageMagicOff)
	}
	zr, err := gzip.NewReader(bytes.NewReader(kernel))
	if err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	head := make([]byte, 64) // the arm64 Image header
	n, err := io.ReadFull(zr, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("gunzip: %w", err)
	}
	if err := kernelMagic(jailhouse.ArchARM64, head[:n]); err != nil {
		return fmt.Errorf("a gzip file that is %w", err)
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return fmt.Errorf("gunzip: %w", err)
	}
	return nil
}

func isGzip(b []byte) bool { return len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b }

// kernelMagic checks the header magic of an (uncompressed) kernel for
// arch: an arm64 Image, or an arm zImage.
func kernelMagic(arch jailhouse.Arch, kernel []byte) error {
	switch arch {
	case jailhouse.ArchARM64:
		if len(kernel) < 64 || le32(kernel[arm64ImageMagicOff:]) != arm64ImageMagic {
			return fmt.Errorf("not an arm64 Image: no \"ARM\\x64\" magic at byte %d", arm64ImageMagicOff)
		}
	case jailhouse.ArchARM:
		if len(kernel) < armZImageMagicOff+4 || le32(kernel[armZImageMagicOff:]) != armZImageMagic {
			return fmt.Errorf("not an arm zImage: no magic %#x at byte %#x", armZImageMagic, armZImageMagicOff)
		}
	}
	return nil
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

func pageAlign(v, page uint64) uint64 { return (v + page - 1) &^ (page - 1) }

// linuxLayout is where jailhouse-cell-linux puts each image.
type linuxLayout struct {
	Loader  uint64 // linux-loader.bin, at cpu_reset_address
	Params  uint64 // "kernel=0x… dtb=0x…", in the loader's command line buffer
	DTB     uint64
	DTBRoom uint64 // bytes kept for the (patched) DTB
	Kernel  uint64
	// KernelRoom is the kernel's page-aligned size plus, with an initrd,
	// the decompression space kept before it.
	KernelRoom uint64
	Initrd     uint64 // meaningful with an initrd
	// Region is the index of the RAM region everything was placed in.
	Region int
}

// isLinuxRAM is pyjailhouse's MemRegion.is_ram: exactly R|W|X|DMA among
// the access, I/O, comm and root-shared flags (LOADABLE does not matter).
func isLinuxRAM(m jailhouse.Memory) bool {
	const mask = jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemDMA |
		jailhouse.MemIO | jailhouse.MemCommRegion | jailhouse.MemRootShared
	return m.Flags&mask == jailhouse.MemRead|jailhouse.MemWrite|jailhouse.MemExecute|jailhouse.MemDMA
}

// computeLinuxLayout is the address computation of jailhouse-cell-linux
// for arm and arm64 (ARMCommon.setup): kernelLen is the uncompressed
// kernel's length, dtbLen the DTB file's, initrdLen 0 without an initrd.
func computeLinuxLayout(regions []jailhouse.Memory, cpuReset uint64, arch jailhouse.Arch,
	kernelLen int, textOffset uint64, dtbLen, initrdLen int, factor uint64) (linuxLayout, error) {
	align := uint64(arm64KernelAlign)
	if arch == jailhouse.ArchARM {
		align, textOffset = armKernelAlign, 0
	}
	ksize := pageAlign(uint64(kernelLen), pageSize)
	imageSize := textOffset + ksize + align
	if initrdLen > 0 {
		space := factor * ksize
		ksize += space
		imageSize += space
	}
	dtbSize := pageAlign(uint64(dtbLen), pageSize) + linuxDTBSlack
	imageSize += dtbSize + linuxExtra

	l := linuxLayout{Loader: cpuReset, Params: cpuReset + linuxParamsOffset, DTBRoom: dtbSize, KernelRoom: ksize, Region: -1}
	for i, m := range regions {
		if isLinuxRAM(m) && m.Size >= imageSize {
			l.Region = i
			break
		}
	}
	if l.Region < 0 {
		return l, fmt.Errorf("no RAM region of the cell (read, write, execute and DMA) holds the %s the kernel, device tree and initrd need",
			formatSize(imageSize))
	}
	l.DTB = regions[l.Region].VirtStart
	if l.DTB == 0 {
		l.DTB += linuxLoaderRoom
	}
	l.Kernel = pageAlign(l.DTB+dtbSize, align) + textOffset
	l.Initrd = l.Kernel + ksize
	return l, nil
}

// patchLinuxDTB writes the cell's RAM into /memory and the command line
// and initrd range into /chosen, as jailhouse-cell-linux does. A /memory
// node with a unit address ("memory@40000000") is the one patched when it
// is the only one; the tool would add a second, bare /memory beside it.
func patchLinuxDTB(t *fdt.Tree, regions []jailhouse.Memory, cmdline string, hasCmdline bool, initrdStart, initrdEnd uint64, hasInitrd bool) error {
	ac, sc, err := rootCells(t)
	if err != nil {
		return err
	}
	mem := t.EnsureNode("/memory")
	mem.SetProperty("device_type", fdt.String("memory"))
	var reg []byte
	for _, m := range regions {
		if !isLinuxRAM(m) || (m.VirtStart == 0 && m.Size <= linuxLoaderArea) {
			continue
		}
		if reg, err = fdt.Cells(reg, m.VirtStart, ac); err != nil {
			return fmt.Errorf("/memory reg: %w", err)
		}
		if reg, err = fdt.Cells(reg, m.Size, sc); err != nil {
			return fmt.Errorf("/memory reg: %w", err)
		}
	}
	mem.SetProperty("reg", reg)
	chosen := t.EnsureNode("/chosen")
	if hasCmdline {
		chosen.SetProperty("bootargs", fdt.String(cmdline))
	}
	if hasInitrd {
		start, err := fdt.Cells(nil, initrdStart, ac)
		if err != nil {
			return fmt.Errorf("/chosen linux,initrd-start: %w", err)
		}
		end, err := fdt.Cells(nil, initrdEnd, ac)
		if err != nil {
			return fmt.Errorf("/chosen linux,initrd-end: %w", err)
		}
		chosen.SetProperty("linux,initrd-start", start)
		chosen.SetProperty("linux,initrd-end", end)
	}
	return nil
}

// rootCells returns the widths, in cells, of the addresses and sizes
// patchLinuxDTB writes: the root's #address-cells and #size-cells, read
// by jailhouse-cell-linux's rule (2, or else 1).
func rootCells(t *fdt.Tree) (addr, size uint32, err error) {
	cells := func(name string) (uint32, error) {
		v, ok := t.Root.Uint32(name)
		if !ok {
			return 0, fmt.Errorf("the root node has no %s", name)
		}
		if v != 2 {
			v = 1
		}
		return v, nil
	}
	if addr, err = cells("#address-cells"); err != nil {
		return 0, 0, err
	}
	if size, err = cells("#size-cells"); err != nil {
		return 0, 0, err
	}
	return addr, size, nil
}

// place gives the cell's RAM the DMA flag Linux needs (as upstream's
// linux-demo cells have it), computes the layout, patches the device tree
// and returns the images in jailhouse-cell-linux's order: loader, kernel,
// DTB, initrd, parameters. The cell starts in the loader at its planned
// cpu_reset_address.
func (lp *linuxPayload) place(c *jailhouse.Cell, d *BootDescription) ([]jailhouse.Image, error) {
	fail := func(key string, err error) error { return &BootDescriptionError{File: d.File, Key: key, Err: err} }
	for i, m := range c.MemoryRegions {
		const rwxl = jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemLoadable
		if m.Flags&rwxl == rwxl && m.Flags&(jailhouse.MemIO|jailhouse.MemCommRegion|jailhouse.MemRootShared) == 0 {
			c.MemoryRegions[i].Flags |= jailhouse.MemDMA
		}
	}
	l, err := computeLinuxLayout(c.MemoryRegions, c.CPUResetAddress, lp.arch, len(lp.kernel), lp.textOffset, lp.dtbLen, len(lp.initrd), lp.factor)
	if err != nil {
		return nil, fmt.Errorf("spec linux.resources.memory.limit: %w (raise it): %w", err, errdefs.ErrInvalidArgument)
	}
	if err := patchLinuxDTB(lp.dtb, c.MemoryRegions, lp.cmdline, lp.hasCmdline, l.Initrd, l.Initrd+uint64(len(lp.initrd)), lp.initrd != nil); err != nil {
		return nil, fail("dtb", err)
	}
	dtb, err := lp.dtb.MarshalBinary()
	if err != nil {
		return nil, fail("dtb", err)
	}
	if uint64(len(dtb)) > l.DTBRoom {
		return nil, fail("dtb", fmt.Errorf("the patched device tree is %d bytes, more than the %d kept for it", len(dtb), l.DTBRoom))
	}
	params := fmt.Appendf(nil, "kernel=%#x dtb=%#x\x00", l.Kernel, l.DTB)

	type part struct {
		key, what string
		img       jailhouse.Image
	}
	parts := []part{
		{"", "linux-loader", jailhouse.Image{Data: lp.loader, Target: l.Loader}},
		{"kernel", "kernel", jailhouse.Image{Data: lp.kernel, Target: l.Kernel}},
		{"dtb", "device tree", jailhouse.Image{Data: dtb, Target: l.DTB}},
	}
	if lp.initrd != nil {
		parts = append(parts, part{lp.initrdKey, "initrd", jailhouse.Image{Data: lp.initrd, Target: l.Initrd}})
	}
	parts = append(parts, part{"", "loader parameters", jailhouse.Image{Data: params, Target: l.Params}})

	// The loader's command line buffer is part of the loader image and is
	// meant to be overwritten by the parameters; everything else must be
	// apart, and inside loadable RAM.
	loaderEnd := max(l.Loader+uint64(len(lp.loader)), l.Params+uint64(len(params)))
	areas := []struct {
		what string
		r    Range
	}{
		{"linux-loader and its parameters", Range{l.Loader, loaderEnd}},
		{"kernel", Range{l.Kernel, l.Kernel + l.KernelRoom}},
		{"device tree", Range{l.DTB, l.DTB + l.DTBRoom}},
	}
	if lp.initrd != nil {
		areas = append(areas, struct {
			what string
			r    Range
		}{"initrd", Range{l.Initrd, l.Initrd + uint64(len(lp.initrd))}})
	}
	for i := range areas {
		for j := i + 1; j < len(areas); j++ {
			if areas[i].r.Overlaps(areas[j].r) {
				return nil, fail("kernel", fmt.Errorf("the %s at %s would overlap the %s at %s (cpu_reset_address %#x)",
					areas[j].what, areas[j].r, areas[i].what, areas[i].r, c.CPUResetAddress))
			}
		}
	}
	images := make([]jailhouse.Image, len(parts))
	for i, p := range parts {
		if err := checkTarget(c, p.img.Target, uint64(len(p.img.Data))); err != nil {
			err = fmt.Errorf("%s: %w", p.what, err)
			if p.key == "" {
				return nil, fmt.Errorf("linux boot: %w: %w", err, errdefs.ErrInvalidArgument)
			}
			return nil, fail(p.key, err)
		}
		images[i] = p.img
	}
	return images, nil
}
