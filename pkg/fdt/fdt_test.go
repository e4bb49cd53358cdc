package fdt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"reflect"
	"testing"
)

func fixture(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/inmate.dtb")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseFixture(t *testing.T) {
	tr, err := Parse(fixture(t))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Version != 17 || tr.LastCompVersion != 16 {
		t.Errorf("version %d/%d, want dtc's 17/16", tr.Version, tr.LastCompVersion)
	}
	if want := []Reservation{{0x40000000, 0x1000}}; !reflect.DeepEqual(tr.Reserved, want) {
		t.Errorf("reservations %v, want %v", tr.Reserved, want)
	}
	if ac, ok := tr.Root.Uint32("#address-cells"); !ok || ac != 2 {
		t.Errorf("/#address-cells = %d, %v; want 2", ac, ok)
	}
	uart := tr.Node("/uart@9000000")
	if uart == nil {
		t.Fatal("no /uart@9000000")
	}
	if v, _ := uart.Property("compatible"); string(v) != "arm,pl011\x00arm,primecell\x00" {
		t.Errorf("uart compatible %q", v)
	}
	if tr.Node("/uart") != uart {
		t.Error("/uart does not find the only uart@…")
	}
	if tr.Node("/cpus/cpu@2") == nil || tr.Node("/nope") != nil || tr.Node("chosen") != nil {
		t.Error("path lookup: want /cpus/cpu@2 found, /nope and a relative path not")
	}
	if v, _ := tr.Node("/chosen").Property("stdout-path"); string(v) != "/uart@9000000\x00" {
		t.Errorf("stdout-path %q", v)
	}
}

// Writing a parsed tree and parsing it again gives the same tree, and the
// written blob says the same thing to dtc as the original.
func TestRoundTrip(t *testing.T) {
	orig := fixture(t)
	tr, err := Parse(orig)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("parse own output: %v", err)
	}
	if !reflect.DeepEqual(tr, again) {
		t.Error("tree changed through MarshalBinary and Parse")
	}
	if len(out) > len(orig) {
		t.Errorf("rewritten blob is %d bytes, the original %d: nothing was added", len(out), len(orig))
	}
	dtc, err := exec.LookPath("dtc")
	if err != nil {
		t.Skip("dtc not installed: skipping the cross-check")
	}
	decompile := func(b []byte) string {
		f := t.TempDir() + "/x.dtb"
		os.WriteFile(f, b, 0o600)
		s, err := exec.Command(dtc, "-q", "-I", "dtb", "-O", "dts", f).Output()
		if err != nil {
			t.Fatalf("dtc: %v", err)
		}
		return string(s)
	}
	if a, b := decompile(orig), decompile(out); a != b {
		t.Errorf("dtc reads our blob differently:\n--- original\n%s\n--- ours\n%s", a, b)
	}
}

func TestEdit(t *testing.T) {
	tr, err := Parse(fixture(t))
	if err != nil {
		t.Fatal(err)
	}
	tr.EnsureNode("/memory").SetProperty("device_type", String("memory"))
	reg, _ := Cells(nil, 0x70000000, 2)
	reg, _ = Cells(reg, 0x8000000, 2)
	tr.Node("/memory").SetProperty("reg", reg)
	tr.Node("/chosen").SetProperty("bootargs", String("console=ttyAMA0"))
	tr.Node("/chosen").SetProperty("stdout-path", String("serial0"))
	out, err := tr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	mem := got.Node("/memory")
	if mem == nil {
		t.Fatal("added /memory is missing")
	}
	if v, _ := mem.Property("reg"); !bytes.Equal(v, []byte{0, 0, 0, 0, 0x70, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0}) {
		t.Errorf("/memory reg % x", v)
	}
	ch := got.Node("/chosen")
	if v, _ := ch.Property("bootargs"); string(v) != "console=ttyAMA0\x00" {
		t.Errorf("bootargs %q", v)
	}
	if v, _ := ch.Property("stdout-path"); string(v) != "serial0\x00" {
		t.Errorf("replaced stdout-path %q", v)
	}
	if n := len(ch.Properties); n != 2 {
		t.Errorf("/chosen has %d properties, want 2 (one replaced, one added)", n)
	}
}

