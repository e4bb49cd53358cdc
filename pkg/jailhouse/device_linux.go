//go:build linux

package jailhouse

// Device drives the real jailhouse.ko through /dev/jailhouse (jailhouse-abi
// §1) and reads its sysfs tree (§4). It does what the jailhouse CLI does,
// one ioctl per Driver method, with two additions the CLI lacks: it retries
// EINTR, and it checks after CELL_CREATE that the cell exists.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse/internal/abi"
)

// DefaultDevicePath is the misc device of jailhouse.ko.
const DefaultDevicePath = "/dev/jailhouse"

// DeviceOptions configures OpenDevice. The zero value means the real paths.
type DeviceOptions struct {
	// Path is the device node; empty means DefaultDevicePath.
	Path string
	// SysfsRoot is the driver's sysfs directory; empty means
	// DefaultSysfsRoot.
	SysfsRoot string
}

// Device is a Driver over /dev/jailhouse. Its methods may be called
// concurrently: the driver serialises requests with a mutex of its own.
type Device struct {
	path      string
	sysfsRoot string

	// mu guards fd against Close: requests hold it for reading while they
	// use fd, Close holds it for writing, so the descriptor number is never
	// reused under a request in flight.
	mu sync.RWMutex
	fd int // -1 once closed
}

var _ Driver = (*Device)(nil)

// OpenDevice opens the device node for the ioctls. It returns an error
// wrapping ErrNotLoaded when the node does not exist (jailhouse.ko is not
// loaded). The node is root-only by default and the driver has no other
// access control.
func OpenDevice(opts DeviceOptions) (*Device, error) {
	d := &Device{path: opts.Path, sysfsRoot: opts.SysfsRoot}
	if d.path == "" {
		d.path = DefaultDevicePath
	}
	if d.sysfsRoot == "" {
		d.sysfsRoot = DefaultSysfsRoot
	}
	fd, err := openNode(d.path, unix.O_RDWR)
	if err != nil {
		return nil, err
	}
	d.fd = fd
	return d, nil
}

func openNode(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOENT):
			return -1, fmt.Errorf("open %s: %w (is jailhouse.ko loaded?)", path, ErrNotLoaded)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return -1, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (the node is root-only by default)", err)}
		}
		return -1, &fs.PathError{Op: "open", Path: path, Err: err}
	}
}

// Close releases the device once the requests in flight have returned.
// Requests after Close fail with fs.ErrClosed. Consoles opened with
// OpenConsole have descriptors of their own and stay open.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return &fs.PathError{Op: "close", Path: d.path, Err: err}
	}
	return nil
}

// ioctl issues one request with arg as its argument. A pointer argument
// must point to pinned memory (see pinBytes).
//
// EINTR is retried: every request first takes the driver's mutex with
// mutex_lock_interruptible, and the Go runtime signals threads for
// preemption, so EINTR arrives without anyone asking for it. The driver
// undoes a failed request, so repeating it is safe.
func (d *Device) ioctl(req abi.Request, cell string, arg uintptr) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.fd < 0 {
		return fmt.Errorf("%s: %s: %w", req, d.path, fs.ErrClosed)
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), uintptr(req.Number()), arg)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return &IoctlError{Request: req.String(), Cell: cell, Errno: errno}
	}
}

