//go:build !linux

package jailhouse

// Jailhouse runs only under Linux; elsewhere Device exists so that code
// naming it builds, and every method fails with errNoDevice.

import (
	"fmt"
	"io"
	"runtime"
)

// DefaultDevicePath is the misc device of jailhouse.ko.
const DefaultDevicePath = "/dev/jailhouse"

// DeviceOptions configures OpenDevice. The zero value means the real paths.
type DeviceOptions struct {
	Path      string
	SysfsRoot string
}

// Device is a Driver over /dev/jailhouse; it is only usable on Linux.
type Device struct{}

var _ Driver = (*Device)(nil)

var errNoDevice = fmt.Errorf("/dev/jailhouse exists only on linux, not %s: %w", runtime.GOOS, ErrNotLoaded)

// OpenDevice fails with an error wrapping ErrNotLoaded outside Linux.
func OpenDevice(DeviceOptions) (*Device, error) { return nil, errNoDevice }

func (*Device) Close() error                    { return nil }
func (*Device) Enable([]byte) error             { return errNoDevice }
func (*Device) Disable() error                  { return errNoDevice }
func (*Device) CreateCell([]byte) error         { return errNoDevice }
func (*Device) LoadCell(string, ...Image) error { return errNoDevice }
func (*Device) StartCell(string) error          { return errNoDevice }
func (*Device) DestroyCell(string) error        { return errNoDevice }
func (*Device) Enabled() (bool, error)          { return false, errNoDevice }
func (*Device) Cells() ([]CellInfo, error)      { return nil, errNoDevice }
func (*Device) Cell(string) (CellInfo, error)   { return CellInfo{}, errNoDevice }
func (*Device) Statistics(string) (CellStatistics, error) {
	return CellStatistics{}, errNoDevice
}
func (*Device) Pools() (Pools, error)                   { return Pools{}, errNoDevice }
func (*Device) OpenConsole(bool) (io.ReadCloser, error) { return nil, errNoDevice }
