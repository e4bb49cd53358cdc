package partition

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/fdt"
	"github.com/runphi/runphi/pkg/jailhouse"
)

const payloadMiB = 1 << 20

// Memory regions of upstream Jailhouse's configs/arm64/qemu-arm64-linux-demo.c
// (siemens/jailhouse e57d1eff): the demo ivshmem regions, the ivshmem-net
// regions of JAILHOUSE_SHMEM_NET_REGIONS(0x7fb00000, 1), the UART, the
// 64 KiB loader RAM at 0, the 128 MiB RAM at 0x70000000 and the comm region.
func linuxDemoRegions() []jailhouse.Memory {
	const (
		r  = jailhouse.MemRead
		w  = jailhouse.MemWrite
		x  = jailhouse.MemExecute
		rs = jailhouse.MemRootShared
	)
	return []jailhouse.Memory{
		{PhysStart: 0x7faf0000, VirtStart: 0x7faf0000, Size: 0x1000, Flags: r | rs},
		{PhysStart: 0x7faf1000, VirtStart: 0x7faf1000, Size: 0x9000, Flags: r | w | rs},
		{PhysStart: 0x7fafa000, VirtStart: 0x7fafa000, Size: 0x2000, Flags: r | rs},
		{PhysStart: 0x7fafc000, VirtStart: 0x7fafc000, Size: 0x2000, Flags: r | rs},
		{PhysStart: 0x7fafe000, VirtStart: 0x7fafe000, Size: 0x2000, Flags: r | w | rs},
		{PhysStart: 0x7fb00000, VirtStart: 0x7fb00000, Size: 0x1000, Flags: r | rs},
		{PhysStart: 0x7fb01000, VirtStart: 0x7fb01000, Size: 0x0, Flags: 0},
		{PhysStart: 0x7fb01000, VirtStart: 0x7fb01000, Size: 0x7f000, Flags: r | rs},
		{PhysStart: 0x7fb80000, VirtStart: 0x7fb80000, Size: 0x7f000, Flags: r | w | rs},
		{PhysStart: 0x09000000, VirtStart: 0x09000000, Size: 0x1000, Flags: r | w | jailhouse.MemIO | rs},
		{PhysStart: 0x7f900000, VirtStart: 0, Size: 0x10000, Flags: r | w | x | jailhouse.MemLoadable},
		{PhysStart: 0x70000000, VirtStart: 0x70000000, Size: 0x8000000, Flags: r | w | x | jailhouse.MemDMA | jailhouse.MemLoadable},
		{VirtStart: 0x80000000, Size: 0x1000, Flags: r | w | jailhouse.MemCommRegion},
	}
}