// pinBytes pins the first byte of b, and with it the whole backing array,
// and returns its address. The address goes into an argument struct as an
// integer, which the unsafe.Pointer rules of syscall.Syscall do not cover,
// so the memory must be pinned until the ioctl returns. b must not be empty.
func pinBytes(p *runtime.Pinner, b []byte) uint64 {
	p.Pin(&b[0])
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// Enable hands systemConfig to the hypervisor (JAILHOUSE_ENABLE). The driver
// reads the 488-byte jailhouse_system header first and then as many bytes
// as the header's counts say; callers should validate the blob with
// DecodeSystem, because the driver trusts those counts.
func (d *Device) Enable(systemConfig []byte) error {
	if len(systemConfig) < systemSize {
		return fmt.Errorf("%s: system config of %d bytes is shorter than the %d-byte header the driver reads",
			abi.Enable, len(systemConfig), systemSize)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	return d.ioctl(abi.Enable, "", uintptr(pinBytes(&pin, systemConfig)))
}

// Disable destroys every cell and shuts the hypervisor down
// (JAILHOUSE_DISABLE).
func (d *Device) Disable() error {
	return d.ioctl(abi.Disable, "", 0)
}

// CreateCell creates a cell from a binary cell config (JAILHOUSE_CELL_CREATE)
// and verifies in sysfs that a cell of the config's name exists afterwards:
// the driver returns 0 without creating anything when the config's
// architecture differs from the hypervisor's. That case fails with
// ErrCellNotCreated.
func (d *Device) CreateCell(config []byte) error {
	name, err := cellConfigName(config)
	if err != nil {
		return fmt.Errorf("%s: %w", abi.CellCreate, err)
	}
	// A cell of that name that exists already would hide a silent no-op
	// behind a successful lookup. Such a create normally fails with
	// EEXIST, so a 0 return then means nothing was created.
	_, lookupErr := ReadCell(d.sysfsRoot, name)
	existedBefore := lookupErr == nil

	var pin runtime.Pinner
	defer pin.Unpin()
	arg, err := abi.EncodeCellCreate(pinBytes(&pin, config), len(config))
	if err != nil {
		return fmt.Errorf("%s of cell %q: %w", abi.CellCreate, name, err)
	}
	if err := d.ioctl(abi.CellCreate, name, uintptr(pinBytes(&pin, arg))); err != nil {
		return err
	}

	return verifyCreated(d.sysfsRoot, name, existedBefore)
}

// verifyCreated checks after a successful CELL_CREATE that the cell exists
// and did not exist before.
func verifyCreated(sysfsRoot, name string, existedBefore bool) error {
	_, err := ReadCell(sysfsRoot, name)
	switch {
	case errors.Is(err, ErrCellNotFound):
		return fmt.Errorf("%s of cell %q: no cell of that name in %s: %w",
			abi.CellCreate, name, sysfsRoot, ErrCellNotCreated)
	case err != nil:
		return fmt.Errorf("%s of cell %q: verify in sysfs: %w", abi.CellCreate, name, err)
	case existedBefore:
		return fmt.Errorf("%s of cell %q: the driver returned 0 although a cell of that name existed before: %w",
			abi.CellCreate, name, ErrCellNotCreated)
	}
	return nil
}

// cellConfigName returns the name field of a cell config. It sits at bytes
// 8–39 in revisions 12 to 14 alike (after the 6-byte signature, or 5 bytes
// plus the architecture, and the u16 revision); the driver forces byte 31 to
// NUL, and so does this.
func cellConfigName(config []byte) (string, error) {
	const nameOff, nameLen = 8, 32
	if len(config) < nameOff+nameLen {
		return "", fmt.Errorf("cell config of %d bytes ends before the name field (bytes %d-%d)",
			len(config), nameOff, nameOff+nameLen-1)
	}
	field := config[nameOff : nameOff+nameLen-1]
	for i, c := range field {
		if c == 0 {
			field = field[:i]
			break
		}
	}
	if err := abi.CheckCellName(string(field)); err != nil {
		return "", fmt.Errorf("cell config name field at offset %d: %w", nameOff, err)
	}
	return string(field), nil
}

// LoadCell makes the cell loadable and copies the images into it
// (JAILHOUSE_CELL_LOAD); with no images it is "cell shutdown". Images with
// no data are passed with size 0, which the driver skips.
func (d *Device) LoadCell(name string, images ...Image) error {
	var pin runtime.Pinner
	defer pin.Unpin()
	pre := make([]abi.PreloadImage, len(images))
	for i, img := range images {
		pre[i] = abi.PreloadImage{Size: uint64(len(img.Data)), TargetAddress: img.Target}
		if len(img.Data) > 0 {
			pre[i].SourceAddress = pinBytes(&pin, img.Data)
		}
	}
	arg, err := abi.EncodeCellLoad(name, pre)
	if err != nil {
		return fmt.Errorf("%s of cell %q: %w", abi.CellLoad, name, err)
	}
	return d.ioctl(abi.CellLoad, name, uintptr(pinBytes(&pin, arg)))
}

// StartCell starts or restarts the cell (JAILHOUSE_CELL_START).
func (d *Device) StartCell(name string) error {
	return d.cellRequest(abi.CellStart, name)
}

// DestroyCell destroys the cell (JAILHOUSE_CELL_DESTROY).
func (d *Device) DestroyCell(name string) error {
	return d.cellRequest(abi.CellDestroy, name)
}

func (d *Device) cellRequest(req abi.Request, name string) error {
	arg, err := abi.EncodeCellID(name)
	if err != nil {
		return fmt.Errorf("%s of cell %q: %w", req, name, err)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	return d.ioctl(req, name, uintptr(pinBytes(&pin, arg)))
}

// Enabled reports <sysfs>/enabled.
func (d *Device) Enabled() (bool, error) { return ReadEnabled(d.sysfsRoot) }

// Cells lists the cells in sysfs, ordered by id.
func (d *Device) Cells() ([]CellInfo, error) { return ReadCells(d.sysfsRoot) }

// Cell returns the sysfs view of the cell named name.
func (d *Device) Cell(name string) (CellInfo, error) { return ReadCell(d.sysfsRoot, name) }

// Statistics returns the counters of the cell named name.
func (d *Device) Statistics(name string) (CellStatistics, error) {
	info, err := ReadCell(d.sysfsRoot, name)
	if err != nil {
		return CellStatistics{}, err
	}
	return ReadStatistics(d.sysfsRoot, info.ID)
}

// Pools returns the hypervisor's page pool usage from sysfs.
func (d *Device) Pools() (Pools, error) { return ReadPools(d.sysfsRoot) }

// OpenConsole opens the hypervisor console ring on a descriptor of its own
// (the driver keeps one read position per open file, starting at the
// oldest byte still in the ring).
//
// With follow=false a Read returns io.EOF when no new data is there, and an
// *IoctlError with EAGAIN when Jailhouse is not enabled. With follow=true a
// Read waits for data, across disable and re-enable. Either way a Read
// fails with an *IoctlError with EPERM when the system config lacks the
// virtual debug console flag, and returns io.EOF after Close; Close
// interrupts a waiting Read.
//
// When the reader falls more than 2048 bytes behind, a Read returns the
// line "<missed N bytes of console log>\n" (see ParseMissedLine), cut to the
// buffer's size; use buffers of at least 64 bytes to get it whole.
func (d *Device) OpenConsole(follow bool) (io.ReadCloser, error) {
	flags := unix.O_RDONLY
	if !follow {
		flags |= unix.O_NONBLOCK
	}
	fd, err := openNode(d.path, flags)
	if err != nil {
		return nil, err
	}
	return newConsoleReader(fd, follow), nil
}

// consoleReader reads the ring through its own descriptor.
//
// A waiting read sits in the driver, which polls every 100 ms and returns
// EINTR when a signal is pending, and closing the descriptor does not wake
// it. So each Read runs on a locked OS thread and Close signals that thread
// (SIGURG, which the Go runtime already uses for preemption and otherwise
// ignores) until the Read has returned; only then is the descriptor closed,
// so its number cannot be reused under a read in flight.
type consoleReader struct {
	fd     int
	follow bool

	readMu sync.Mutex // serialises Read

	mu      sync.Mutex // guards the fields below
	closed  bool
	tid     int           // thread of the Read in flight
	readEnd chan struct{} // closed when the Read in flight returns; nil if none
}

func newConsoleReader(fd int, follow bool) *consoleReader {
	return &consoleReader{fd: fd, follow: follow}
}

func (c *consoleReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, io.EOF
	}
	c.tid = unix.Gettid()
	end := make(chan struct{})
	c.readEnd = end
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.readEnd = nil
		c.mu.Unlock()
		close(end)
	}()

	for {
		n, err := unix.Read(c.fd, p)
		switch {
		case err == nil && n > 0:
			return n, nil
		case err == nil:
			// Only a non-blocking read returns 0: nothing new.
			return 0, io.EOF
		case errors.Is(err, unix.EINTR):
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				return 0, io.EOF
			}
			continue
		}
		var errno unix.Errno
		if errors.As(err, &errno) {
			return 0, &IoctlError{Request: RequestConsoleRead, Errno: errno}
		}
		return 0, err
	}
}

// interruptEvery is how often Close signals a waiting Read; the driver
// looks for signals every 100 ms.
const interruptEvery = 20 * time.Millisecond

func (c *consoleReader) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	for c.readEnd != nil {
		tid, end := c.tid, c.readEnd
		c.mu.Unlock()
		// ESRCH only means the Read returned meanwhile.
		_ = unix.Tgkill(unix.Getpid(), tid, unix.SIGURG)
		select {
		case <-end:
		case <-time.After(interruptEvery):
		}
		c.mu.Lock()
	}
	c.mu.Unlock()
	return unix.Close(c.fd)
}
