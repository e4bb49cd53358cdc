package partition

import "testing"

// Sizes appear in the errors users read ("at most 64 MiB fit there"), so
// they must be exact and grammatical.
func TestFormatSize(t *testing.T) {
	for _, c := range []struct {
		n    uint64
		want string
	}{
		{0, "0 bytes"},
		{1, "1 byte"},
		{2, "2 bytes"},
		{4097, "4097 bytes"},
		{4096, "4 KiB"},
		{120 << 10, "120 KiB"},
		{64 << 20, "64 MiB"},
		{(1 << 20) + 1024, "1025 KiB"},
		{3 << 30, "3 GiB"},
	} {
		if got := formatSize(c.n); got != c.want {
			t.Errorf("formatSize(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}