func TestCells(t *testing.T) {
	if _, err := Cells(nil, 1<<32, 1); err == nil {
		t.Error("Cells(1<<32, 1 cell) did not fail")
	}
	if _, err := Cells(nil, 1, 3); err == nil {
		t.Error("Cells(…, 3 cells) did not fail")
	}
	if b, _ := Cells(nil, 0x1234, 1); !bytes.Equal(b, []byte{0, 0, 0x12, 0x34}) {
		t.Errorf("Cells(0x1234, 1) = % x", b)
	}
}

// mutate returns a copy of the fixture with f applied.
func mutate(t *testing.T, f func(b []byte) []byte) []byte {
	b := bytes.Clone(fixture(t))
	return f(b)
}

func put32(b []byte, off int, v uint32) []byte { binary.BigEndian.PutUint32(b[off:], v); return b }

func TestMalformed(t *testing.T) {
	fx := fixture(t)
	offStruct := int(binary.BigEndian.Uint32(fx[8:]))
	offStrings := int(binary.BigEndian.Uint32(fx[12:]))
	tests := []struct {
		name   string
		blob   []byte
		offset int
		err    error
	}{
		{"short header", fx[:39], 0, ErrFormat},
		{"bad magic", mutate(t, func(b []byte) []byte { return put32(b, 0, 0xfeedd00d) }), 0, ErrFormat},
		{"old version", mutate(t, func(b []byte) []byte { return put32(b, 20, 16) }), 20, ErrVersion},
		{"future incompatible", mutate(t, func(b []byte) []byte { return put32(b, 24, 18) }), 20, ErrVersion},
		{"totalsize past the blob", mutate(t, func(b []byte) []byte { return put32(b, 4, uint32(len(b)+1)) }), 4, ErrFormat},
		{"structure block past the blob", mutate(t, func(b []byte) []byte { return put32(b, 36, uint32(len(b))) }), 8, ErrFormat},
		{"strings offset in the header", mutate(t, func(b []byte) []byte { return put32(b, 12, 8) }), 12, ErrFormat},
		{"first token not a node", mutate(t, func(b []byte) []byte { return put32(b, offStruct, tokenProp) }), offStruct, ErrFormat},
		{"unknown token", mutate(t, func(b []byte) []byte { return put32(b, offStruct+8, 0x7) }), offStruct + 8, ErrFormat},
		{"property name offset past strings", mutate(t, func(b []byte) []byte {
			return put32(b, offStruct+16, uint32(offStrings)) // nameoff of the first property
		}), offStruct + 16, ErrFormat},
		{"property size past the block", mutate(t, func(b []byte) []byte { return put32(b, offStruct+12, 1<<20) }), offStruct + 12, ErrFormat},
		{"truncated blob", mutate(t, func(b []byte) []byte { return put32(b[:len(b)-40], 4, uint32(len(b)-40)) }), 12, ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.blob)
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("Parse = %v, want a *FormatError", err)
			}
			if fe.Offset != tt.offset || !errors.Is(err, tt.err) {
				t.Errorf("error %q at offset %d (%v), want offset %d matching %v", err, fe.Offset, fe.Err, tt.offset, tt.err)
			}
		})
	}
	t.Run("nesting bomb", func(t *testing.T) {
		tr := &Tree{Version: 17, LastCompVersion: 16, Root: &Node{}}
		n := tr.Root
		for range maxDepth - 1 {
			c := &Node{Name: "n"}
			n.Children = []*Node{c}
			n = c
		}
		b, err := tr.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(b); err != nil {
			t.Fatalf("%d levels: %v", maxDepth, err)
		}
		n.Children = []*Node{{Name: "deeper"}}
		if _, err := tr.MarshalBinary(); err == nil {
			t.Error("MarshalBinary of a tree nested too deep did not fail")
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add(fixture(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Parse(b)
		if err != nil {
			return
		}
		out, err := tr.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of a parsed tree: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("parse own output: %v", err)
		}
		if !reflect.DeepEqual(tr, again) {
			t.Fatal("round trip changed the tree")
		}
	})
}
