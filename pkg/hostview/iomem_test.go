package hostview

import (
	"path/filepath"
	"testing"
)

func TestReadSystemRAM(t *testing.T) {
	tests := []struct {
		name   string
		text   string
		ram    int
		hidden bool
		bad    bool
	}{
		{"arm64 with mem=768M", "08000000-0800ffff : GICD\n09000000-09000fff : pl011@9000000\n  09000000-09000fff : 9000000.pl011 pl011@9000000\n40000000-6fffffff : System RAM\n  40210000-4171ffff : Kernel code\n", 1, false, false},
		{"as a user: zeros", "00000000-00000000 : GICD\n00000000-00000000 : System RAM\n", 1, true, false},
		{"garbage", "not iomem\n", 0, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "iomem")
			writeTestFile(t, path, tc.text)
			ram, hidden, err := ReadSystemRAM(path)
			if tc.bad != (err != nil) {
				t.Fatalf("err = %v", err)
			}
			if len(ram) != tc.ram || hidden != tc.hidden {
				t.Fatalf("ram %+v hidden %v", ram, hidden)
			}
			if tc.name == "arm64 with mem=768M" && (ram[0].Start != 0x40000000 || ram[0].End != 0x6fffffff) {
				t.Errorf("ram %+v", ram[0])
			}
		})
	}
}