// The golden test of issue 6: for the qemu-arm64-linux-demo cell and a
// synthetic kernel, the addresses are those jailhouse-cell-linux computes
// (worked by hand from ARMCommon.setup, jailhouse-abi §5.1).
func TestLinuxLayoutGolden(t *testing.T) {
	tests := []struct {
		name       string
		kernelLen  int
		textOffset uint64
		dtbLen     int
		initrdLen  int
		want       linuxLayout
	}{
		{
			// ksize 0x1235000; image 0x80000+0x1235000+0x200000, +1·ksize for
			// the initrd, +dtb 0x3000, +0x2000 = 0x26ef000 fits the RAM at
			// 0x70000000 (the loader RAM at 0 lacks DMA, the ivshmem ones X).
			// DTB at the region start (not 0, so no +0x2000); kernel at
			// align(0x70003000, 2M) + text_offset; initrd after ksize+space.
			name: "Image with initrd", kernelLen: 0x1234567, textOffset: 0x80000, dtbLen: 0x1800, initrdLen: 0x400000,
			want: linuxLayout{Loader: 0, Params: 0x1000, DTB: 0x70000000, DTBRoom: 0x3000,
				Kernel: 0x70280000, KernelRoom: 0x246a000, Initrd: 0x726ea000, Region: 11},
		},
		{
			// No initrd: no decompression space; text_offset 0 (kernels
			// since 5.8 with RANDOMIZE_TEXT_OFFSET off); a DTB of exactly a
			// page keeps one page of slack.
			name: "Image, no initrd", kernelLen: 0x2000000, textOffset: 0, dtbLen: 0x1000,
			want: linuxLayout{Loader: 0, Params: 0x1000, DTB: 0x70000000, DTBRoom: 0x2000,
				Kernel: 0x70200000, KernelRoom: 0x2000000, Initrd: 0x72200000, Region: 11},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := computeLinuxLayout(linuxDemoRegions(), 0, jailhouse.ArchARM64, tt.kernelLen, tt.textOffset, tt.dtbLen, tt.initrdLen, arm64DecompFactor)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("layout\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	t.Run("RAM at 0 leaves room for the loader", func(t *testing.T) {
		regions := []jailhouse.Memory{{VirtStart: 0, Size: 64 * payloadMiB,
			Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemDMA | jailhouse.MemLoadable}}
		got, err := computeLinuxLayout(regions, 0, jailhouse.ArchARM64, 0x100000, 0, 0x800, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got.DTB != 0x2000 || got.Kernel != 0x200000 {
			t.Errorf("DTB %#x kernel %#x, want 0x2000 and 0x200000", got.DTB, got.Kernel)
		}
	})
	t.Run("32-bit arm: page alignment, no text_offset, factor 4", func(t *testing.T) {
		regions := []jailhouse.Memory{{VirtStart: 0x40000000, Size: 64 * payloadMiB,
			Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemExecute | jailhouse.MemDMA}}
		got, err := computeLinuxLayout(regions, 0, jailhouse.ArchARM, 0x400000, 0x8000, 0x800, 0x1000, armDecompFactor)
		if err != nil {
			t.Fatal(err)
		}
		if got.DTB != 0x40000000 || got.Kernel != 0x40002000 || got.Initrd != 0x40002000+5*0x400000 {
			t.Errorf("DTB %#x kernel %#x initrd %#x", got.DTB, got.Kernel, got.Initrd)
		}
	})
	t.Run("no RAM big enough", func(t *testing.T) {
		_, err := computeLinuxLayout(linuxDemoRegions(), 0, jailhouse.ArchARM64, 0x8000000, 0, 0x1000, 0, 1)
		if err == nil || !strings.Contains(err.Error(), "no RAM region") {
			t.Errorf("err = %v, want no RAM region", err)
		}
	})
}

func fixtureDTB(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../fdt/testdata/inmate.dtb")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The device tree gets the cell's RAM (not the loader area) in /memory and
// the command line and initrd range in /chosen, in the root's cell widths.
func TestPatchLinuxDTB(t *testing.T) {
	tr, err := fdt.Parse(fixtureDTB(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := patchLinuxDTB(tr, linuxDemoRegions(), "console=ttyAMA0", true, 0x726ea000, 0x72aea000, true); err != nil {
		t.Fatal(err)
	}
	b, err := tr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := fdt.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	mem := got.Node("/memory")
	if v, _ := mem.Property("device_type"); string(v) != "memory\x00" {
		t.Errorf("device_type %q", v)
	}
	wantReg := []byte{0, 0, 0, 0, 0x70, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0}
	if v, _ := mem.Property("reg"); !bytes.Equal(v, wantReg) {
		t.Errorf("/memory reg % x, want % x (only the DMA RAM; the 64 KiB loader area at 0 is not Linux's)", v, wantReg)
	}
	ch := got.Node("/chosen")
	for name, want := range map[string][]byte{
		"bootargs":           []byte("console=ttyAMA0\x00"),
		"linux,initrd-start": {0, 0, 0, 0, 0x72, 0x6e, 0xa0, 0},
		"linux,initrd-end":   {0, 0, 0, 0, 0x72, 0xae, 0xa0, 0},
		"stdout-path":        []byte("/uart@9000000\x00"),
	} {
		if v, _ := ch.Property(name); !bytes.Equal(v, want) {
			t.Errorf("/chosen %s = % x, want % x", name, v, want)
		}
	}
	t.Run("without cmdline the DTB's bootargs stay", func(t *testing.T) {
		tr, _ := fdt.Parse(fixtureDTB(t))
		tr.Node("/chosen").SetProperty("bootargs", fdt.String("mine"))
		if err := patchLinuxDTB(tr, linuxDemoRegions(), "", false, 0, 0, false); err != nil {
			t.Fatal(err)
		}
		if v, _ := tr.Node("/chosen").Property("bootargs"); string(v) != "mine\x00" {
			t.Errorf("bootargs %q", v)
		}
		if _, ok := tr.Node("/chosen").Property("linux,initrd-start"); ok {
			t.Error("initrd range set without an initrd")
		}
	})
	t.Run("a root without #address-cells is refused", func(t *testing.T) {
		tr := &fdt.Tree{Root: &fdt.Node{}}
		if err := patchLinuxDTB(tr, linuxDemoRegions(), "", false, 0, 0, false); err == nil {
			t.Error("no error")
		}
	})
}

// arm64Image is a synthetic arm64 Image: the 64-byte header with
// text_offset and the magic, padded to size.
func arm64Image(size int, textOffset uint64) []byte {
	b := make([]byte, size)
	binary.LittleEndian.PutUint64(b[8:], textOffset)
	binary.LittleEndian.PutUint64(b[16:], uint64(size))
	binary.LittleEndian.PutUint32(b[56:], arm64ImageMagic)
	return b
}

func gzipped(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// withLoader returns a board whose linux-loader is a file with data.
func withLoader(t *testing.T, data []byte) *Board {
	t.Helper()
	b := mustBoard(t)
	path := t.TempDir() + "/linux-loader.bin"
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c := *b
	c.LinuxLoader = path
	return &c
}

// A Linux partition on the simulator: the images are loaded in
// jailhouse-cell-linux's order at its addresses, the cell's RAM has DMA,
// and the cell starts in the loader.
func TestCreateLinuxPartition(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	loader := bytes.Repeat([]byte{0xaa}, 0x1100) // reaches into the parameter buffer, as the real one does
	n.board = withLoader(t, loader)
	kernel := arm64Image(3*payloadMiB+123, 0)
	rootfs := makeRootfs(t,
		configJSON(`{"os_var":"linux","kernel":"/boot/Image.gz","dtb":"/boot/inmate.dtb","initrd":"/boot/rootfs.cpio","cmdline":"console=hvc0"}`),
		rootfsFile{path: "/boot/Image.gz", data: string(gzipped(t, kernel))},
		rootfsFile{path: "/boot/inmate.dtb", data: string(fixtureDTB(t))},
		rootfsFile{path: "/boot/rootfs.cpio", data: strings.Repeat("c", 100000)},
	)
	p, err := Create(ctx, n.options("lx", rootfs, nil))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer p.Destroy(ctx)
	c := p.Config()
	ram := -1
	for i, m := range c.MemoryRegions {
		if m.Flags&jailhouse.MemLoadable != 0 && m.Size >= 64*payloadMiB {
			ram = i
		}
	}
	if ram < 0 || !isLinuxRAM(c.MemoryRegions[ram]) {
		t.Fatalf("no RAM region with DMA in %+v", c.MemoryRegions)
	}
	base := c.MemoryRegions[ram].VirtStart
	l, err := computeLinuxLayout(c.MemoryRegions, c.CPUResetAddress, jailhouse.ArchARM64, len(kernel), 0, len(fixtureDTB(t)), 100000, 1)
	if err != nil {
		t.Fatal(err)
	}
	if l.Region != ram || (base != 0 && l.DTB != base) {
		t.Errorf("layout %+v in region %d at %#x", l, ram, base)
	}
	if p.LoadAddress() != c.CPUResetAddress {
		t.Errorf("load address %#x, want the loader at cpu_reset_address %#x", p.LoadAddress(), c.CPUResetAddress)
	}
	// The simulator keeps what was loaded where, in load order.
	if err := p.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if st, _ := p.State(); st != jailhouse.StateRunning {
		t.Errorf("state %v, want running (an opaque kernel runs until stopped)", st)
	}
}

func TestLinuxPayloadErrors(t *testing.T) {
	kernel := string(arm64Image(payloadMiB, 0))
	dtb := string(fixtureDTB(t))
	tests := []struct {
		name   string
		loader bool
		config string
		files  []rootfsFile
		is     func(error) bool
		text   string
	}{
		{"no kernel", true, `{"os_var":"linux","dtb":"/d"}`, []rootfsFile{{path: "/d", data: dtb}},
			errdefs.IsInvalidArgument, `key "kernel"`},
		{"not an Image", true, `{"os_var":"linux","kernel":"/k","dtb":"/d"}`,
			[]rootfsFile{{path: "/k", data: strings.Repeat("x", 4096)}, {path: "/d", data: dtb}},
			errdefs.IsInvalidArgument, `no "ARM\x64" magic`},
		{"bad device tree", true, `{"os_var":"linux","kernel":"/k","dtb":"/d"}`,
			[]rootfsFile{{path: "/k", data: kernel}, {path: "/d", data: "not a dtb at all, longer than a header......."}},
			errdefs.IsInvalidArgument, "device tree at byte 0"},
		{"two initrd keys", true, `{"os_var":"linux","kernel":"/k","dtb":"/d","initrd":"/d","cpio":"/k"}`,
			[]rootfsFile{{path: "/k", data: kernel}, {path: "/d", data: dtb}},
			errdefs.IsInvalidArgument, `"initrd" is set too`},
		{"no loader on the board", false, `{"os_var":"linux","kernel":"/k","dtb":"/d"}`,
			[]rootfsFile{{path: "/k", data: kernel}, {path: "/d", data: dtb}},
			errdefs.IsFailedPrecondition, "linux-loader"},
		{"kernel larger than the RAM", true, `{"os_var":"linux","kernel":"/k","dtb":"/d"}`,
			[]rootfsFile{{path: "/k", data: string(arm64Image(70*payloadMiB, 0))}, {path: "/d", data: dtb}},
			errdefs.IsInvalidArgument, "more than the partition's 64 MiB of RAM"},
		{"kernel and initrd do not fit together", true, `{"os_var":"linux","kernel":"/k","dtb":"/d","initrd":"/i"}`,
			[]rootfsFile{{path: "/k", data: string(arm64Image(32*payloadMiB, 0))}, {path: "/d", data: dtb}, {path: "/i", data: "i"}},
			errdefs.IsInvalidArgument, "no RAM region"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t)
			if tt.loader {
				n.board = withLoader(t, []byte("loader"))
			} else {
				c := *n.board
				c.LinuxLoader = ""
				n.board = &c
			}
			rootfs := makeRootfs(t, append(tt.files, configJSON(tt.config))...)
			_, err := Create(context.Background(), n.options("lx", rootfs, nil))
			if err == nil || !tt.is(err) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Create = %v, want an error of the right class saying %q", err, tt.text)
			}
			n.checkEmpty(t)
		})
	}
}

// elfSeg describes one PT_LOAD segment of a test ELF.
type elfSeg struct {
	paddr, vaddr uint64
	data         []byte
	memsz        uint64 // 0 means len(data)
}

// makeELF builds a little-endian ELF executable with the given segments.
func makeELF(machine elf.Machine, class elf.Class, typ elf.Type, entry uint64, segs ...elfSeg) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	is64 := class == elf.ELFCLASS64
	ehsize, phsize := 52, 32
	if is64 {
		ehsize, phsize = 64, 56
	}
	dataOff := ehsize + phsize*len(segs)
	ident := [16]byte{0x7f, 'E', 'L', 'F', byte(class), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)}
	b.Write(ident[:])
	put := func(v any) { binary.Write(&b, le, v) }
	put(uint16(typ))
	put(uint16(machine))
	put(uint32(elf.EV_CURRENT))
	if is64 {
		put(entry)
		put(uint64(ehsize)) // phoff
		put(uint64(0))      // shoff
	} else {
		put(uint32(entry))
		put(uint32(ehsize))
		put(uint32(0))
	}
	put(uint32(0)) // flags
	put(uint16(ehsize))
	put(uint16(phsize))
	put(uint16(len(segs)))
	put(uint16(0)) // shentsize
	put(uint16(0)) // shnum
	put(uint16(0)) // shstrndx
	off := dataOff
	for _, s := range segs {
		memsz := s.memsz
		if memsz == 0 {
			memsz = uint64(len(s.data))
		}
		if is64 {
			put(uint32(elf.PT_LOAD))
			put(uint32(elf.PF_R | elf.PF_X))
			put(uint64(off))
			put(s.vaddr)
			put(s.paddr)
			put(uint64(len(s.data)))
			put(memsz)
			put(uint64(0x1000))
		} else {
			put(uint32(elf.PT_LOAD))
			put(uint32(off))
			put(uint32(s.vaddr))
			put(uint32(s.paddr))
			put(uint32(len(s.data)))
			put(uint32(memsz))
			put(uint32(elf.PF_R | elf.PF_X))
			put(uint32(0x1000))
		}
		off += len(s.data)
	}
	for _, s := range segs {
		b.Write(s.data)
	}
	return b.Bytes()
}

// An ELF inmate: segments land at their physical addresses, .bss is
// zeroed, the entry becomes cpu_reset_address, and the simulator runs the
// script the entry points at.
func TestCreateELFPartition(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	script := []byte("#!runphi-sim\nprint hello from an ELF\nexit\n")
	blob := makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0x70001000,
		elfSeg{paddr: 0x70000000, vaddr: 0x70000000, data: []byte("rodata"), memsz: 0x800},
		elfSeg{paddr: 0x70001000, vaddr: 0x70001000, data: script},
	)
	rootfs := makeRootfs(t, configJSON(`{"inmate":"/boot/zephyr.elf","starting_vaddress":"0x70000000"}`),
		rootfsFile{path: "/boot/zephyr.elf", data: string(blob)})
	p, err := Create(ctx, n.options("elf", rootfs, nil))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer p.Destroy(ctx)
	if got := p.Config().CPUResetAddress; got != 0x70001000 {
		t.Errorf("cpu_reset_address %#x, want the ELF entry 0x70001000", got)
	}
	con, err := p.Console()
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if out := readAll(t, con); out != "hello from an ELF\n" {
		t.Errorf("console %q", out)
	}
}

