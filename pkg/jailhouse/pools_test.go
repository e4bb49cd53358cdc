package jailhouse

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadPools(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  Pools
		err   string // substring; "" for success
	}{
		{"abi example: arm64 with 4 MiB of hypervisor memory",
			map[string]string{"mem_pool_size": "994\n", "mem_pool_used": "39\n", "remap_pool_size": "131072\n", "remap_pool_used": "0\n"},
			Pools{MemSize: 994, MemUsed: 39, RemapSize: 131072}, ""},
		{"disabled: all zero",
			map[string]string{"mem_pool_size": "0\n", "mem_pool_used": "0\n", "remap_pool_size": "0\n", "remap_pool_used": "0\n"},
			Pools{}, ""},
		{"x86 remap pool in use",
			map[string]string{"mem_pool_size": "1530\n", "mem_pool_used": "270\n", "remap_pool_size": "131072\n", "remap_pool_used": "16392\n"},
			Pools{MemSize: 1530, MemUsed: 270, RemapSize: 131072, RemapUsed: 16392}, ""},
		{"missing file names it",
			map[string]string{"mem_pool_size": "994\n", "mem_pool_used": "39\n", "remap_pool_size": "131072\n"},
			Pools{}, "remap_pool_used"},
		{"not a count names the file and the text",
			map[string]string{"mem_pool_size": "994\n", "mem_pool_used": "-1\n", "remap_pool_size": "0\n", "remap_pool_used": "0\n"},
			Pools{}, `mem_pool_used: "-1" is not a decimal page count`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tt.files)
			got, err := ReadPools(root)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ReadPools = %+v, %v; want an error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ReadPools = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	if _, err := ReadPools(filepath.Join(t.TempDir(), "absent")); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("ReadPools(no module) = %v, want ErrNotLoaded", err)
	}
}
