package jailhouse

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpstreamBuilt decodes every .cell under $JAILHOUSE_CELLS (a tree of
// configurations built by Jailhouse's own build, or by gcc + objcopy from
// its configs/*.c as docs/config-format.md describes) and checks that
// re-encoding gives identical bytes. Such files are never committed, so the
// test skips without the variable.
//
// Upstream's configs/arm/emtrion-rzg1{e,h,m}{,-linux-demo}.c declare a
// pci_devices[1] array but leave num_pci_devices commented out, so their
// files end in 56 bytes the header does not count. The driver does not
// mind; DecodeCell and DecodeSystem reject them with ErrSizeMismatch, which
// this test expects.
func TestUpstreamBuilt(t *testing.T) {
	uncountedTrailer := map[string]bool{}
	for _, board := range []string{"emtrion-rzg1e", "emtrion-rzg1h", "emtrion-rzg1m"} {
		uncountedTrailer[board+".cell"] = true
		uncountedTrailer[board+"-linux-demo.cell"] = true
	}
	dir := os.Getenv("JAILHOUSE_CELLS")
	if dir == "" {
		t.Skip("JAILHOUSE_CELLS not set")
	}
	var n int
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".cell") {
			return err
		}
		n++
		rel, _ := filepath.Rel(dir, path)
		t.Run(rel, func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if uncountedTrailer[filepath.Base(path)] {
				_, err := DecodeCell(b)
				if bytes.HasPrefix(b, []byte(sigSystem)) {
					_, err = DecodeSystem(b)
				}
				if !errors.Is(err, ErrSizeMismatch) {
					t.Errorf("got %v, want ErrSizeMismatch for the uncounted pci_devices[1]", err)
				}
				return
			}
			var again []byte
			if bytes.HasPrefix(b, []byte(sigSystem)) {
				s, err := DecodeSystem(b)
				if err != nil {
					t.Fatalf("DecodeSystem: %v", err)
				}
				// In a tree laid out as configs/<arch>/, check the
				// architecture DecodeSystem read or inferred.
				if arch, err := ParseArch(filepath.Base(filepath.Dir(path))); err == nil {
					if s.Revision != Revision14 && arch != ArchX86 {
						arch = ArchUnknown // arm and arm64 share the union member
					}
					if s.Arch != arch {
						t.Errorf("Arch = %v, want %v", s.Arch, arch)
					}
				}
				again, err = s.MarshalBinary()
				if err != nil {
					t.Fatalf("MarshalBinary: %v", err)
				}
			} else {
				c, err := DecodeCell(b)
				if err != nil {
					t.Fatalf("DecodeCell: %v", err)
				}
				again, err = c.MarshalBinary()
				if err != nil {
					t.Fatalf("MarshalBinary: %v", err)
				}
			}
			if !bytes.Equal(again, b) {
				t.Errorf("re-encoding differs at byte %d", firstDiff(again, b))
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no .cell files under %s", dir)
	}
}

// TestUpstreamCheck runs Check over each system configuration under
// $JAILHOUSE_CELLS with the cells named after it (qemu-arm64 with
// qemu-arm64-*.cell) and logs the findings, for comparison with
// `jailhouse config check`.
func TestUpstreamCheck(t *testing.T) {
	dir := os.Getenv("JAILHOUSE_CELLS")
	if dir == "" {
		t.Skip("JAILHOUSE_CELLS not set")
	}
	systems, _ := filepath.Glob(filepath.Join(dir, "*", "*.cell"))
	for _, path := range systems {
		b, err := os.ReadFile(path)
		if err != nil || !bytes.HasPrefix(b, []byte(sigSystem)) {
			continue
		}
		s, err := DecodeSystem(b)
		if err != nil {
			continue
		}
		board := strings.TrimSuffix(filepath.Base(path), ".cell")
		var cells []*Cell
		names, _ := filepath.Glob(filepath.Join(filepath.Dir(path), board+"-*.cell"))
		for _, name := range names {
			b, _ := os.ReadFile(name)
			if c, err := DecodeCell(b); err == nil {
				cells = append(cells, c)
			}
		}
		for _, f := range Check(s, cells...) {
			t.Logf("%s: %v", board, f)
		}
	}
}
