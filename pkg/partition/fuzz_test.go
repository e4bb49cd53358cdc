package partition

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// FuzzParseBootDescription feeds arbitrary bytes to the boot-description
// parser, which reads files from untrusted images: it must never panic,
// every error must be a *BootDescriptionError (InvalidArgument), and an
// accepted description must name an absolute payload without "..".
// Run longer with: go test -fuzz FuzzParseBootDescription ./pkg/partition
func FuzzParseBootDescription(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"os_var":"zephyr","inmate":"/boot/zephyr.bin","starting_vaddress":"0x70000000"}`,
		`{"os_var":"linux","kernel":"/boot/Image","dtb":"/boot/x.dtb","cpio":"/boot/r.cpio","net":"no"}`,
		`{"rpu_req":true,"net":false,"comm_region":"active","memory":512}`,
		`{"starting_vaddress": 18446744073709551615}`,
		`{"inmate": "/boot/../x"}`,
		`{"os_var": "zephyr",}`,
		`[1,2]`,
		`{} {}`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseBootDescription("/boot/config.json", data)
		if err != nil {
			var be *BootDescriptionError
			if !errors.As(err, &be) || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v (%T) is not an InvalidArgument *BootDescriptionError", err, err)
			}
			return
		}
		for _, p := range d.paths() {
			if !strings.HasPrefix(*p.value, "/") || strings.Contains("/"+*p.value+"/", "/../") {
				t.Fatalf("accepted %s = %q", p.key, *p.value)
			}
		}
		if d.Inmate == "" {
			t.Fatal("accepted a description without an inmate")
		}
	})
}
