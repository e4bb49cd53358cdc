package partition

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/fdt"
	"github.com/runphi/runphi/pkg/jailhouse"
)

// CheckPayload is what `runphi image build` runs: the payload checks of
// Create that need no board and no allocation, so an image the shim would
// refuse whatever the board is refused when it is built, naming the key.
func TestCheckPayload(t *testing.T) {
	arm64ELF := makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0x100, elfSeg{data: make([]byte, 0x200)})
	zImage := make([]byte, 0x100)
	binary.LittleEndian.PutUint32(zImage[armZImageMagicOff:], armZImageMagic)
	linux := func(kernel []byte, dtb string) []rootfsFile {
		return []rootfsFile{
			configJSON(`{"os_var":"linux","kernel":"/boot/Image","dtb":"/boot/cell.dtb"}`),
			{path: "/boot/Image", data: string(kernel)},
			{path: "/boot/cell.dtb", data: dtb},
		}
	}
	inmate := func(data []byte) []rootfsFile {
		return []rootfsFile{configJSON(`{"inmate":"/boot/app"}`), {path: "/boot/app", data: string(data)}}
	}
	tests := []struct {
		name  string
		files []rootfsFile
		key   string // "" when the payload is fine
		text  string
	}{
		{name: "raw binary", files: inmate([]byte("x"))},
		{name: "arm64 ELF", files: inmate(arm64ELF)},
		{name: "arm ELF", files: inmate(makeELF(elf.EM_ARM, elf.ELFCLASS32, elf.ET_EXEC, 0x100, elfSeg{data: make([]byte, 0x200)}))},
		{name: "ELF with a .bss larger than any RAM is not loaded to check it",
			files: inmate(makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0x100, elfSeg{data: make([]byte, 0x20), memsz: 1 << 40}))},
		{name: "arm64 Image", files: linux(arm64Image(0x10000, 0), string(fixtureDTB(t)))},
		{name: "arm64 Image.gz", files: linux(gzipped(t, arm64Image(0x10000, 0x80000)), string(fixtureDTB(t)))},
		{name: "arm zImage", files: linux(zImage, string(fixtureDTB(t)))},

		{name: "empty raw binary", files: inmate(nil), key: "inmate", text: "the file is empty"},
		{name: "amd64 ELF", files: inmate(makeELF(elf.EM_X86_64, elf.ELFCLASS64, elf.ET_EXEC, 0x100, elfSeg{data: make([]byte, 8)})),
			key: "inmate", text: "ELF for EM_X86_64 (ELFCLASS64); partitions run EM_AARCH64 (ELFCLASS64) on arm64 boards, EM_ARM (ELFCLASS32) on arm boards"},
		{name: "position-independent ELF", files: inmate(makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_DYN, 0x100, elfSeg{data: make([]byte, 8)})),
			key: "inmate", text: "ELF type ET_DYN; a payload must be a linked executable (ET_EXEC)"},
		{name: "corrupt ELF", files: inmate([]byte("\x7fELF\x02\x01\x01garbage")), key: "inmate", text: "not a readable ELF file"},
		{name: "ELF whose segment lies past the end of the file", files: inmate(arm64ELF[:len(arm64ELF)-0x100]),
			key: "inmate", text: "read ELF segment 0"},
		{name: "ELF without a loadable segment", files: inmate(makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0)),
			key: "inmate", text: "no loadable (PT_LOAD) segment"},
		{name: "kernel that is no kernel", files: linux([]byte("#!/bin/sh\necho hi\n"), string(fixtureDTB(t))),
			key: "kernel", text: `neither an arm64 Image (no "ARM\x64" magic at byte 56) nor an arm zImage (no magic 0x16f2818 at byte 0x24)`},
		{name: "gzip that is no Image", files: linux(gzipped(t, []byte("hello")), string(fixtureDTB(t))),
			key: "kernel", text: `not an arm64 Image`},
		{name: "truncated Image.gz", files: linux(gzipped(t, arm64Image(0x10000, 0))[:100], string(fixtureDTB(t))),
			key: "kernel", text: "gunzip"},
		{name: "device tree that is none", files: linux(arm64Image(0x10000, 0), "not a dtb"), key: "dtb", text: "device tree /boot/cell.dtb"},
		{name: "ELF whose entry point is in no segment", files: inmate(makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0x5000, elfSeg{data: make([]byte, 0x200)})),
			key: "inmate", text: "payload /boot/app: entry point 0x5000 is in no loaded segment"},
		{name: "device tree without #address-cells", files: linux(arm64Image(0x10000, 0), string(withoutRootProperty(t, fixtureDTB(t), "#address-cells"))),
			key: "dtb", text: "device tree /boot/cell.dtb: the root node has no #address-cells"},
		{name: "prebuilt cell that does not decode",
			files: []rootfsFile{configJSON(`{"cell":"/boot/x.cell"}`), {path: "/boot/x.cell", data: "JHCLL\x02garbage"}, {path: "/boot/boot.bin", data: "x"}},
			key:   "cell", text: "/boot/x.cell"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rootfs := makeRootfs(t, tt.files...)
			d, err := ReadBootDescription(rootfs)
			if err != nil {
				t.Fatalf("ReadBootDescription: %v", err)
			}
			err = CheckPayload(rootfs, d)
			if tt.key == "" {
				if err != nil {
					t.Fatalf("CheckPayload: %v", err)
				}
				return
			}
			var bde *BootDescriptionError
			if !errors.As(err, &bde) || bde.File != "/boot/config.json" || bde.Key != tt.key ||
				!strings.Contains(err.Error(), `boot description /boot/config.json: key "`+tt.key+`": `) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("CheckPayload = %v\nwant a boot description error for key %q saying %q", err, tt.key, tt.text)
			}
		})
	}
}