func TestReadELF(t *testing.T) {
	seg := func(paddr uint64, n int) elfSeg {
		return elfSeg{paddr: paddr, vaddr: paddr, data: bytes.Repeat([]byte{1}, n)}
	}
	t.Run("bss is zero-filled and segments sorted", func(t *testing.T) {
		blob := makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0x2000,
			seg(0x2000, 16), elfSeg{paddr: 0x1000, vaddr: 0x1000, data: []byte{7}, memsz: 4})
		img, err := readELF(bytes.NewReader(blob), jailhouse.ArchARM64, loadRoom{size: 64 * payloadMiB})
		if err != nil {
			t.Fatal(err)
		}
		if len(img.segs) != 2 || img.segs[0].paddr != 0x1000 || !bytes.Equal(img.segs[0].data, []byte{7, 0, 0, 0}) {
			t.Errorf("segments %+v", img.segs)
		}
	})
	t.Run("entry translated from virtual to physical", func(t *testing.T) {
		blob := makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0xffff000000000100,
			elfSeg{paddr: 0x1000, vaddr: 0xffff000000000000, data: make([]byte, 0x200)})
		img, err := readELF(bytes.NewReader(blob), jailhouse.ArchARM64, loadRoom{size: 64 * payloadMiB})
		if err != nil {
			t.Fatal(err)
		}
		c := &jailhouse.Cell{Name: "c", MemoryRegions: []jailhouse.Memory{{VirtStart: 0, Size: 0x10000, Flags: jailhouse.MemWrite | jailhouse.MemLoadable}}}
		if _, err := img.place(c, &BootDescription{File: "/boot/config.json"}, "/x.elf"); err != nil {
			t.Fatal(err)
		}
		if c.CPUResetAddress != 0x1100 {
			t.Errorf("cpu_reset_address %#x, want 0x1100", c.CPUResetAddress)
		}
	})
	tests := []struct {
		name string
		blob []byte
		arch jailhouse.Arch
		text string
	}{
		{"wrong machine", makeELF(elf.EM_X86_64, elf.ELFCLASS64, elf.ET_EXEC, 0, seg(0, 8)), jailhouse.ArchARM64, "EM_X86_64"},
		{"32-bit ELF on arm64", makeELF(elf.EM_ARM, elf.ELFCLASS32, elf.ET_EXEC, 0, seg(0, 8)), jailhouse.ArchARM64, "EM_ARM"},
		{"position independent", makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_DYN, 0, seg(0, 8)), jailhouse.ArchARM64, "ET_DYN"},
		{"no PT_LOAD", makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0), jailhouse.ArchARM64, "no loadable"},
		{"overlapping segments", makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0, seg(0, 0x100), seg(0x80, 0x100)), jailhouse.ArchARM64, "overlaps"},
		{"bigger than the RAM", makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0, elfSeg{data: []byte{1}, memsz: 2 * payloadMiB}), jailhouse.ArchARM64, "more than the partition's 1 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readELF(bytes.NewReader(tt.blob), tt.arch, loadRoom{size: payloadMiB})
			if err == nil || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("readELF = %v, want an error saying %q", err, tt.text)
			}
		})
	}
	t.Run("32-bit arm ELF on an arm board", func(t *testing.T) {
		blob := makeELF(elf.EM_ARM, elf.ELFCLASS32, elf.ET_EXEC, 0x100, seg(0, 0x200))
		if _, err := readELF(bytes.NewReader(blob), jailhouse.ArchARM, loadRoom{size: payloadMiB}); err != nil {
			t.Error(err)
		}
	})
}

