package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/partition"
)

func TestBoardCommand(t *testing.T) {
	dir := t.TempDir()
	qemu := filepath.Join(dir, "qemu.cell")
	if code, _, errOut := runCmd(t, "board", "system", "qemu-arm64", "-o", qemu); code != 0 {
		t.Fatalf("board system: %d %s", code, errOut)
	}
	// A system config that is not the profile's: another GIC and a root
	// cell without CPUs 8-15.
	b, err := partition.LoadBoard("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	sys := b.SystemConfig()
	sys.Platform.ARM.GICDBase = 0x08010000
	if err := sys.RootCell.SetCPUs([]int{0, 1, 2, 3, 4, 5, 6, 7}); err != nil {
		t.Fatal(err)
	}
	data, err := sys.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.cell")
	if err := os.WriteFile(other, data, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{"list shows the four profiles", []string{"board", "list"}, 0,
			[]string{"qemu-arm64", "zcu104", "kria-kv260", "rpi4", "0x70000000-0x7e800000 (232M)"}, ""},
		{"show", []string{"board", "show", "zcu104"}, 0,
			[]string{"partition CPUs  1-3 (root Linux keeps 0)", "RPUs            0-1", "omnivisor Jailhouse",
				"ivshmem window  0x7e000000-0x7f000000: 16 network links of 1M, devices 00:01.0-00:10.0"}, ""},
		{"check against the profile's own system config", []string{"board", "check", "qemu-arm64", qemu}, 0,
			[]string{"board profile qemu-arm64 fits"}, ""},
		{"check against another system config", []string{"board", "check", "qemu-arm64", other}, 1,
			[]string{"FAIL partitions.cpus: CPU 8 is not in the root cell's CPUs 0-7",
				"FAIL partitions.gic: 0x8000000 is not the GIC distributor of the system config (0x8010000)"},
			"does not fit"},
		{"check a profile against another board's", []string{"board", "check", "rpi4", qemu}, 1,
			[]string{"FAIL partitions.pools[0]"}, ""},
		{"check a file that is not a system config", []string{"board", "check", "qemu-arm64", "board_test.go"}, 1, nil, "board_test.go"},
		{"check needs two arguments", []string{"board", "check", "qemu-arm64"}, 2, nil, "usage"},
		{"unknown profile", []string{"board", "show", "pdp-11"}, 1, nil, "no built-in board profile"},
		{"unknown subcommand", []string{"board", "frob"}, 2, nil, "unknown subcommand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("runphi %q = %d\nstdout: %s\nstderr: %s", tt.args, code, out, errOut)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
		})
	}
}

func TestBoardShowJSON(t *testing.T) {
	code, out, errOut := runCmd(t, "board", "show", "rpi4", "--json")
	if code != 0 {
		t.Fatalf("%d %s", code, errOut)
	}
	var s boardSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.Name != "rpi4" || s.GIC != 0xff841000 || len(s.UARTs) != 1 || s.UARTs[0].Address != 0xfe215040 ||
		jailhouse.FormatCPUList(s.PartitionCPUs) != "1-3" || s.IVSHMEM.Slots != 16 {
		t.Errorf("summary %+v", s)
	}
}
