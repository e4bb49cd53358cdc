package partition

import (
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// rootfsFile is one file (or symlink, when link is set) of a test rootfs.
type rootfsFile struct {
	path string // image path, e.g. /boot/config.json
	data string
	link string // symlink target, if set
}

// makeRootfs builds a rootfs tree under a fresh temporary directory.
func makeRootfs(t *testing.T, files ...rootfsFile) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if f.link != "" {
			err = os.Symlink(f.link, p)
		} else {
			err = os.WriteFile(p, []byte(f.data), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func configJSON(s string) rootfsFile { return rootfsFile{path: "/boot/config.json", data: s} }

func bootBin() rootfsFile { return rootfsFile{path: "/boot/boot.bin", data: "payload"} }

func TestReadBootDescription(t *testing.T) {
	tests := []struct {
		name  string
		files []rootfsFile
		check func(t *testing.T, d *BootDescription)
	}{
		{
			name:  "empty object gets the defaults",
			files: []rootfsFile{configJSON(`{}`), bootBin()},
			check: func(t *testing.T, d *BootDescription) {
				if d.Inmate != "/boot/boot.bin" || d.HasStartingVAddress || !d.NetEnabled ||
					d.CommRegion != CommRegionPassive || d.RPUReq || d.File != "/boot/config.json" {
					t.Errorf("defaults: %+v", d)
				}
			},
		},
		{
			name: "runPHI zephyr example",
			files: []rootfsFile{
				configJSON(`{"os_var":"zephyr","inmate":"/boot/zephyr.bin","starting_vaddress":"0x70000000"}`),
				{path: "/boot/zephyr.bin", data: "z"},
			},
			check: func(t *testing.T, d *BootDescription) {
				if d.OSVar != "zephyr" || d.Inmate != "/boot/zephyr.bin" || !d.HasStartingVAddress || d.StartingVAddress != 0x70000000 {
					t.Errorf("got %+v", d)
				}
			},
		},
		{
			name:  "starting_vaddress as a JSON number",
			files: []rootfsFile{configJSON(`{"starting_vaddress": 4096}`), bootBin()},
			check: func(t *testing.T, d *BootDescription) {
				if !d.HasStartingVAddress || d.StartingVAddress != 4096 {
					t.Errorf("starting_vaddress = %#x (set %v)", d.StartingVAddress, d.HasStartingVAddress)
				}
			},
		},
		{
			name: "configuration.json is the fallback name",
			files: []rootfsFile{
				{path: "/boot/configuration.json", data: `{"inmate":"/boot/x.bin"}`},
				{path: "/boot/x.bin", data: "x"},
			},
			check: func(t *testing.T, d *BootDescription) {
				if d.File != "/boot/configuration.json" || d.Inmate != "/boot/x.bin" {
					t.Errorf("got file %s inmate %s", d.File, d.Inmate)
				}
			},
		},
		{
			name: "config.json wins over configuration.json",
			files: []rootfsFile{
				configJSON(`{}`), bootBin(),
				{path: "/boot/configuration.json", data: `not json`},
			},
			check: func(t *testing.T, d *BootDescription) {
				if d.File != "/boot/config.json" {
					t.Errorf("read %s", d.File)
				}
			},
		},
		{
			name:  `net "no" disables networking (runPHI treated it as enabled)`,
			files: []rootfsFile{configJSON(`{"net":"no"}`), bootBin()},
			check: func(t *testing.T, d *BootDescription) {
				if d.NetEnabled || d.Net != "no" {
					t.Errorf("net %q enabled %v", d.Net, d.NetEnabled)
				}
			},
		},
		{
			name:  "net false disables networking",
			files: []rootfsFile{configJSON(`{"net":false}`), bootBin()},
			check: func(t *testing.T, d *BootDescription) {
				if d.NetEnabled {
					t.Error("networking enabled")
				}
			},
		},
		{
			name:  "net with any other value enables networking",
			files: []rootfsFile{configJSON(`{"net":"dhcp"}`), bootBin()},
			check: func(t *testing.T, d *BootDescription) {
				if !d.NetEnabled || d.Net != "dhcp" {
					t.Errorf("net %q enabled %v", d.Net, d.NetEnabled)
				}
			},
		},
		{
			name:  "comm_region active",
			files: []rootfsFile{configJSON(`{"comm_region":"active"}`), bootBin()},
			check: func(t *testing.T, d *BootDescription) {
				if d.CommRegion != CommRegionActive {
					t.Errorf("comm region %v", d.CommRegion)
				}
			},
		},
		{
			name:  "unknown keys are kept and listed",
			files: []rootfsFile{configJSON(`{"memory": 512, "vcpus": 2, "os_var": "zephyr"}`), bootBin()},
			check: func(t *testing.T, d *BootDescription) {
				if got := strings.Join(d.UnknownKeys(), ","); got != "memory,vcpus" {
					t.Errorf("unknown keys %q", got)
				}
				if string(d.Unknown["memory"]) != "512" {
					t.Errorf("memory kept as %q", d.Unknown["memory"])
				}
			},
		},
		{
			name:  "null is the same as absent",
			files: []rootfsFile{configJSON(`{"inmate": null, "starting_vaddress": null}`), bootBin()},
			check: func(t *testing.T, d *BootDescription) {
				if d.Inmate != DefaultInmate || d.HasStartingVAddress {
					t.Errorf("got %+v", d)
				}
			},
		},
		{
			name: "relative symlink inside the image is followed",
			files: []rootfsFile{
				configJSON(`{"inmate":"/boot/link.bin"}`),
				{path: "/opt/real.bin", data: "r"},
				{path: "/boot/link.bin", link: "../opt/real.bin"},
			},
			check: func(t *testing.T, d *BootDescription) {
				if d.Inmate != "/boot/link.bin" {
					t.Errorf("inmate %s", d.Inmate)
				}
			},
		},
		{
			name:  "a Linux image needs no /boot/boot.bin",
			files: []rootfsFile{configJSON(`{"os_var":"linux","kernel":"/boot/Image"}`), {path: "/boot/Image", data: "k"}},
			check: func(t *testing.T, d *BootDescription) {
				if !d.IsLinux() || d.Kernel != "/boot/Image" {
					t.Errorf("got %+v", d)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ReadBootDescription(makeRootfs(t, tt.files...))
			if err != nil {
				t.Fatalf("ReadBootDescription: %v", err)
			}
			tt.check(t, d)
		})
	}
}

func TestReadBootDescriptionErrors(t *testing.T) {
	tests := []struct {
		name  string
		files []rootfsFile
		file  string   // the image path the error must name
		key   string   // the key it must name ("" for the file)
		text  []string // words the message must contain
		is    error    // an extra error the chain must match
	}{
		{
			name:  "bad JSON reports line and column",
			files: []rootfsFile{configJSON("{\n  \"os_var\": \"zephyr\",\n  \"inmate\" \"/boot/boot.bin\"\n}"), bootBin()},
			file:  "/boot/config.json",
			text:  []string{"invalid JSON", "line 3, column 12"},
		},
		{
			name:  "truncated JSON",
			files: []rootfsFile{configJSON(`{"os_var": "zephyr"`), bootBin()},
			file:  "/boot/config.json",
			text:  []string{"unexpected end"},
		},
		{
			name:  "empty file",
			files: []rootfsFile{configJSON(``), bootBin()},
			file:  "/boot/config.json",
			text:  []string{"empty"},
		},
		{
			name:  "top level array",
			files: []rootfsFile{configJSON(`["zephyr"]`), bootBin()},
			file:  "/boot/config.json",
			text:  []string{"array", "want an object"},
		},
		{
			name:  "trailing data",
			files: []rootfsFile{configJSON(`{} {}`), bootBin()},
			file:  "/boot/config.json",
			text:  []string{"after the top-level object"},
		},
		{
			name:  "a key given twice is refused, not resolved last-wins",
			files: []rootfsFile{configJSON(`{"inmate": "/boot/nothere", "inmate": "/boot/boot.bin"}`), bootBin()},
			file:  "/boot/config.json",
			key:   "inmate",
			text:  []string{"duplicate key", "line 1"},
		},
		{
			name:  "rpu_req must be a boolean",
			files: []rootfsFile{configJSON(`{"rpu_req": "yes"}`), bootBin()},
			file:  "/boot/config.json", key: "rpu_req",
			text: []string{"string", "want true or false"},
		},
		{
			name:  "inmate must be a string",
			files: []rootfsFile{configJSON(`{"inmate": 7}`), bootBin()},
			file:  "/boot/config.json", key: "inmate",
			text: []string{"number", "want a string"},
		},
		{
			name:  "starting_vaddress must be an address",
			files: []rootfsFile{configJSON(`{"starting_vaddress": "seventy"}`), bootBin()},
			file:  "/boot/config.json", key: "starting_vaddress",
			text: []string{`"seventy"`, "not an address"},
		},
		{
			name:  "negative starting_vaddress",
			files: []rootfsFile{configJSON(`{"starting_vaddress": -1}`), bootBin()},
			file:  "/boot/config.json", key: "starting_vaddress",
			text: []string{"non-negative"},
		},
		{
			name:  "unknown comm_region mode",
			files: []rootfsFile{configJSON(`{"comm_region": "chatty"}`), bootBin()},
			file:  "/boot/config.json", key: "comm_region",
			text: []string{`"chatty"`, "passive", "active"},
		},
		{
			name:  "relative payload path",
			files: []rootfsFile{configJSON(`{"inmate": "boot/boot.bin"}`), bootBin()},
			file:  "/boot/config.json", key: "inmate",
			text: []string{"not absolute"},
		},
		{
			name:  "dot-dot in a payload path",
			files: []rootfsFile{configJSON(`{"kernel": "/boot/../../etc/passwd"}`), bootBin()},
			file:  "/boot/config.json", key: "kernel",
			text: []string{"escapes the rootfs"},
		},
		{
			name:  "missing payload",
			files: []rootfsFile{configJSON(`{"inmate": "/boot/zephyr.bin"}`)},
			file:  "/boot/config.json", key: "inmate",
			text: []string{"/boot/zephyr.bin", "does not exist"},
			is:   fs.ErrNotExist,
		},
		{
			name:  "missing default payload",
			files: []rootfsFile{configJSON(`{}`)},
			file:  "/boot/config.json", key: "inmate",
			text: []string{"/boot/boot.bin", "does not exist"},
		},
		{
			name:  "payload is a directory",
			files: []rootfsFile{configJSON(`{"inmate": "/boot/dir"}`), {path: "/boot/dir/x", data: "x"}},
			file:  "/boot/config.json", key: "inmate",
			text: []string{"payload /boot/dir is a directory, not a regular file"},
		},
		{
			name: "payload symlink escaping the rootfs",
			files: []rootfsFile{
				configJSON(`{}`),
				{path: "/boot/boot.bin", link: "../../../../../../../../etc/hostname"},
			},
			file: "/boot/config.json", key: "inmate",
			text: []string{"escapes the rootfs"},
		},
		{
			name:  "absolute payload symlink is refused",
			files: []rootfsFile{configJSON(`{}`), {path: "/boot/boot.bin", link: "/etc/hostname"}},
			file:  "/boot/config.json", key: "inmate",
			text: []string{"escapes the rootfs"},
		},
		{
			name:  "config.json symlink escaping the rootfs",
			files: []rootfsFile{{path: "/boot/config.json", link: "/etc/hostname"}, bootBin()},
			file:  "/boot/config.json",
			text:  []string{"escapes the rootfs"},
		},
		{
			name:  "config.json is a directory",
			files: []rootfsFile{{path: "/boot/config.json/x", data: "x"}, bootBin()},
			file:  "/boot/config.json",
			text:  []string{"boot description /boot/config.json: is a directory, not a regular file"},
		},
		{
			name:  "Linux kernel missing",
			files: []rootfsFile{configJSON(`{"os_var":"linux","kernel":"/boot/Image"}`)},
			file:  "/boot/config.json", key: "kernel",
			text: []string{"/boot/Image", "does not exist"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadBootDescription(makeRootfs(t, tt.files...))
			if err == nil {
				t.Fatal("ReadBootDescription succeeded")
			}
			var be *BootDescriptionError
			if !errors.As(err, &be) {
				t.Fatalf("error %v (%T) is not a *BootDescriptionError", err, err)
			}
			if be.File != tt.file || be.Key != tt.key {
				t.Errorf("file %q key %q, want %q %q (%v)", be.File, be.Key, tt.file, tt.key, err)
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.file) {
				t.Errorf("message %q does not name %s", msg, tt.file)
			}
			for _, w := range tt.text {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not match %v", err, tt.is)
			}
		})
	}
}

func TestNoBootDescription(t *testing.T) {
	dir := makeRootfs(t, rootfsFile{path: "/bin/sh", data: "elf"})
	if _, err := ReadBootDescription(dir); !errors.Is(err, ErrNoBootDescription) {
		t.Errorf("ReadBootDescription: %v, want ErrNoBootDescription", err)
	}
	p, found, err := FindBootDescription(dir)
	if err != nil || found || p != "" {
		t.Errorf("FindBootDescription = %q, %v, %v; want not found", p, found, err)
	}
	// A dangling symlink is as good as no file.
	dir = makeRootfs(t, rootfsFile{path: "/boot/config.json", link: "nowhere.json"})
	if _, found, err := FindBootDescription(dir); err != nil || found {
		t.Errorf("dangling link: found %v err %v", found, err)
	}
}

func TestFindBootDescription(t *testing.T) {
	dir := makeRootfs(t, rootfsFile{path: "/boot/configuration.json", data: "{}"})
	p, found, err := FindBootDescription(dir)
	if err != nil || !found || p != "/boot/configuration.json" {
		t.Errorf("FindBootDescription = %q, %v, %v", p, found, err)
	}
}

// starting_vaddress is checked by the rules that hold on every board when
// the boot description is read, so `runphi image build` (which reads it
// the same way) refuses what Create would, with the same words. Range is
// checked before alignment: an address with no room above it is out of
// range, whatever its low bits.
func TestStartingVAddressBoardFree(t *testing.T) {
	payload := func(n int) rootfsFile { return rootfsFile{path: "/boot/boot.bin", data: strings.Repeat("x", n)} }
	tests := []struct {
		name    string
		files   []rootfsFile
		text    []string // "" text: the description is accepted
		notText string
	}{
		{name: "aligned", files: []rootfsFile{configJSON(`{"starting_vaddress":"0x70000000"}`), payload(1)}},
		{name: "the last page but one of the address space",
			files: []rootfsFile{configJSON(`{"starting_vaddress":"0xffffffffffffe000"}`), payload(4096)}},
		// Its end, 2^64, is 0 in a cell's 64-bit arithmetic.
		{name: "the last page of the address space",
			files:   []rootfsFile{configJSON(`{"starting_vaddress":"0xfffffffffffff000"}`), payload(4096)},
			text:    []string{"0xfffffffffffff000 is out of range: the partition RAM starting there, at least 4 KiB to hold payload /boot/boot.bin (4 KiB), would wrap around the end of the 64-bit address space"},
			notText: "aligned"},
		{name: "unaligned",
			files: []rootfsFile{configJSON(`{"starting_vaddress":"0x70000001"}`), payload(1)},
			text:  []string{"load address 0x70000001 is not 4 KiB aligned"}},
		{name: "unaligned, as a JSON number",
			files: []rootfsFile{configJSON(`{"starting_vaddress":1879048193}`), payload(1)},
			text:  []string{"load address 0x70000001 is not 4 KiB aligned"}},
		{name: "the top byte of the address space",
			files:   []rootfsFile{configJSON(`{"starting_vaddress":"0xffffffffffffffff"}`), payload(2)},
			text:    []string{"0xffffffffffffffff is out of range: the partition RAM starting there, at least 4 KiB to hold payload /boot/boot.bin (2 bytes), would wrap around the end of the 64-bit address space"},
			notText: "aligned"},
		{name: "a raw payload running past the end of the address space",
			files: []rootfsFile{configJSON(`{"starting_vaddress":"0xfffffffffffff000"}`), payload(4097)},
			text:  []string{"0xfffffffffffff000 is out of range: the partition RAM starting there, at least 8 KiB to hold payload /boot/boot.bin (4097 bytes), would"}},
		{name: "an ELF is loaded where linked, but the partition RAM still starts at the address",
			files: []rootfsFile{configJSON(`{"starting_vaddress":"0xffffffffffffff00"}`),
				{path: "/boot/boot.bin", data: string(makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0, elfSeg{data: make([]byte, 8)}))}},
			text:    []string{"0xffffffffffffff00 is out of range: the partition RAM starting there, at least 4 KiB, would wrap around the end"},
			notText: "aligned"},
		{name: "a Linux cell's RAM starts at the address too",
			files: []rootfsFile{configJSON(`{"os_var":"linux","kernel":"/k","dtb":"/d","starting_vaddress":"0x80000800"}`),
				{path: "/k", data: "k"}, {path: "/d", data: "d"}},
			text: []string{"load address 0x80000800 is not 4 KiB aligned"}},
		// A prebuilt cell's RAM does not start at the load address, so
		// the raw binary may sit anywhere in it; it must still fit below
		// the end of the address space.
		{name: "unaligned into a prebuilt cell",
			files: []rootfsFile{configJSON(`{"cell":"/boot/x.cell","starting_vaddress":"0x70000001"}`), payload(1), {path: "/boot/x.cell", data: "c"}}},
		{name: "past the end of the address space in a prebuilt cell",
			files: []rootfsFile{configJSON(`{"cell":"/boot/x.cell","starting_vaddress":"0xffffffffffffffff"}`), payload(2), {path: "/boot/x.cell", data: "c"}},
			text:  []string{"0xffffffffffffffff is out of range: payload /boot/boot.bin (2 bytes) starting there would wrap around the end"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadBootDescription(makeRootfs(t, tt.files...))
			if tt.text == nil {
				if err != nil {
					t.Fatalf("ReadBootDescription: %v", err)
				}
				return
			}
			var be *BootDescriptionError
			if !errors.As(err, &be) || be.File != "/boot/config.json" || be.Key != "starting_vaddress" || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("ReadBootDescription = %v, want an InvalidArgument *BootDescriptionError for /boot/config.json key starting_vaddress", err)
			}
			msg := err.Error()
			for _, w := range append(tt.text, `boot description /boot/config.json: key "starting_vaddress"`) {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
			if tt.notText != "" && strings.Contains(msg, tt.notText) {
				t.Errorf("message %q says %q, which is not the problem", msg, tt.notText)
			}
		})
	}
}
