package jailhouse

import (
	"bytes"
	"encoding/json"
	"errors"
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
// re-encodes to exactly the input, directly and through the JSON form
// (runphi config inspect --json | encode).
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
		j, err := CellToJSON(c)
		if errors.Is(err, ErrBadName) {
			return // a name that is not UTF-8 has no JSON form
		}
		checkJSONRoundTrip(t, j, err, b)
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
		j, err := SystemToJSON(s)
		if errors.Is(err, ErrBadName) {
			return
		}
		checkJSONRoundTrip(t, j, err, b)
	})
}

// checkJSONRoundTrip requires the JSON form j (made with error err) of the
// configuration b to read back and encode to b.
func checkJSONRoundTrip(t *testing.T, j any, err error, b []byte) {
	t.Helper()
	if err != nil {
		t.Fatalf("no JSON form: %v", err)
	}
	text, err := json.Marshal(j)
	if err != nil {
		t.Fatalf("marshal JSON form: %v", err)
	}
	c, s, err := UnmarshalConfigJSON(text)
	if err != nil {
		t.Fatalf("JSON form does not read back: %v\n%s", err, text)
	}
	var again []byte
	if c != nil {
		again, err = c.MarshalBinary()
	} else {
		again, err = s.MarshalBinary()
	}
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("encoding the JSON form: %v; differs at byte %d", err, firstDiff(again, b))
	}
}

// FuzzUnmarshalConfigJSON: the JSON reader never panics, and a JSON
// configuration that encodes gives a file whose own JSON form encodes to
// the same bytes (encode is a function of the configuration, not of how
// its JSON was spelt).
func FuzzUnmarshalConfigJSON(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "rev*", "*.cell"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		c, s, err := decodeAny(b)
		if err != nil {
			f.Fatal(err)
		}
		var j any
		if c != nil {
			j, err = CellToJSON(c)
		} else {
			j, err = SystemToJSON(s)
		}
		if err != nil {
			f.Fatal(err)
		}
		text, err := json.Marshal(j)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(text)
	}
	f.Add([]byte(inmateDemoJSON))
	f.Fuzz(func(t *testing.T, text []byte) {
		c, s, err := UnmarshalConfigJSON(text)
		if err != nil {
			var je *JSONError
			if !errors.As(err, &je) {
				t.Fatalf("error is not a *JSONError: %v", err)
			}
			return
		}
		var b []byte
		if c != nil {
			b, err = c.MarshalBinary()
		} else {
			b, err = s.MarshalBinary()
		}
		if err != nil {
			return // the codec's own checks (name length, …)
		}
		c2, s2, err := decodeAny(b)
		if err != nil {
			t.Fatalf("encoded JSON configuration does not decode: %v", err)
		}
		var j any
		if c2 != nil {
			j, err = CellToJSON(c2)
		} else {
			j, err = SystemToJSON(s2)
		}
		if errors.Is(err, ErrBadName) {
			return
		}
		checkJSONRoundTrip(t, j, err, b)
	})
}
