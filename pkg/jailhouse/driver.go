package jailhouse

import (
	"errors"
	"fmt"
	"io"
)

// Driver drives cells the way the jailhouse CLI does, one call per driver
// request. Cells are always addressed by name (id -1), because ids are the
// lowest free integer and are reused after a destroy.
//
// Errors from driver requests keep their errno: errors.Is(err, unix.EBUSY)
// works on the error of every method.
type Driver interface {
	// Enable hands the system configuration blob to the hypervisor (JAILHOUSE_ENABLE).
	Enable(systemConfig []byte) error
	// Disable destroys every non-root cell and shuts the hypervisor down (JAILHOUSE_DISABLE).
	Disable() error
	// CreateCell creates a cell from a binary cell configuration (JAILHOUSE_CELL_CREATE).
	// It returns nil only if the cell exists afterwards: the real driver returns 0
	// without creating anything on an architecture mismatch.
	CreateCell(config []byte) error
	// LoadCell makes the cell loadable and copies images into it (JAILHOUSE_CELL_LOAD).
	// With no images it is "cell shutdown".
	LoadCell(name string, images ...Image) error
	// StartCell starts (or restarts) the cell at its cpu_reset_address (JAILHOUSE_CELL_START).
	StartCell(name string) error
	// DestroyCell destroys the cell and gives its resources back to the root cell
	// (JAILHOUSE_CELL_DESTROY).
	DestroyCell(name string) error

	// Enabled reports /sys/devices/jailhouse/enabled.
	Enabled() (bool, error)
	// Cells lists the cells in sysfs, root cell (id 0) included, ordered by id.
	Cells() ([]CellInfo, error)
	// Cell returns the sysfs view of one cell; ErrCellNotFound if there is none.
	Cell(name string) (CellInfo, error)

	// OpenConsole opens the hypervisor's virtual console ring with the read
	// semantics of /dev/jailhouse: with follow=false a read returns 0 bytes
	// (io.EOF) when no new data is there.
	OpenConsole(follow bool) (io.ReadCloser, error)
}

// CellConsoler is implemented by drivers that can give one cell's console
// output as its own stream (the simulator models an ivshmem console this way).
// The reader blocks until output arrives, and returns io.EOF once the cell is
// destroyed and everything it wrote has been read, or after Close. If the
// stream also implements io.Writer, the console takes input: bytes written
// reach the inmate (docs/console.md).
type CellConsoler interface {
	OpenCellConsole(name string) (io.ReadCloser, error)
}

// Image is one preload image of a CELL_LOAD request.
type Image struct {
	Data   []byte
	Target uint64 // cell guest-physical load address
}

// CellInfo is what sysfs says about one cell.
type CellInfo struct {
	ID         int
	Name       string
	State      CellState
	CPUs       []int // cpus_assigned_list
	FailedCPUs []int // cpus_failed_list
}

// CellState is the cell state of the communication region (jailhouse-abi §3.1).
type CellState int

// Cell states, with the codes of the hypervisor.
const (
	StateRunning       CellState = 0
	StateRunningLocked CellState = 1
	StateShutDown      CellState = 2
	StateFailed        CellState = 3
	StateFailedCommRev CellState = 4
	StateInvalid       CellState = -1
)

var cellStateText = map[CellState]string{
	StateRunning:       "running",
	StateRunningLocked: "running/locked",
	StateShutDown:      "shut down",
	StateFailed:        "failed",
	StateFailedCommRev: "Comm ABI mismatch",
	StateInvalid:       "invalid",
}

// String returns the text sysfs uses for the state.
func (s CellState) String() string {
	if t, ok := cellStateText[s]; ok {
		return t
	}
	return "invalid"
}

// Terminal reports whether the inmate has stopped running on its own.
func (s CellState) Terminal() bool {
	return s == StateShutDown || s == StateFailed || s == StateFailedCommRev
}

// ParseCellState parses the text of a cells/<id>/state file (with or without
// the trailing newline).
func ParseCellState(text string) (CellState, error) {
	if n := len(text); n > 0 && text[n-1] == '\n' {
		text = text[:n-1]
	}
	for s, t := range cellStateText {
		if t == text {
			return s, nil
		}
	}
	return StateInvalid, fmt.Errorf("unknown cell state %q", text)
}

// Errors returned by Driver implementations besides errno-carrying errors.
var (
	// ErrCellNotFound means no cell of that name exists in sysfs.
	ErrCellNotFound = errors.New("cell not found")
	// ErrNotLoaded means the jailhouse module (or the simulator) is not there.
	ErrNotLoaded = errors.New("jailhouse driver not loaded")
)
