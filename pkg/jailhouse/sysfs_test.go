package jailhouse

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestFormatCPUMask(t *testing.T) {
	tests := []struct {
		name string
		cpus []int
		nr   int
		want string
	}{
		{"abi example nr_cpu_ids 4", []int{2, 3}, 4, "c"},
		{"abi example nr_cpu_ids 8 pads to two digits", []int{2, 3}, 8, "0c"},
		{"abi example nr_cpu_ids 64 has a comma every 8 digits", []int{2, 3}, 64, "00000000,0000000c"},
		{"empty mask is all zeros", nil, 8, "00"},
		{"empty mask nr_cpu_ids 4", nil, 4, "0"},
		{"odd width rounds up", []int{5}, 6, "20"},
		{"partial top chunk is narrow", []int{0, 33}, 36, "2,00000001"},
		{"full 32 bits", []int{31}, 32, "80000000"},
		{"top cpu of 16", []int{0, 15}, 16, "8001"},
		{"cpus beyond nr_cpu_ids are left out", []int{1, 9}, 8, "02"},
		{"unsorted duplicates", []int{3, 2, 3}, 4, "c"},
		{"no cpu ids", []int{1}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatCPUMask(tt.cpus, tt.nr); got != tt.want {
				t.Errorf("FormatCPUMask(%v, %d) = %q, want %q", tt.cpus, tt.nr, got, tt.want)
			}
		})
	}
}

func TestFormatCPUList(t *testing.T) {
	tests := []struct {
		name string
		cpus []int
		want string
	}{
		{"abi example range", []int{2, 3}, "2-3"},
		{"abi example single and range", []int{0, 2, 3, 4, 5}, "0,2-5"},
		{"empty mask is empty", nil, ""},
		{"single cpu", []int{7}, "7"},
		{"unsorted with duplicates", []int{5, 0, 4, 4, 3, 2}, "0,2-5"},
		{"separate singles", []int{1, 3, 5}, "1,3,5"},
		{"two ranges", []int{0, 1, 8, 9, 10}, "0-1,8-10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatCPUList(tt.cpus); got != tt.want {
				t.Errorf("FormatCPUList(%v) = %q, want %q", tt.cpus, got, tt.want)
			}
		})
	}
}

