package jailhouse

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// addGoldenSeeds seeds a fuzz target with every committed golden file;
// testdata/fuzz/<target>/ adds damaged variants in go's corpus format.
func addGoldenSeeds(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "rev*", "*.cell"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzDecodeCell: DecodeCell never panics, and whatever it accepts
// re-encodes to exactly the input.
func FuzzDecodeCell(f *testing.F) {
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCell(b)
		if err != nil {
			return
		}
		again, err := c.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded cell does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs at byte %d", firstDiff(again, b))
		}
	})
}

// FuzzDecodeSystem: the same for DecodeSystem, including the architecture
// inference of revisions 12 and 13.
func FuzzDecodeSystem(f *testing.F) {
	addGoldenSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSystem(b)
		if err != nil {
			return
		}
		again, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded system does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs at byte %d", firstDiff(again, b))
		}
	})
}
