package jailhouse

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// decodeAny decodes a cell or a system configuration, by signature.
func decodeAny(b []byte) (*Cell, *System, error) {
	c, err := DecodeCell(b)
	if err == nil {
		return c, nil, nil
	}
	if !errors.Is(err, ErrBadSignature) {
		return nil, nil, err
	}
	s, err := DecodeSystem(b)
	return nil, s, err
}

// configToJSON is what `runphi config inspect --json` prints.
func configToJSON(t *testing.T, c *Cell, s *System) []byte {
	t.Helper()
	var v any
	var err error
	if c != nil {
		v, err = CellToJSON(c)
	} else {
		v, err = SystemToJSON(s)
	}
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestJSONRoundTripGolden is inspect --json | encode on every golden file:
// the JSON form must give back the decoded value and the identical bytes,
// and printing it again must give the same text.
func TestJSONRoundTripGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/rev*/*.cell")
	if err != nil || len(files) < 21 {
		t.Fatalf("golden files: %v, %v", files, err)
	}
	for _, path := range files {
		t.Run(strings.TrimPrefix(path, "testdata/golden/"), func(t *testing.T) {
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			c, s, err := decodeAny(orig)
			if err != nil {
				t.Fatal(err)
			}
			text := configToJSON(t, c, s)
			c2, s2, err := UnmarshalConfigJSON(text)
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			var got []byte
			if c != nil {
				if !reflect.DeepEqual(c, c2) {
					t.Fatalf("cell differs after JSON:\n got %+v\nwant %+v", c2, c)
				}
				got, err = c2.MarshalBinary()
			} else {
				if !reflect.DeepEqual(s, s2) {
					t.Fatalf("system differs after JSON:\n got %+v\nwant %+v", s2, s)
				}
				got, err = s2.MarshalBinary()
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, orig) {
				t.Fatalf("encode(JSON) differs from %s at byte %d", path, firstDiff(got, orig))
			}
			if again := configToJSON(t, c2, s2); !bytes.Equal(again, text) {
				t.Errorf("JSON of the re-read config differs:\n%s\nfirst:\n%s", again, text)
			}
		})
	}
}

// jsonPath walks a decoded JSON document: "root_cell.mem_regions.0.flags".
func jsonPath(t *testing.T, doc any, path string) any {
	t.Helper()
	for _, k := range strings.Split(path, ".") {
		switch v := doc.(type) {
		case map[string]any:
			var ok bool
			if doc, ok = v[k]; !ok {
				t.Fatalf("%s: no key %q", path, k)
			}
		case []any:
			i := 0
			for _, ch := range k {
				i = i*10 + int(ch-'0')
			}
			if i >= len(v) {
				t.Fatalf("%s: index %d of %d", path, i, len(v))
			}
			doc = v[i]
		default:
			t.Fatalf("%s: %q under a %T", path, k, doc)
		}
	}
	return doc
}

// TestJSONShape pins the keys and value forms a user reads and scripts
// against: C field names, hex strings for addresses and flags, numbers for
// counts, names beside flags and enums, cpus as a list.
func TestJSONShape(t *testing.T) {
	var doc any
	text := configToJSON(t, nil, qemuARM64System())
	if err := json.Unmarshal(text, &doc); err != nil {
		t.Fatal(err)
	}
	sysWant := map[string]any{
		"signature":                                   "JHSYS",
		"architecture":                                "arm64",
		"revision":                                    14.0,
		"flags":                                       "0x1",
		"flags_names":                                 "VIRTUAL_DEBUG_CONSOLE",
		"hypervisor_memory.phys_start":                "0x7fc00000",
		"hypervisor_memory.size":                      "0x400000",
		"debug_console.type":                          3.0,
		"debug_console.type_name":                     "PL011",
		"debug_console.flags_names":                   "ACCESS_MMIO|REGDIST_4",
		"platform_info.pci_mmconfig_base":             "0x8e00000",
		"platform_info.pci_is_virtual":                1.0,
		"platform_info.arm.gic_version":               3.0,
		"platform_info.arm.gicd_base":                 "0x8000000",
		"platform_info.arm.gicr_base":                 "0x80a0000",
		"platform_info.arm.maintenance_irq":           25.0,
		"root_cell.name":                              "qemu-arm64",
		"root_cell.cpu_set_size":                      8.0,
		"root_cell.cpus.15":                           15.0,
		"root_cell.vpci_irq_base":                     96.0,
		"root_cell.mem_regions.11.phys_start":         "0x4010000000",
		"root_cell.mem_regions.11.flags":              "0x13",
		"root_cell.mem_regions.11.flags_names":        "READ|WRITE|IO",
		"root_cell.irqchips.0.pin_base":               32.0,
		"root_cell.irqchips.0.pin_bitmap.3":           "0xffffffff",
		"root_cell.pci_devices.1.type_name":           "IVSHMEM",
		"root_cell.pci_devices.1.bdf":                 "0x8",
		"root_cell.pci_devices.1.bar_mask.0":          "0xfffff000",
		"root_cell.pci_devices.1.shmem_regions_start": 5.0,
		"root_cell.pci_devices.1.shmem_protocol":      "0x1",
	}
	for path, want := range sysWant {
		if got := jsonPath(t, doc, path); got != want {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
	m := doc.(map[string]any)
	if _, ok := m["platform_info"].(map[string]any)["x86"]; ok {
		t.Error("an arm64 system has an x86 member")
	}
	if units := jsonPath(t, doc, "platform_info.iommu_units").([]any); len(units) != 0 {
		t.Errorf("iommu_units = %v, want [] (all eight unused)", units)
	}
	// Zero flags need no names; counts are carried by the arrays.
	if _, ok := jsonPath(t, doc, "hypervisor_memory").(map[string]any)["flags_names"]; ok {
		t.Error("flags_names written for flags 0")
	}
	if _, ok := jsonPath(t, doc, "root_cell").(map[string]any)["num_memory_regions"]; ok {
		t.Error("num_memory_regions written")
	}

	// x86: the other platform member, the apic mode name, IOMMU units.
	doc = nil
	if err := json.Unmarshal(configToJSON(t, nil, qemuX86System()), &doc); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]any{
		"architecture":                          "x86",
		"platform_info.x86.pm_timer_address":    "0x608",
		"platform_info.iommu_units.0.type_name": "INTEL",
		"platform_info.iommu_units.0.base":      "0xfed90000",
	} {
		if got := jsonPath(t, doc, path); got != want {
			t.Errorf("x86: %s = %#v, want %#v", path, got, want)
		}
	}
}

// inmateDemoJSON is configs/arm64/qemu-arm64-inmate-demo.c written by hand
// the way a user would: names instead of numbers, C macro names, decimal
// and hex strings, bitfields as 0/1, counts given, no cpu_set_size.
const inmateDemoJSON = `{
  "signature": "JHCLL", "architecture": "arm64", "revision": 14,
  "name": "inmate-demo",
  "flags_names": "JAILHOUSE_CELL_PASSIVE_COMMREG",
  "num_memory_regions": 8, "num_irqchips": 1, "num_pci_devices": 1,
  "vpci_irq_base": 112,
  "console": {"address": "0x09000000", "type_name": "PL011", "flags_names": "ACCESS_MMIO | REGDIST_4"},
  "cpus": [1],
  "mem_regions": [
    {"phys_start": "0x7faf0000", "virt_start": "0x7faf0000", "size": 4096, "flags_names": "READ|ROOTSHARED"},
    {"phys_start": "0x7faf1000", "virt_start": "0x7faf1000", "size": "0x9000", "flags": "0x83"},
    {"phys_start": "0x7fafa000", "virt_start": "0x7fafa000", "size": "0x2000", "flags": 129, "flags_names": "READ|ROOTSHARED"},
    {"phys_start": "0x7fafc000", "virt_start": "0x7fafc000", "size": "0x2000", "flags_names": "READ|WRITE|ROOTSHARED"},
    {"phys_start": "0x7fafe000", "virt_start": "0x7fafe000", "size": "0x2000", "flags_names": "JAILHOUSE_MEM_READ|JAILHOUSE_MEM_ROOTSHARED"},
    {"phys_start": "0x09000000", "virt_start": "0x09000000", "size": "0x1000", "flags_names": "READ|WRITE|IO|ROOTSHARED"},
    {"phys_start": "0x7fa00000", "virt_start": 0, "size": "0x00010000", "flags_names": "read|write|execute|loadable"},
    {"virt_start": "0x80000000", "size": "0x1000", "flags_names": "READ|WRITE|COMM_REGION"}
  ],
  "irqchips": [{"address": "0x08000000", "pin_base": 32, "pin_bitmap": [0, 0, 0, "0x10000"]}],
  "pci_devices": [{"type_name": "JAILHOUSE_PCI_TYPE_IVSHMEM", "domain": 1, "bdf": 0,
    "bar_mask": ["0xfffff000"], "shmem_dev_id": 1, "shmem_peers": 3, "msi_64bits": 0}]
}`

// TestJSONHandWritten: a configuration written by hand from the C source
// encodes to the golden bytes.
func TestJSONHandWritten(t *testing.T) {
	c, s, err := UnmarshalConfigJSON([]byte(inmateDemoJSON))
	if err != nil || s != nil {
		t.Fatalf("UnmarshalConfigJSON: %v (system %v)", err, s)
	}
	if !reflect.DeepEqual(c, qemuARM64InmateDemo()) {
		t.Fatalf("got %+v\nwant %+v", c, qemuARM64InmateDemo())
	}
	got, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/golden/rev14/qemu-arm64-inmate-demo.cell")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("differs from the golden file at byte %d", firstDiff(got, want))
	}
}

// TestJSONKindAndRevision: the kind comes from the signature or the
// root_cell key; revisions 12/13 need no architecture, and the platform
// member present picks the layout.
func TestJSONKindAndRevision(t *testing.T) {
	tests := []struct {
		name     string
		json     string
		system   bool
		rev      Revision
		arch     Arch
		platform string // "arm" or "x86" for systems
	}{
		{"cell without signature is revision 14", `{"architecture": "arm", "name": "a"}`, false, Revision14, ArchARM, ""},
		{"revision 13 cell needs no architecture", `{"signature": "JHCELL", "revision": 13, "name": "a"}`, false, Revision13, ArchUnknown, ""},
		{"architecture as a number", `{"architecture": 0, "name": "a"}`, false, Revision14, ArchX86, ""},
		{"root_cell makes a system", `{"architecture": "arm64", "root_cell": {"name": "r"}}`, true, Revision14, ArchARM64, "arm"},
		{"revision 12 system with the x86 member", `{"signature": "JHSYST", "revision": 12, "platform_info": {"x86": {"pm_timer_address": "0x408"}}, "root_cell": {"name": "r"}}`, true, Revision12, ArchX86, "x86"},
		{"revision 13 system with the arm member", `{"revision": 13, "platform_info": {"arm": {"gic_version": 2}}, "root_cell": {"name": "r"}}`, true, Revision13, ArchUnknown, "arm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s, err := UnmarshalConfigJSON([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if (s != nil) != tt.system {
				t.Fatalf("system = %v, want %v", s != nil, tt.system)
			}
			rev, arch := Revision(0), Arch(0)
			if s != nil {
				rev, arch = s.Revision, s.Arch
				if tt.platform == "x86" && s.Platform.X86.PMTimerAddress == 0 || tt.platform == "arm" && s.Platform.ARM.GICVersion == 0 && tt.rev != Revision14 {
					t.Errorf("platform member %s not read: %+v", tt.platform, s.Platform)
				}
				if _, err := s.MarshalBinary(); err != nil {
					t.Errorf("MarshalBinary: %v", err)
				}
			} else {
				rev, arch = c.Revision, c.Arch
				if _, err := c.MarshalBinary(); err != nil {
					t.Errorf("MarshalBinary: %v", err)
				}
			}
			if rev != tt.rev || arch != tt.arch {
				t.Errorf("revision %v arch %v, want %v %v", rev, arch, tt.rev, tt.arch)
			}
		})
	}
}

func TestUnmarshalConfigJSONErrors(t *testing.T) {
	const cell = `"architecture": "arm64", "name": "c"`
	const sys = `"architecture": "arm64", "root_cell": {"name": "r"}`
	tests := []struct {
		name   string
		json   string
		err    error
		field  string // exact Field
		detail string // substring of Detail
		line   int    // 0: not checked
	}{
		{"not JSON", "{\n  \"name\": \"a\",\n  oops\n}", ErrInvalidJSON, "", "invalid character", 3},
		{"empty input", "", ErrInvalidJSON, "", "", 0},
		{"not an object", `[1, 2]`, ErrInvalidJSON, "", "want an object", 1},
		{"misspelt key", `{` + cell + `, "mem_region": []}`, ErrInvalidJSON, "", `unknown field "mem_region"`, 0},
		{"data after the object", `{` + cell + `} {}`, ErrInvalidJSON, "", "after top-level value", 1},
		{"wrong JSON type", `{` + cell + `, "mem_regions": {}}`, ErrInvalidJSON, "mem_regions", "want an array", 1},
		{"unknown signature", `{"signature": "JHXXX"}`, ErrBadSignature, "signature", "JHXXX", 0},
		{"old signature with revision 14", `{"signature": "JHCELL", "revision": 14, "name": "c"}`, ErrBadSignature, "signature", `uses "JHCLL"`, 0},
		{"system signature on a cell", `{"signature": "JHCLL", "revision": 14, "architecture": 2, "root_cell": {}}`, ErrInvalidJSON, "", `unknown field "root_cell"`, 0},
		{"old signature without revision", `{"signature": "JHCELL", "name": "c"}`, ErrUnsupportedRevision, "revision", "12 or 13", 0},
		{"revision 11", `{"revision": 11, ` + cell + `}`, ErrUnsupportedRevision, "revision", "11", 0},
		{"revision 14 without architecture", `{"name": "c"}`, ErrArchitecture, "architecture", "required", 0},
		{"unknown architecture", `{"architecture": "riscv", "name": "c"}`, ErrInvalidValue, "architecture", "riscv", 0},
		{"malformed hex", `{` + cell + `, "mem_regions": [{"flags": "0xzz"}]}`, ErrInvalidValue, "mem_regions.flags", `"0xzz" is not an unsigned integer`, 0},
		{"negative number", `{` + cell + `, "vpci_irq_base": -1}`, ErrInvalidValue, "vpci_irq_base", "-1", 0},
		{"fraction", `{` + cell + `, "id": 1.5}`, ErrInvalidValue, "id", "1.5", 0},
		{"64-bit overflow", `{` + cell + `, "cpu_reset_address": "0x10000000000000000"}`, ErrInvalidValue, "cpu_reset_address", "", 0},
		{"u8 overflow names the index", `{` + cell + `, "pci_devices": [{}, {"shmem_dev_id": 256}]}`, ErrInvalidValue, "pci_devices[1].shmem_dev_id", "8 bits", 0},
		{"u32 overflow in the root cell", `{` + sys + `, "debug_console": {"size": "0x100000000"}}`, ErrInvalidValue, "debug_console.size", "32 bits", 0},
		{"flags and names disagree", `{` + cell + `, "mem_regions": [{"flags": "0x3", "flags_names": "READ"}]}`, ErrInvalidValue, "mem_regions[0].flags_names", "make them agree", 0},
		{"unknown flag name", `{` + cell + `, "mem_regions": [{"flags_names": "READ|WRTIE"}]}`, ErrInvalidValue, "mem_regions[0].flags_names", `"WRTIE"`, 0},
		{"unknown enum name", `{` + cell + `, "console": {"type_name": "UART"}}`, ErrInvalidValue, "console.type_name", "UART", 0},
		{"enum and name disagree", `{` + cell + `, "console": {"type": 2, "type_name": "PL011"}}`, ErrInvalidValue, "console.type_name", "agree", 0},
		{"cell flag beyond 32 bits", `{` + cell + `, "flags": "0x100000000"}`, ErrInvalidValue, "flags", "32 bits", 0},
		{"count contradicts the array", `{` + cell + `, "num_memory_regions": 2, "mem_regions": [{}]}`, ErrBadCount, "num_memory_regions", "1 entries", 0},
		{"cpu outside the set", `{` + cell + `, "cpu_set_size": 8, "cpus": [1, 64]}`, ErrBadCount, "cpus[1]", "cpus 0-63", 0},
		{"cpu set not 64-bit words", `{` + cell + `, "cpu_set_size": 4, "cpus": [1]}`, ErrBadCount, "cpu_set_size", "multiple of 8", 0},
		{"cpu set too large to allocate", `{` + cell + `, "cpus": [4000000000]}`, ErrBadCount, "cpus", "at most a page", 0},
		{"cpu listed twice", `{` + cell + `, "cpus": [2, 2]}`, ErrInvalidValue, "cpus[1]", "twice", 0},
		{"five pin_bitmap words", `{` + cell + `, "irqchips": [{"pin_bitmap": [0, 0, 0, 0, 1]}]}`, ErrBadCount, "irqchips[0].pin_bitmap", "4", 0},
		{"seven BAR masks", `{` + cell + `, "pci_devices": [{"bar_mask": [0, 0, 0, 0, 0, 0, 0]}]}`, ErrBadCount, "pci_devices[0].bar_mask", "6 BARs", 0},
		{"msi bit of 2", `{` + cell + `, "pci_devices": [{"msi_64bits": 2}]}`, ErrInvalidValue, "pci_devices.msi_64bits", "", 0},
		{"x86 member on an arm64 system", `{` + sys + `, "platform_info": {"x86": {}}}`, ErrUnusedField, "platform_info.x86", "arm member", 0},
		{"arm member on an x86 system", `{"architecture": "x86", "root_cell": {"name": "r"}, "platform_info": {"arm": {}}}`, ErrUnusedField, "platform_info.arm", "", 0},
		{"nine IOMMU units", `{` + sys + `, "platform_info": {"iommu_units": [{},{},{},{},{},{},{},{},{}]}}`, ErrBadCount, "platform_info.iommu_units", "9 units", 0},
		{"tipvu on an AMD unit", `{` + sys + `, "platform_info": {"iommu_units": [{"type_name": "AMD", "tipvu": {}}]}}`, ErrUnusedField, "platform_info.iommu_units[0].tipvu", "type 1", 0},
		{"amd on a PVU unit", `{` + sys + `, "platform_info": {"iommu_units": [{}, {"type": 4, "amd": {}}]}}`, ErrUnusedField, "platform_info.iommu_units[1].amd", "tipvu", 0},
		{"root cell carries no revision", `{` + sys[:len(sys)-1] + `, "revision": 14}}`, ErrInvalidJSON, "", `unknown field "revision"`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, s, err := UnmarshalConfigJSON([]byte(tt.json))
			var je *JSONError
			if !errors.As(err, &je) {
				t.Fatalf("err = %v (cell %v, system %v), want a *JSONError", err, c, s)
			}
			if !errors.Is(err, tt.err) || je.Field != tt.field || !strings.Contains(je.Detail, tt.detail) ||
				(tt.line != 0 && je.Line != tt.line) {
				t.Errorf("err = %v\n(field %q, line %d); want %v, field %q, detail ∋ %q, line %d",
					err, je.Field, je.Line, tt.err, tt.field, tt.detail, tt.line)
			}
		})
	}
}

func TestJSONRejectsNamesItCannotCarry(t *testing.T) {
	c := qemuARM64InmateDemo()
	c.Name = "bad\xffname"
	if _, err := CellToJSON(c); !errors.Is(err, ErrBadName) {
		t.Errorf("CellToJSON(non-UTF-8 name) = %v, want ErrBadName", err)
	}
	s := qemuARM64System()
	s.RootCell.Name = "\xc3"
	var je *JSONError
	if _, err := SystemToJSON(s); !errors.As(err, &je) || je.Field != "root_cell.name" {
		t.Errorf("SystemToJSON(non-UTF-8 root name) = %v, want root_cell.name", err)
	}
}

// TestJSONIOMMUUnions: units are written up to the last non-empty one, each
// with the union member its type uses, and read back exactly.
func TestJSONIOMMUUnions(t *testing.T) {
	s := qemuARM64System()
	s.Platform.IOMMUUnits[1] = IOMMU{Type: IOMMUPVU, Base: 0x30f80000, Size: 0x1000, PVUTLBBase: 0x36000000, PVUTLBSize: 0x40000}
	s.Platform.IOMMUUnits[3] = IOMMU{Type: IOMMUAMD, Base: 0xfeb80000, Size: 0x80000, AMDBDF: 0x02, AMDBaseCap: 0x40, AMDFeatures: 0x80048f6e}
	text := configToJSON(t, nil, s)
	var doc any
	if err := json.Unmarshal(text, &doc); err != nil {
		t.Fatal(err)
	}
	units := jsonPath(t, doc, "platform_info.iommu_units").([]any)
	if len(units) != 4 {
		t.Fatalf("%d units written, want 4 (up to the last used one)", len(units))
	}
	for path, want := range map[string]any{
		"platform_info.iommu_units.1.type_name":      "PVU",
		"platform_info.iommu_units.1.tipvu.tlb_base": "0x36000000",
		"platform_info.iommu_units.3.amd.features":   "0x80048f6e",
		"platform_info.iommu_units.3.type_name":      "AMD",
	} {
		if got := jsonPath(t, doc, path); got != want {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}
	_, s2, err := UnmarshalConfigJSON(text)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s, s2) {
		t.Errorf("IOMMU units changed:\n got %+v\nwant %+v", s2.Platform.IOMMUUnits, s.Platform.IOMMUUnits)
	}
}