// Acceptance 4 of issue 6: an ELF with a segment outside the cell fails
// Create with InvalidArgument naming the segment, and leaves nothing.
func TestCreateELFSegmentOutsideCell(t *testing.T) {
	n := newNode(t)
	blob := makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0x100,
		elfSeg{paddr: 0x0, vaddr: 0x0, data: make([]byte, 0x200)},
		elfSeg{paddr: 0x90000000, vaddr: 0x90000000, data: make([]byte, 0x100)},
	)
	rootfs := makeRootfs(t, configJSON(`{"inmate":"/boot/app.elf"}`), rootfsFile{path: "/boot/app.elf", data: string(blob)})
	_, err := Create(context.Background(), n.options("elf", rootfs, nil))
	var bde *BootDescriptionError
	if !errdefs.IsInvalidArgument(err) || !errors.As(err, &bde) || bde.Key != "inmate" ||
		!strings.Contains(err.Error(), "ELF segment 1 (PT_LOAD PF_X+PF_R at 0x90000000, 256 bytes)") {
		t.Errorf("Create = %v, want InvalidArgument naming ELF segment 1", err)
	}
	n.checkEmpty(t)
}

func TestRPUNotImplemented(t *testing.T) {
	n := newNode(t)
	rootfs := makeRootfs(t, configJSON(`{"rpu_req":true,"inmate":"/boot/r5.elf"}`), rootfsFile{path: "/boot/r5.elf", data: "x"})
	_, err := Create(context.Background(), n.options("r5", rootfs, nil))
	if !errdefs.IsNotImplemented(err) || !strings.Contains(err.Error(), "rpu_req") {
		t.Errorf("Create = %v, want NotImplemented naming rpu_req", err)
	}
	n.checkEmpty(t)
}

// Create refuses a starting_vaddress with no room above it as out of range
// (the board-free check of the boot description, which `runphi image
// build` runs too), not as misaligned, and leaves nothing behind.
func TestCreateStartingVAddressOutOfRange(t *testing.T) {
	n := newNode(t)
	rootfs := scriptRootfs(t, `{"starting_vaddress":"0xffffffffffffffff"}`, helloScript)
	_, err := Create(context.Background(), n.options("top", rootfs, nil))
	var bde *BootDescriptionError
	if !errdefs.IsInvalidArgument(err) || !errors.As(err, &bde) || bde.Key != "starting_vaddress" ||
		!strings.Contains(err.Error(), "0xffffffffffffffff is out of range") || strings.Contains(err.Error(), "aligned") {
		t.Errorf("Create = %v, want InvalidArgument naming starting_vaddress out of range", err)
	}
	n.checkEmpty(t)
}
