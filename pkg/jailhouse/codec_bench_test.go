package jailhouse

import (
	"os"
	"path/filepath"
	"testing"
)

// The codec's share of a partition's start (issue 8, P3; numbers in
// docs/performance.md): decoding and encoding the cell configuration the
// shim generates and keeps in the ledger, and the checks it runs before
// CELL_CREATE. Inputs are upstream's qemu-arm64 root cell and inmate demo,
// the same shape as what runphi generates for that board.

func readGolden(b *testing.B, name string) []byte {
	b.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "golden", "rev14", name))
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func BenchmarkDecodeCell(b *testing.B) {
	data := readGolden(b, "qemu-arm64-inmate-demo.cell")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := DecodeCell(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeCell(b *testing.B) {
	c, err := DecodeCell(readGolden(b, "qemu-arm64-inmate-demo.cell"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeSystem(b *testing.B) {
	data := readGolden(b, "qemu-arm64.cell")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := DecodeSystem(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeSystem(b *testing.B) {
	s, err := DecodeSystem(readGolden(b, "qemu-arm64.cell"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheck is `jailhouse config check` (`runphi config check`) of
// upstream's qemu-arm64 system and its inmate demo. The shim checks a new
// cell with CheckCell instead (partition's BenchmarkGenerateCheckEncode).
func BenchmarkCheck(b *testing.B) {
	s, err := DecodeSystem(readGolden(b, "qemu-arm64.cell"))
	if err != nil {
		b.Fatal(err)
	}
	c, err := DecodeCell(readGolden(b, "qemu-arm64-inmate-demo.cell"))
	if err != nil {
		b.Fatal(err)
	}
	if f := Check(s, c); HasErrors(f) {
		b.Fatalf("the golden pair does not pass the checks: %v", f)
	}
	b.ReportAllocs()
	for b.Loop() {
		Check(s, c)
	}
}
