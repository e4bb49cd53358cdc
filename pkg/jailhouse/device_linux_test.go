//go:build linux

package jailhouse

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cellConfigWithName returns the first bytes of a revision-14 cell config
// with the given 32-byte name field.
func cellConfigWithName(field string) []byte {
	b := make([]byte, 132)
	copy(b, "JHCLL\x02\x0e\x00")
	copy(b[8:40], field)
	return b
}

func TestCellConfigName(t *testing.T) {
	tests := []struct {
		name    string
		config  []byte
		want    string
		wantErr string
	}{
		{"NUL-terminated name", cellConfigWithName("linux-demo"), "linux-demo", ""},
		{"31 bytes without NUL", cellConfigWithName(strings.Repeat("n", 31)), strings.Repeat("n", 31), ""},
		{"byte 31 is forced to NUL like the driver does", cellConfigWithName(strings.Repeat("n", 32)), strings.Repeat("n", 31), ""},
		{"revision 12 layout has the name at the same offset", append([]byte("JHCELL\x0c\x00inmate\x00"), make([]byte, 40)...), "inmate", ""},
		{"empty name", cellConfigWithName(""), "", "empty cell name"},
		{"too short for a name", []byte("JHCLL\x02\x0e\x00abc"), "", "ends before the name field"},
		{"empty config", nil, "", "ends before the name field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cellConfigName(tt.config)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("cellConfigName = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("cellConfigName = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestVerifyCreated(t *testing.T) {
	root := sampleTree(t) // has "linux" (id 10)
	tests := []struct {
		name          string
		cell          string
		existedBefore bool
		wantErr       error
	}{
		{"new cell is in sysfs", "linux", false, nil},
		{"arch mismatch: driver returned 0, no cell", "arm-cell", false, ErrCellNotCreated},
		{"cell of that name existed before", "linux", true, ErrCellNotCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verifyCreated(root, tt.cell, tt.existedBefore)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("verifyCreated = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestOpenDeviceNotLoaded(t *testing.T) {
	_, err := OpenDevice(DeviceOptions{Path: filepath.Join(t.TempDir(), "jailhouse")})
	if !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("OpenDevice(missing node) = %v, want ErrNotLoaded", err)
	}
}

// TestRequestsReachTheDevice issues every request to /dev/null, which
// rejects unknown ioctls with ENOTTY: the error must name the request and
// cell and keep the errno.
func TestRequestsReachTheDevice(t *testing.T) {
	root := sampleTree(t)
	d, err := OpenDevice(DeviceOptions{Path: os.DevNull, SysfsRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sysConfig := make([]byte, 600)
	copy(sysConfig, "JHSYS\x02\x0e\x00")
	tests := []struct {
		name    string
		call    func() error
		request string
		cell    string
	}{
		{"enable", func() error { return d.Enable(sysConfig) }, RequestEnable, ""},
		{"disable", d.Disable, RequestDisable, ""},
		{"create", func() error { return d.CreateCell(cellConfigWithName("demo")) }, RequestCellCreate, "demo"},
		{"load with images", func() error {
			return d.LoadCell("demo", Image{Data: []byte("kernel"), Target: 0x1000}, Image{Target: 0x2000})
		}, RequestCellLoad, "demo"},
		{"shutdown", func() error { return d.LoadCell("demo") }, RequestCellLoad, "demo"},
		{"start", func() error { return d.StartCell("demo") }, RequestCellStart, "demo"},
		{"destroy", func() error { return d.DestroyCell("demo") }, RequestCellDestroy, "demo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var ie *IoctlError
			if !errors.As(err, &ie) {
				t.Fatalf("got %v, want an *IoctlError", err)
			}
			if ie.Request != tt.request || ie.Cell != tt.cell || !errors.Is(err, unix.ENOTTY) {
				t.Errorf("got %+v (%v), want request %s, cell %q, ENOTTY", ie, err, tt.request, tt.cell)
			}
		})
	}
}

func TestDeviceRejectsBeforeTheDriver(t *testing.T) {
	d, err := OpenDevice(DeviceOptions{Path: os.DevNull, SysfsRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		call    func() error
		wantErr string
	}{
		{"short system config", func() error { return d.Enable(make([]byte, 100)) }, "shorter than the 488-byte header"},
		{"name too long to address", func() error { return d.StartCell(strings.Repeat("x", 32)) }, "longer than the 31"},
		{"name with NUL", func() error { return d.DestroyCell("a\x00b") }, "NUL"},
		{"load of an unnamed cell", func() error { return d.LoadCell("") }, "empty cell name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var ie *IoctlError
			if err == nil || errors.As(err, &ie) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error before the ioctl containing %q", err, tt.wantErr)
			}
		})
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.StartCell("demo"); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("StartCell after Close = %v, want fs.ErrClosed", err)
	}
}

func socketPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fds[0], fds[1]
}

// TestConsoleReaderNonBlocking uses a socket as a stand-in for the device:
// data is returned as read, and a read of 0 bytes is io.EOF.
func TestConsoleReaderNonBlocking(t *testing.T) {
	r, w := socketPair(t)
	if _, err := unix.Write(w, []byte("Started cell \"demo\"\n")); err != nil {
		t.Fatal(err)
	}
	unix.Close(w)
	c := newConsoleReader(r, false)
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "Started cell \"demo\"\n" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
}

func TestConsoleReaderErrno(t *testing.T) {
	// An empty non-blocking socket fails with EAGAIN, as the device does
	// while Jailhouse is disabled.
	r, w := socketPair(t)
	defer unix.Close(w)
	if err := unix.SetNonblock(r, true); err != nil {
		t.Fatal(err)
	}
	c := newConsoleReader(r, false)
	defer c.Close()
	_, err := c.Read(make([]byte, 64))
	var ie *IoctlError
	if !errors.As(err, &ie) || ie.Request != RequestConsoleRead || !errors.Is(err, unix.EAGAIN) ||
		!strings.Contains(err.Error(), "not enabled") {
		t.Fatalf("Read = %v, want an EAGAIN IoctlError saying jailhouse is not enabled", err)
	}
}

// TestConsoleReaderCloseInterruptsFollow checks that Close wakes a Read that
// waits in the kernel. A socket with a receive timeout stands in for the
// device: like the driver, it returns EINTR to a signalled reader instead of
// restarting the read.
func TestConsoleReaderCloseInterruptsFollow(t *testing.T) {
	r, w := socketPair(t)
	defer unix.Close(w)
	if err := unix.SetsockoptTimeval(r, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 30}); err != nil {
		t.Fatal(err)
	}
	c := newConsoleReader(r, true)

	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := c.Read(make([]byte, 64))
		done <- result{n, err}
	}()
	time.Sleep(100 * time.Millisecond) // let the Read block
	select {
	case res := <-done:
		t.Fatalf("Read returned %d, %v before Close", res.n, res.err)
	default:
	}

	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case res := <-done:
		if res.n != 0 || res.err != io.EOF {
			t.Errorf("Read after Close = %d, %v; want 0, io.EOF", res.n, res.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt the waiting Read")
	}
	if err := <-closed; err != nil {
		t.Errorf("Close = %v", err)
	}
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("Read on a closed console = %d, %v; want 0, io.EOF", n, err)
	}
}

// TestRealDevice runs only where jailhouse.ko is loaded; it changes nothing.
func TestRealDevice(t *testing.T) {
	if _, err := os.Stat(DefaultDevicePath); err != nil {
		t.Skipf("no %s: %v", DefaultDevicePath, err)
	}
	d, err := OpenDevice(DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	enabled, err := d.Enabled()
	if err != nil {
		t.Fatal(err)
	}
	cells, err := d.Cells()
	if err != nil {
		t.Fatal(err)
	}
	if enabled && (len(cells) == 0 || cells[0].ID != 0) {
		t.Errorf("enabled, but the root cell is not listed first: %+v", cells)
	}
	if !enabled && len(cells) != 0 {
		t.Errorf("disabled, but cells are listed: %+v", cells)
	}
	con, err := d.OpenConsole(false)
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	_, err = io.Copy(io.Discard, con)
	var ie *IoctlError
	switch {
	case err == nil:
	case errors.As(err, &ie) && ie.Errno == unix.EAGAIN && !enabled:
	case errors.As(err, &ie) && ie.Errno == unix.EPERM:
	default:
		t.Errorf("reading the console: %v", err)
	}
}