// rpu_req fails Create on every board for now, so it fails the build too,
// as NotImplemented naming the key.
func TestCheckPayloadRPU(t *testing.T) {
	rootfs := makeRootfs(t, configJSON(`{"rpu_req":true,"inmate":"/boot/r5.elf"}`), rootfsFile{path: "/boot/r5.elf", data: "x"})
	d, err := ReadBootDescription(rootfs)
	if err != nil {
		t.Fatalf("ReadBootDescription: %v", err)
	}
	err = CheckPayload(rootfs, d)
	if want := `boot description /boot/config.json: key "rpu_req": Cortex-R5 partitions need an Omnivisor board`; !errdefs.IsNotImplemented(err) ||
		!strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "no RPU load path on any board") {
		t.Errorf("CheckPayload = %v, want NotImplemented saying %q", err, want)
	}
}

// withoutRootProperty returns the device tree dtb without the root node's
// property name.
func withoutRootProperty(t *testing.T, dtb []byte, name string) []byte {
	t.Helper()
	tr, err := fdt.Parse(dtb)
	if err != nil {
		t.Fatal(err)
	}
	tr.Root.Properties = slices.DeleteFunc(tr.Root.Properties, func(p fdt.Property) bool { return p.Name == name })
	out, err := tr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A payload that is neither a regular file nor a directory is named with
// its real mode, not only its type bits ("p---------").
func TestPayloadFIFO(t *testing.T) {
	rootfs := makeRootfs(t, configJSON(`{"inmate":"/boot/fifo"}`))
	if err := unix.Mkfifo(filepath.Join(rootfs, "boot", "fifo"), 0o640); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if err := os.Chmod(filepath.Join(rootfs, "boot", "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	_, err := ReadBootDescription(rootfs)
	if want := `key "inmate": payload /boot/fifo is not a regular file (prw-r-----)`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("ReadBootDescription = %v, want %q", err, want)
	}
}

// A prebuilt cell that breaks a rule of every board (no RAM, a physical
// PCI device, a comm region that is not one page) fails the build with the
// *PrebuiltError Create would return, naming the .cell and the part; what
// it names on a particular board (a CPU Linux keeps, RAM outside the
// pools) is left to Create.
func TestCheckPayloadPrebuilt(t *testing.T) {
	b := mustBoard(t)
	tests := []struct {
		name   string
		change func(c *jailhouse.Cell)
		big    bool   // the payload is 8 KiB, else a short script
		field  string // the PrebuiltError's part
		key    string // else the BootDescriptionError's key; neither: a CheckError
		text   string // "" when the build accepts it
	}{
		{name: "valid cell", change: func(*jailhouse.Cell) {}},
		{name: "CPU 0, which Linux keeps, is the board's business",
			change: func(c *jailhouse.Cell) { c.CPUSet = []byte{1, 0, 0, 0, 0, 0, 0, 0} }},
		{name: "RAM outside the pools is the board's business",
			change: func(c *jailhouse.Cell) { c.MemoryRegions[0].PhysStart = 0x40000000 }},
		{name: "no RAM", field: "memory_regions", text: "the cell has no RAM",
			change: func(c *jailhouse.Cell) {
				c.MemoryRegions = slices.DeleteFunc(c.MemoryRegions, func(m jailhouse.Memory) bool {
					return m.Flags&(jailhouse.MemIO|jailhouse.MemCommRegion) == 0
				})
			}},
		{name: "a physical PCI device", field: "pci_devices[0]", text: "partitions get no physical PCI devices",
			change: func(c *jailhouse.Cell) {
				c.PCIDevices = []jailhouse.PCIDevice{{Type: jailhouse.PCITypeDevice, BDF: 0x100}}
			}},
		{name: "an ivshmem device on bus 1", field: "pci_devices[0]",
			text: "ivshmem device at bdf 0x100 (01:00.0); partitions get devices of the ivshmem window, on bus 0, function 0",
			change: func(c *jailhouse.Cell) {
				c.PCIDevices = []jailhouse.PCIDevice{{Type: jailhouse.PCITypeIVSHMEM, BDF: 0x100, ShmemPeers: 3, ShmemDevID: 1,
					ShmemProtocol: jailhouse.ShmemProtoVETH}}
			}},
		{name: "an ivshmem device on function 1", field: "pci_devices[0]", text: "(00:02.1); partitions get devices of the ivshmem window, on bus 0, function 0",
			change: func(c *jailhouse.Cell) {
				c.PCIDevices = []jailhouse.PCIDevice{{Type: jailhouse.PCITypeIVSHMEM, BDF: 2<<3 | 1, ShmemPeers: 2, ShmemDevID: 1,
					ShmemProtocol: jailhouse.ShmemProtoVETH}}
			}},
		{name: "two ivshmem devices on one INTx line", field: "pci_devices[1]", text: "device 00:06.0 has the INTx line of device 00:02.0",
			change: func(c *jailhouse.Cell) {
				veth := jailhouse.PCIDevice{Type: jailhouse.PCITypeIVSHMEM, BDF: 2 << 3, ShmemPeers: 2, ShmemDevID: 1, ShmemProtocol: jailhouse.ShmemProtoVETH}
				c.PCIDevices = []jailhouse.PCIDevice{veth, veth}
				c.PCIDevices[1].BDF = 6 << 3
			}},
		{name: "no LOADABLE region", field: "memory_regions", text: "no RAM region is WRITE|LOADABLE",
			change: func(c *jailhouse.Cell) {
				for i := range c.MemoryRegions {
					c.MemoryRegions[i].Flags &^= jailhouse.MemLoadable
				}
			}},
		{name: "only the comm region LOADABLE", field: "memory_regions", text: "no RAM region is WRITE|LOADABLE",
			change: func(c *jailhouse.Cell) {
				for i := range c.MemoryRegions {
					c.MemoryRegions[i].Flags &^= jailhouse.MemLoadable
					if c.MemoryRegions[i].Flags&jailhouse.MemCommRegion != 0 {
						c.MemoryRegions[i].Flags |= jailhouse.MemLoadable
					}
				}
			}},
		{name: "RAM LOADABLE without WRITE", field: "memory_regions", text: "no RAM region is WRITE|LOADABLE",
			change: func(c *jailhouse.Cell) { c.MemoryRegions[1].Flags &^= jailhouse.MemWrite }},
		{name: "cpu_reset_address in no LOADABLE region", key: "inmate", text: "payload /boot/boot.bin: ",
			change: func(c *jailhouse.Cell) { c.CPUResetAddress = 0x10000000 }},
		{name: "a payload larger than the LOADABLE region", key: "inmate", big: true,
			text:   "more than the 4 KiB of the prebuilt cell's largest LOADABLE region",
			change: func(c *jailhouse.Cell) { c.MemoryRegions[1].Size = pageSize }},
		{name: "RAM that is not page-aligned", text: "memory_regions[1]: ", change: func(c *jailhouse.Cell) { c.MemoryRegions[1].Size -= 0x800 }},
		{name: "the same RAM twice", text: "overlaps", change: func(c *jailhouse.Cell) {
			c.MemoryRegions = append(c.MemoryRegions, c.MemoryRegions[1])
		}},
		{name: "a two-page comm region", field: "memory_regions[2]", text: "a comm region of 8 KiB; it is one 4 KiB page",
			change: func(c *jailhouse.Cell) {
				for i := range c.MemoryRegions {
					if c.MemoryRegions[i].Flags&jailhouse.MemCommRegion != 0 {
						c.MemoryRegions[i].Size = 2 * pageSize
					}
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := prebuiltCell(t, b)
			tt.change(c)
			rootfs := prebuiltRootfs(t, c)
			if tt.big {
				if err := os.WriteFile(filepath.Join(rootfs, "boot", "boot.bin"), make([]byte, 2*pageSize), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			d, err := ReadBootDescription(rootfs)
			if err != nil {
				t.Fatalf("ReadBootDescription: %v", err)
			}
			err = CheckPayload(rootfs, d)
			if tt.text == "" {
				if err != nil {
					t.Fatalf("CheckPayload: %v", err)
				}
				return
			}
			// what is the part of the error Create says too: a
			// CheckError names the cell, which Create renames.
			what := err.Error()
			switch {
			case tt.key != "":
				var bde *BootDescriptionError
				if !errors.As(err, &bde) || bde.Key != tt.key || !strings.Contains(err.Error(), tt.text) {
					t.Fatalf("CheckPayload = %v\nwant a boot description error for key %q saying %q", err, tt.key, tt.text)
				}
				// Create says it of the cell renamed to the ledger's name.
				what, _, _ = strings.Cut(what, ` of cell "`)
			case tt.field != "":
				var pe *PrebuiltError
				if !errors.As(err, &pe) || pe.File != "/boot/x.cell" || pe.Field != tt.field ||
					!errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), tt.text) {
					t.Fatalf("CheckPayload = %v\nwant a PrebuiltError for /boot/x.cell %s saying %q", err, tt.field, tt.text)
				}
			default:
				var ce *CheckError
				if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "prebuilt cell /boot/x.cell: ") ||
					!errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tt.text) {
					t.Fatalf("CheckPayload = %v\nwant a CheckError for /boot/x.cell saying %q", err, tt.text)
				}
				_, what, _ = strings.Cut(err.Error(), "fails the configuration checks: ")
			}
			// Create refuses it in the same words.
			n := newNode(t)
			_, cerr := Create(context.Background(), n.options("pre", rootfs, nil))
			if cerr == nil || !strings.Contains(cerr.Error(), what) {
				t.Errorf("Create = %v\nwant it to say %q", cerr, what)
			}
			n.checkEmpty(t)
		})
	}
}

// A payload larger than a prebuilt cell's LOADABLE region is refused with
// the bound the .cell sets, not advice to raise the spec's memory limit,
// which does not size a prebuilt cell.
func TestPrebuiltPayloadTooLarge(t *testing.T) {
	n := newNode(t)
	c := prebuiltCell(t, n.board)
	for i := range c.MemoryRegions {
		if c.MemoryRegions[i].Flags&jailhouse.MemLoadable != 0 {
			c.MemoryRegions[i].Size = pageSize
		}
	}
	data, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	rootfs := makeRootfs(t, configJSON(`{"cell": "/boot/x.cell"}`), rootfsFile{path: "/boot/x.cell", data: string(data)},
		rootfsFile{path: "/boot/boot.bin", data: strings.Repeat("x", 2*pageSize)})
	_, err = Create(context.Background(), n.options("pre", rootfs, nil))
	if err == nil || !strings.Contains(err.Error(), "more than the 4 KiB of the prebuilt cell's largest LOADABLE region") ||
		strings.Contains(err.Error(), "raise linux.resources.memory.limit") {
		t.Errorf("Create = %v\nwant the prebuilt cell's LOADABLE region named as the bound", err)
	}
	n.checkEmpty(t)
}

// The build checks where a prebuilt cell's ELF segments land without
// loading them: only the .cell bounds their size, and a small image may
// name a segment far larger than the building machine's memory (Create
// refuses such a cell's RAM on the board before it reads the payload).
func TestCheckPayloadPrebuiltELFNotLoaded(t *testing.T) {
	c := prebuiltCell(t, mustBoard(t))
	// 1 TiB of RAM at cell address 1 TiB, clear of the UART and the comm
	// region.
	c.MemoryRegions[1].Size, c.MemoryRegions[1].VirtStart = 1<<40, 1<<40
	data, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	const huge = 256 << 30
	rootfs := makeRootfs(t, configJSON(`{"cell": "/boot/x.cell"}`), rootfsFile{path: "/boot/x.cell", data: string(data)},
		rootfsFile{path: "/boot/boot.bin", data: string(makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 1<<40+0x100,
			elfSeg{paddr: 1 << 40, vaddr: 1 << 40, data: make([]byte, 0x200), memsz: huge}))})
	d, err := ReadBootDescription(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := CheckPayload(rootfs, d); err != nil {
		t.Errorf("CheckPayload = %v; a 256 GiB segment in 1 TiB of LOADABLE RAM is the board's business", err)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("CheckPayload allocated %d MiB for a %d-byte image", grew>>20, len(data))
	}
}

// A cell of revision 12 or 13 has no architecture field, so it decodes as
// ArchUnknown: a board of its revision takes it (deployed systems often run
// 13), the build checks its ELF payload for any architecture that runs
// ELFs, and a board of another revision refuses it.
func TestPrebuiltCellOfRevision13(t *testing.T) {
	b13 := boardWith(t, "qemu-arm64", "revision = 14", "revision = 13")
	c := prebuiltCell(t, mustBoard(t))
	c.Revision, c.Arch = jailhouse.Revision13, jailhouse.ArchUnknown
	data, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := jailhouse.DecodeCell(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b13.examinePrebuilt(decoded, "/boot/x.cell"); err != nil {
		t.Errorf("revision 13 board: %v", err)
	}
	if _, err := mustBoard(t).examinePrebuilt(decoded, "/boot/x.cell"); !errdefs.IsInvalidArgument(err) ||
		!strings.Contains(err.Error(), "revision 13, board qemu-arm64 runs arm64 revision 14") {
		t.Errorf("revision 14 board: %v, want InvalidArgument naming both revisions", err)
	}

	elfPayload := makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0x100, elfSeg{data: make([]byte, 0x200)})
	rootfs := makeRootfs(t, configJSON(`{"cell": "/boot/x.cell"}`), rootfsFile{path: "/boot/x.cell", data: string(data)},
		rootfsFile{path: "/boot/boot.bin", data: string(elfPayload)})
	d, err := ReadBootDescription(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckPayload(rootfs, d); err != nil {
		t.Errorf("CheckPayload of a revision 13 cell with an arm64 ELF: %v", err)
	}
}