func TestParseCPUMask(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []int
		wantErr bool
	}{
		{"abi example nr_cpu_ids 4", "c\n", []int{2, 3}, false},
		{"abi example nr_cpu_ids 8", "0c\n", []int{2, 3}, false},
		{"abi example nr_cpu_ids 64", "00000000,0000000c\n", []int{2, 3}, false},
		{"without newline", "0c", []int{2, 3}, false},
		{"high chunk", "2,00000001", []int{0, 33}, false},
		{"zero mask", "00\n", nil, false},
		{"empty", "\n", nil, false},
		{"uppercase hex accepted", "0C", []int{2, 3}, false},
		{"short inner chunk", "0,c", nil, true},
		{"long first chunk", "000000000", nil, true},
		{"not hex", "0g", nil, true},
		{"empty chunk", ",0000000c", nil, true},
		{"sign rejected", "+c", nil, true},
		{"two newlines", "c\n\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCPUMask(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseCPUMask(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ParseCPUMask(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseCPUList(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []int
		wantErr bool
	}{
		{"abi example range", "2-3\n", []int{2, 3}, false},
		{"abi example single and range", "0,2-5\n", []int{0, 2, 3, 4, 5}, false},
		{"empty mask", "\n", nil, false},
		{"empty string", "", nil, false},
		{"single", "7", []int{7}, false},
		{"overlap normalised", "3,1-3", []int{1, 2, 3}, false},
		{"decreasing range", "5-2", nil, true},
		{"negative", "-1", nil, true},
		{"garbage", "a", nil, true},
		{"empty item", "1,,2", nil, true},
		{"huge range is refused before allocating", "0-4294967295", nil, true},
		{"spaces are not kernel output", " 1", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCPUList(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseCPUList(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ParseCPUList(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCPUFormatsRoundTrip(t *testing.T) {
	sets := [][]int{nil, {0}, {1, 2, 3}, {0, 5, 31, 32, 63}, {2, 3, 100, 127}}
	for _, nr := range []int{4, 8, 64, 128, 130} {
		for _, cpus := range sets {
			var in []int
			for _, c := range cpus {
				if c < nr {
					in = append(in, c)
				}
			}
			mask := FormatCPUMask(in, nr)
			if got, err := ParseCPUMask(mask + "\n"); err != nil || !slices.Equal(got, in) {
				t.Errorf("nr %d: ParseCPUMask(FormatCPUMask(%v)) = %v, %v via %q", nr, in, got, err, mask)
			}
			if want := (nr + 3) / 4; len(mask)-strings.Count(mask, ",") != want {
				t.Errorf("nr %d: mask %q does not have %d digits", nr, mask, want)
			}
			list := FormatCPUList(in)
			if got, err := ParseCPUList(list + "\n"); err != nil || !slices.Equal(got, in) {
				t.Errorf("ParseCPUList(FormatCPUList(%v)) = %v, %v via %q", in, got, err, list)
			}
		}
	}
}

// writeTree creates files (path relative to root → content) under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		path := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// sampleTree is a root cell with cpus 0-1 and two cells, the one with id 10
// listed to check numeric rather than alphabetical order.
func sampleTree(t *testing.T) string {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"enabled":                               "1\n",
		"cells/0/name":                          "qemu-arm64\n",
		"cells/0/state":                         "running\n",
		"cells/0/cpus_assigned":                 "0003\n",
		"cells/0/cpus_assigned_list":            "0-1\n",
		"cells/0/cpus_failed":                   "0000\n",
		"cells/0/cpus_failed_list":              "\n",
		"cells/2/name":                          "inmate demo\n",
		"cells/2/state":                         "running/locked\n",
		"cells/2/cpus_assigned_list":            "2-3\n",
		"cells/2/cpus_failed_list":              "\n",
		"cells/10/name":                         "linux\n",
		"cells/10/state":                        "failed\n",
		"cells/10/cpus_assigned_list":           "4,6-7\n",
		"cells/10/cpus_failed_list":             "6\n",
		"cells/2/statistics/vmexits_total":      "1234\n",
		"cells/2/statistics/vmexits_mmio":       "17\n",
		"cells/2/statistics/cpu2/vmexits_total": "1000\n",
		"cells/2/statistics/cpu2/vmexits_mmio":  "17\n",
		"cells/2/statistics/cpu3/vmexits_total": "234\n",
		"cells/2/statistics/cpu3/vmexits_mmio":  "0\n",
	})
	return root
}

func TestReadCells(t *testing.T) {
	root := sampleTree(t)
	got, err := ReadCells(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []CellInfo{
		{ID: 0, Name: "qemu-arm64", State: StateRunning, CPUs: []int{0, 1}},
		{ID: 2, Name: "inmate demo", State: StateRunningLocked, CPUs: []int{2, 3}},
		{ID: 10, Name: "linux", State: StateFailed, CPUs: []int{4, 6, 7}, FailedCPUs: []int{6}},
	}
	if len(got) != len(want) {
		t.Fatalf("ReadCells = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Name != w.Name || g.State != w.State ||
			!slices.Equal(g.CPUs, w.CPUs) || !slices.Equal(g.FailedCPUs, w.FailedCPUs) {
			t.Errorf("cell %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestReadCellsErrors(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantErr error
	}{
		{"module not loaded", nil, ErrNotLoaded},
		{"disabled has no cells", map[string]string{"enabled": "0\n", "cells/.keep": ""}, nil},
		{"bad state text", map[string]string{
			"cells/1/name": "x\n", "cells/1/state": "sleeping\n",
			"cells/1/cpus_assigned_list": "1\n", "cells/1/cpus_failed_list": "\n",
		}, errAny},
		{"bad cpu list", map[string]string{
			"cells/1/name": "x\n", "cells/1/state": "running\n",
			"cells/1/cpus_assigned_list": "1-\n", "cells/1/cpus_failed_list": "\n",
		}, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "jailhouse")
			if tt.files != nil {
				writeTree(t, root, tt.files)
			}
			cells, err := ReadCells(root)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("ReadCells: %v", err)
			case tt.wantErr == nil && len(cells) != 0:
				t.Fatalf("ReadCells = %+v, want none", cells)
			case tt.wantErr == errAny && err == nil:
				t.Fatalf("ReadCells = %+v, want an error", cells)
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("ReadCells error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestReadCell(t *testing.T) {
	root := sampleTree(t)
	got, err := ReadCell(root, "linux")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != 10 || got.State != StateFailed || !slices.Equal(got.FailedCPUs, []int{6}) {
		t.Errorf("ReadCell(linux) = %+v", got)
	}
	if got, err := ReadCell(root, "inmate demo"); err != nil || got.ID != 2 {
		t.Errorf("ReadCell(name with space) = %+v, %v", got, err)
	}
	if _, err := ReadCell(root, "lin"); !errors.Is(err, ErrCellNotFound) {
		t.Errorf("ReadCell(prefix of a name) error = %v, want ErrCellNotFound", err)
	}
	if _, err := ReadCell(filepath.Join(root, "absent"), "linux"); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("ReadCell(absent root) error = %v, want ErrNotLoaded", err)
	}
}

func TestReadEnabled(t *testing.T) {
	tests := []struct {
		name    string
		content *string
		want    bool
		wantErr error
	}{
		{"enabled", ptr("1\n"), true, nil},
		{"disabled", ptr("0\n"), false, nil},
		{"garbage", ptr("yes\n"), false, errAny},
		{"module not loaded", nil, false, ErrNotLoaded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "jailhouse")
			if tt.content != nil {
				writeTree(t, root, map[string]string{"enabled": *tt.content})
			}
			got, err := ReadEnabled(root)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("ReadEnabled: %v", err)
			case tt.wantErr == errAny && err == nil:
				t.Fatalf("ReadEnabled = %v, want an error", got)
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("ReadEnabled error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ReadEnabled = %v, want %v", got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestReadStatistics(t *testing.T) {
	root := sampleTree(t)
	got, err := ReadStatistics(root, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got.Total["vmexits_total"] != 1234 || got.Total["vmexits_mmio"] != 17 || len(got.Total) != 2 {
		t.Errorf("Total = %v", got.Total)
	}
	if len(got.PerCPU) != 2 || got.PerCPU[2]["vmexits_total"] != 1000 || got.PerCPU[3]["vmexits_total"] != 234 {
		t.Errorf("PerCPU = %v", got.PerCPU)
	}
	if _, err := ReadStatistics(root, 5); !errors.Is(err, ErrCellNotFound) {
		t.Errorf("ReadStatistics(no such id) error = %v, want ErrCellNotFound", err)
	}
	writeTree(t, root, map[string]string{"cells/2/statistics/vmexits_psci": "-1\n"})
	if _, err := ReadStatistics(root, 2); err == nil {
		t.Errorf("ReadStatistics accepted a negative counter")
	}
}
