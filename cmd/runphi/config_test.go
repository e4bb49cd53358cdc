package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const goldenDir = "../../pkg/jailhouse/testdata/golden"

func golden(rev, name string) string { return filepath.Join(goldenDir, rev, name+".cell") }

// squeeze collapses runs of spaces, so tests match values without
// depending on column widths.
func squeeze(s string) string { return regexp.MustCompile(` +`).ReplaceAllString(s, " ") }

func TestConfigInspectHuman(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // lines (spaces squeezed) that must appear
	}{
		{
			name: "arm64 cell: flags by name, cpus as a list, irqchip pins, ivshmem device",
			args: []string{golden("rev14", "qemu-arm64-inmate-demo")},
			want: []string{
				"qemu-arm64-inmate-demo.cell: cell configuration, 484 bytes",
				"signature JHCLL",
				"architecture 2 arm64",
				"revision 14",
				`name "inmate-demo"`,
				"flags 0x1 PASSIVE_COMMREG",
				"cpu_set_size 8",
				"cpus 1",
				"num_memory_regions 8",
				"vpci_irq_base 112",
				" type 3 PL011",
				" flags 0x3 ACCESS_MMIO|REGDIST_4",
				" # phys_start virt_start size flags",
				" 6 0x7fa00000 0x0 0x10000 0x47 READ|WRITE|EXECUTE|LOADABLE",
				" 7 0x0 0x80000000 0x1000 0x23 READ|WRITE|COMM_REGION",
				"irqchips[0]:",
				" pin_bitmap 0x00000000 0x00000000 0x00000000 0x00010000",
				" pins 144",
				"pci_devices[0]:",
				" type 3 IVSHMEM",
				" bdf 0x0 00:00.0",
				" bar_mask 0xfffff000 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000",
				" shmem_dev_id 1",
				" shmem_protocol 0x0 UNDEFINED",
			},
		},
		{
			name: "x86 system: platform member, IOMMU unit, pio ranges, extended caps",
			args: []string{golden("rev14", "qemu-x86")},
			want: []string{
				"system configuration, ",
				"architecture 0 x86",
				"flags 0x1 VIRTUAL_DEBUG_CONSOLE",
				"platform_info:",
				" pci_mmconfig_end_bus 255",
				" iommu_units 1 of 8 in use",
				" x86:",
				" pm_timer_address 0x608",
				" apic_mode 0 AUTO",
				" iommu_units[0]:",
				" type 2 INTEL",
				"root_cell:",
				` name "QEMU-VM"`,
				" 9 0x8001 (extended 0x1) 0x100 4 0x0",
			},
		},
		{
			name: "revision 13 system without --arch says what it inferred",
			args: []string{golden("rev13", "qemu-arm64")},
			want: []string{"signature JHSYST", "architecture (arm or arm64, inferred from the platform_info layout; revision 13 does not record which, give --arch)", " arm:", " gic_version 3"},
		},
		{
			name: "revision 12 cell with --arch",
			args: []string{golden("rev12", "bananapi-inmate-demo"), "--arch", "arm"},
			want: []string{"signature JHCELL", "architecture arm (from --arch; revision 12 does not record it)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, append([]string{"config", "inspect"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			sq := squeeze(out)
			for _, w := range tt.want {
				if !strings.Contains(sq, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for i, line := range strings.Split(out, "\n") {
				if strings.HasSuffix(line, " ") {
					t.Errorf("line %d has trailing spaces: %q", i+1, line)
				}
			}
		})
	}
}

// TestConfigInspectAligned: the values of one block start in one column.
func TestConfigInspectAligned(t *testing.T) {
	_, out, _ := runCmd(t, "config", "inspect", golden("rev14", "qemu-arm64-linux-demo"))
	col := -1
	for _, key := range []string{"signature", "name", "cpu_set_size", "num_memory_regions", "msg_reply_timeout"} {
		re := regexp.MustCompile(`(?m)^` + key + ` +`)
		loc := re.FindStringIndex(out)
		if loc == nil {
			t.Fatalf("no %q line:\n%s", key, out)
		}
		lineStart := strings.LastIndexByte(out[:loc[0]+1], '\n') + 1
		if c := loc[1] - lineStart; col == -1 {
			col = c
		} else if c != col {
			t.Errorf("value of %s starts at column %d, others at %d:\n%s", key, c, col, out)
		}
	}
}

// TestConfigInspectJSONEncode is acceptance 2's round trip on every golden
// file: inspect --json, then encode, gives the identical file.
func TestConfigInspectJSONEncode(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(goldenDir, "rev*", "*.cell"))
	if len(files) < 21 {
		t.Fatalf("found %d golden files", len(files))
	}
	dir := t.TempDir()
	for _, path := range files {
		rel, _ := filepath.Rel(goldenDir, path)
		t.Run(rel, func(t *testing.T) {
			code, out, errOut := runCmd(t, "config", "inspect", "--json", path)
			if code != 0 {
				t.Fatalf("inspect exit %d: %s", code, errOut)
			}
			if !json.Valid([]byte(out)) {
				t.Fatalf("not JSON:\n%s", out)
			}
			in := filepath.Join(dir, strings.ReplaceAll(rel, "/", "-")+".json")
			cell := strings.TrimSuffix(in, ".json") + ".cell"
			if err := os.WriteFile(in, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			code, msg, errOut := runCmd(t, "config", "encode", in, "-o", cell)
			if code != 0 {
				t.Fatalf("encode exit %d: %s", code, errOut)
			}
			want, _ := os.ReadFile(path)
			got, _ := os.ReadFile(cell)
			if !bytes.Equal(got, want) {
				t.Fatalf("encode(inspect --json) is %d bytes, differs from %d-byte %s", len(got), len(want), path)
			}
			if !strings.Contains(msg, cell+": ") || !strings.Contains(msg, "bytes") {
				t.Errorf("encode said %q", msg)
			}
		})
	}
}

// TestConfigPipe: "inspect --json X | encode - -o -" through standard
// input and output.
func TestConfigPipe(t *testing.T) {
	path := golden("rev14", "k3-j721e-evm-linux-demo")
	_, js, _ := runCmd(t, "config", "inspect", "--json", path)
	f := filepath.Join(t.TempDir(), "in.json")
	if err := os.WriteFile(f, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	stdin, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	saved := os.Stdin
	os.Stdin = stdin
	defer func() { os.Stdin = saved }()
	code, out, errOut := runCmd(t, "config", "encode", "-", "-o", "-")
	want, _ := os.ReadFile(path)
	if code != 0 || out != string(want) {
		t.Fatalf("exit %d, %d bytes (want %d): %s", code, len(out), len(want), errOut)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sys, _ := os.ReadFile(golden("rev14", "qemu-arm64"))
	truncated := write("truncated.cell", string(sys[:300]))
	trailer := write("trailer.cell", string(sys)+"\x00\x00\x00\x00")
	badJSON := write("bad.json", "{\n  \"architecture\": \"arm64\",\n  \"name\": \"x\",\n  \"mem_regions\": [{\"flags\": \"0xzz\"}]\n}\n")
	syntax := write("syntax.json", "{\n  \"architecture\": \"arm64\"\n  \"name\": \"x\"\n}\n")
	longName := write("long.json", `{"architecture": "arm64", "name": "`+strings.Repeat("n", 32)+`"}`)
	okJSON := write("ok.json", `{"architecture": "arm64", "name": "ok"}`)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr []string
	}{
		{"config without subcommand", []string{"config"}, 2, []string{"missing subcommand"}},
		{"unknown subcommand", []string{"config", "dump"}, 2, []string{`unknown subcommand "dump"`}},
		{"inspect needs a file", []string{"config", "inspect"}, 2, []string{"usage: runphi config"}},
		{"inspect of a missing file", []string{"config", "inspect", filepath.Join(dir, "nope.cell")}, 2, []string{"nope.cell", "no such file"}},
		{"inspect of a truncated system names offset and field", []string{"config", "inspect", truncated}, 2,
			[]string{"truncated.cell", "offset 300", "jailhouse_system", "truncated"}},
		{"inspect of a vendor-extended file", []string{"config", "inspect", trailer}, 2, []string{"trailer.cell", "offset 1024 (file length)", "does not match"}},
		{"inspect with a wrong --arch", []string{"config", "inspect", golden("rev14", "apic-demo"), "--arch", "arm64"}, 2,
			[]string{"apic-demo.cell", "offset 5 (architecture)", "file is x86, --arch says arm64"}},
		{"unknown --arch", []string{"config", "inspect", golden("rev14", "apic-demo"), "--arch", "riscv"}, 2, []string{"--arch", "riscv"}},
		{"encode needs -o", []string{"config", "encode", okJSON}, 2, []string{"-o is required"}},
		{"encode of a bad value names file and field", []string{"config", "encode", badJSON, "-o", filepath.Join(dir, "x.cell")}, 2,
			[]string{"bad.json", "mem_regions.flags", `"0xzz" is not an unsigned integer`}},
		{"encode of broken JSON names the line", []string{"config", "encode", syntax, "-o", filepath.Join(dir, "x.cell")}, 2,
			[]string{"syntax.json", "line 3, column 3"}},
		{"encode of an unencodable name", []string{"config", "encode", longName, "-o", filepath.Join(dir, "x.cell")}, 2,
			[]string{"long.json", "cannot encode", "(name)", "longer than 31 bytes"}},
		{"encode into a missing directory", []string{"config", "encode", okJSON, "-o", filepath.Join(dir, "no", "x.cell")}, 1,
			[]string{"no such file"}},
		{"check: the first file must be a system", []string{"config", "check", golden("rev14", "apic-demo")}, 2,
			[]string{"apic-demo.cell", "must be a system configuration"}},
		{"check: only one system", []string{"config", "check", golden("rev14", "qemu-x86"), golden("rev14", "qemu-x86")}, 2,
			[]string{"only the first file may be a system"}},
		{"check: an undecodable cell", []string{"config", "check", golden("rev14", "qemu-arm64"), truncated}, 2, []string{"truncated.cell"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.code, errOut)
			}
			for _, w := range tt.stderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q: %s", w, errOut)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "x.cell")); !os.IsNotExist(err) {
		t.Errorf("a failed encode left x.cell behind (stat: %v)", err)
	}
}

func TestConfigCheck(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string
		errors   int
		warnings int
	}{
		{"upstream qemu-arm64 with its demos is clean",
			[]string{golden("rev14", "qemu-arm64"), golden("rev14", "qemu-arm64-inmate-demo"), golden("rev14", "qemu-arm64-linux-demo")},
			0, []string{"0 errors, 0 warnings in 3 configurations"}, 0, 0},
		{"an x86 cell on an arm64 system is an error",
			[]string{golden("rev14", "qemu-arm64"), golden("rev14", "apic-demo")},
			1, []string{"SEVERITY CELL FIELD MESSAGE", "error apic-demo architecture cell is x86, system is arm64", "1 error, 0 warnings in 2 configurations"}, 1, 0},
		{"the same cell twice collides in name, CPUs and memory",
			[]string{golden("rev14", "qemu-x86"), golden("rev14", "apic-demo"), golden("rev14", "apic-demo")},
			1, []string{`error apic-demo name two cells are named "apic-demo"`, "error apic-demo cpus CPU 3 is also assigned"}, 3, 0},
		{"revision 13 system and cells with --arch",
			[]string{"--arch", "arm64", golden("rev13", "qemu-arm64"), golden("rev13", "qemu-arm64-inmate-demo")},
			0, []string{"0 errors"}, 0, 0},
		{"revision 13 system and cells, arch inferred",
			[]string{golden("rev13", "qemu-x86"), golden("rev13", "apic-demo")},
			0, []string{"0 errors"}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, append([]string{"config", "check"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s\nstdout: %s", code, tt.code, errOut, out)
			}
			sq := squeeze(out)
			for _, w := range tt.stdout {
				if !strings.Contains(sq, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			code, out, _ = runCmd(t, append([]string{"config", "check", "--json"}, tt.args...)...)
			var res checkOutput
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("--json: %v\n%s", err, out)
			}
			if code != tt.code || res.Errors != tt.errors || res.Warnings != tt.warnings || len(res.Findings) != tt.errors+tt.warnings ||
				len(res.Files) != len(tt.args)-strings.Count(strings.Join(tt.args, " "), "--arch")*2 {
				t.Errorf("--json: exit %d, %+v; want exit %d, %d errors, %d warnings", code, res, tt.code, tt.errors, tt.warnings)
			}
		})
	}
}
