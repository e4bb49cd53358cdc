package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runphi/runphi/pkg/ociimage"
)

// imageConfig reads the image config blob back out of a layout tarball.
func imageConfig(t *testing.T, path string) ociimage.Config {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		blobs[h.Name], _ = io.ReadAll(tr)
	}
	var idx ociimage.Index
	var man ociimage.Manifest
	var cfg ociimage.Config
	blob := func(d string) []byte { return blobs["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")] }
	if err := json.Unmarshal(blobs["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blob(idx.Manifests[0].Digest), &man); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	// The layer must be a readable gzip stream.
	if _, err := gzip.NewReader(strings.NewReader(string(blob(man.Layers[0].Digest)))); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestImageBuild(t *testing.T) {
	dtb, err := os.ReadFile("../../pkg/fdt/testdata/inmate.dtb")
	if err != nil {
		t.Fatal(err)
	}
	fixtureDTB := string(dtb)
	tests := []struct {
		name    string
		files   map[string]string
		extra   []string
		code    int
		stderr  string // substring of the error
		wantCmd string
	}{
		{
			name:    "inmate becomes the command",
			files:   map[string]string{"boot/config.json": `{"os_var":"zephyr","inmate":"/boot/zephyr.bin"}`, "boot/zephyr.bin": "x"},
			code:    0,
			wantCmd: "/boot/zephyr.bin",
		},
		{
			name:    "default inmate",
			files:   map[string]string{"boot/config.json": `{"os_var":"zephyr"}`, "boot/boot.bin": "x"},
			wantCmd: "/boot/boot.bin",
		},
		{
			name:    "configuration.json is a boot description too",
			files:   map[string]string{"boot/configuration.json": `{"inmate":"/boot/x.bin"}`, "boot/x.bin": "x"},
			wantCmd: "/boot/x.bin",
		},
		{
			name:    "--cmd wins",
			files:   map[string]string{"boot/config.json": `{}`, "boot/boot.bin": "x"},
			extra:   []string{"--cmd", `["/boot/a","b"]`},
			wantCmd: "/boot/a b",
		},
		{
			name:    "no boot description, no command",
			files:   map[string]string{"etc/hostname": "x"},
			wantCmd: "",
		},
		{
			name:   "malformed config.json names the file",
			files:  map[string]string{"boot/config.json": `{"os_var":"zephyr",}`},
			code:   1,
			stderr: "boot description /boot/config.json: invalid JSON at line 1, column 20",
		},
		{
			name:   "missing payload names the key",
			files:  map[string]string{"boot/config.json": `{"inmate":"/boot/none.bin"}`},
			code:   1,
			stderr: `key "inmate": payload /boot/none.bin: does not exist`,
		},
		{
			name:   "an amd64 ELF inmate",
			files:  map[string]string{"boot/config.json": `{"inmate":"/boot/app.elf"}`, "boot/app.elf": testELF(elf.EM_X86_64, elf.ET_EXEC)},
			code:   1,
			stderr: `key "inmate": payload /boot/app.elf: ELF for EM_X86_64 (ELFCLASS64); partitions run EM_AARCH64`,
		},
		{
			name:   "a position-independent ELF inmate",
			files:  map[string]string{"boot/config.json": `{"inmate":"/boot/app.elf"}`, "boot/app.elf": testELF(elf.EM_AARCH64, elf.ET_DYN)},
			code:   1,
			stderr: `key "inmate": payload /boot/app.elf: ELF type ET_DYN`,
		},
		{
			name:   "a corrupt ELF inmate",
			files:  map[string]string{"boot/config.json": `{"inmate":"/boot/app.elf"}`, "boot/app.elf": "\x7fELF\x02\x01\x01 not really"},
			code:   1,
			stderr: `key "inmate": payload /boot/app.elf: not a readable ELF file`,
		},
		{
			name:    "an arm64 ELF inmate",
			files:   map[string]string{"boot/config.json": `{"inmate":"/boot/app.elf"}`, "boot/app.elf": testELF(elf.EM_AARCH64, elf.ET_EXEC)},
			wantCmd: "/boot/app.elf",
		},
		{
			name:   "an empty raw inmate",
			files:  map[string]string{"boot/config.json": `{}`, "boot/boot.bin": ""},
			code:   1,
			stderr: `key "inmate": payload /boot/boot.bin: the file is empty`,
		},
		{
			name:   "a Linux kernel that is none",
			files:  map[string]string{"boot/config.json": `{"os_var":"linux","kernel":"/boot/Image","dtb":"/boot/x.dtb"}`, "boot/Image": "MZ", "boot/x.dtb": fixtureDTB},
			code:   1,
			stderr: `key "kernel": kernel /boot/Image: neither an arm64 Image`,
		},
		{
			name:   "an unaligned starting_vaddress names the file, the key and the problem",
			files:  map[string]string{"boot/config.json": `{"starting_vaddress":"0x70000001"}`, "boot/boot.bin": "x"},
			code:   1,
			stderr: `boot description /boot/config.json: key "starting_vaddress": load address 0x70000001 is not 4 KiB aligned`,
		},
		{
			name:   "a starting_vaddress with no room above it is out of range, not misaligned",
			files:  map[string]string{"boot/config.json": `{"starting_vaddress":"0xffffffffffffffff"}`, "boot/boot.bin": "xy"},
			code:   1,
			stderr: `boot description /boot/config.json: key "starting_vaddress": 0xffffffffffffffff is out of range: the partition RAM starting there, at least 4 KiB to hold payload /boot/boot.bin (2 bytes), would wrap around the end of the 64-bit address space`,
		},
		{
			name:    "a simulator script",
			files:   map[string]string{"boot/config.json": `{}`, "boot/boot.bin": "#!runphi-sim\nprint up\nsleep 1s\nexit\n"},
			wantCmd: "/boot/boot.bin",
		},
		{
			name:   "a simulator script the inmate would crash on",
			files:  map[string]string{"boot/config.json": `{}`, "boot/boot.bin": "#!runphi-sim\nprint up\n# then\nsleep 1\n"},
			code:   1,
			stderr: `boot description /boot/config.json: key "inmate": payload /boot/boot.bin: runphi-sim script line 4: sleep: "1" is not a Go duration`,
		},
		{
			name:   "a directory as the payload",
			files:  map[string]string{"boot/config.json": `{"inmate":"/boot/dir"}`, "boot/dir/x": "x"},
			code:   1,
			stderr: `key "inmate": payload /boot/dir is a directory, not a regular file`,
		},
		{
			name:  "--no-validate skips the payload checks too",
			files: map[string]string{"boot/config.json": `{"inmate":"/boot/app.elf"}`, "boot/app.elf": testELF(elf.EM_X86_64, elf.ET_EXEC)},
			extra: []string{"--no-validate"},
		},
		{
			name:  "--no-validate builds broken images on purpose",
			files: map[string]string{"boot/config.json": `{"os_var":`},
			extra: []string{"--no-validate"},
		},
		{
			name:   "bad reference",
			files:  map[string]string{},
			extra:  []string{"--ref", "Bad Name"},
			code:   2,
			stderr: "image reference",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, tc.files)
			out := filepath.Join(t.TempDir(), "img.tar")
			args := append([]string{"image", "build", dir, "-o", out, "--ref", "t/img:1"}, tc.extra...)
			code, stdout, stderr := runCmd(t, args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tc.code, tc.stderr)
			}
			if code != 0 {
				if _, err := os.Stat(out); err == nil {
					t.Fatal("a failed build left its output file")
				}
				return
			}
			if !strings.Contains(stdout, "docker.io/t/img:1 sha256:") {
				t.Errorf("stdout %q does not name the image and its digest", stdout)
			}
			cfg := imageConfig(t, out)
			if got := strings.Join(cfg.Config.Cmd, " "); got != tc.wantCmd {
				t.Errorf("Cmd = %q, want %q", got, tc.wantCmd)
			}
		})
	}
}

// testELF is a minimal 64-bit little-endian ELF for machine with one
// PT_LOAD segment of 16 bytes at 0.
func testELF(machine elf.Machine, typ elf.Type) string {
	var b bytes.Buffer
	put := func(v any) { binary.Write(&b, binary.LittleEndian, v) }
	b.Write([]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT), 0, 0, 0, 0, 0, 0, 0, 0, 0})
	put(uint16(typ))
	put(uint16(machine))
	put(uint32(elf.EV_CURRENT))
	put(uint64(0))  // entry
	put(uint64(64)) // phoff
	put(uint64(0))  // shoff
	put(uint32(0))  // flags
	put([]uint16{64, 56, 1, 0, 0, 0})
	put(uint32(elf.PT_LOAD))
	put(uint32(elf.PF_R | elf.PF_X))
	put([]uint64{64 + 56, 0, 0, 16, 16, 0x1000}) // offset, vaddr, paddr, filesz, memsz, align
	b.Write(make([]byte, 16))
	return b.String()
}
