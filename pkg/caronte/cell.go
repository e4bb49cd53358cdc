package caronte

import (
	"context"
	"io"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// Cell is what caronte needs from a partition. The shim adapts a
// *partition.Partition to it.
//
// Implementations must be safe for concurrent use: the watcher calls State
// while Kill calls Shutdown or Destroy.
type Cell interface {
	// Start starts the inmate (CELL_START).
	Start(ctx context.Context) error
	// State reports the cell's state. It is called every PollInterval, so it
	// must be cheap (a cached value or one sysfs read). An error wrapping
	// jailhouse.ErrCellNotFound means the cell no longer exists; any other
	// error is taken as transient.
	State() (jailhouse.CellState, error)
	// Shutdown asks the inmate to stop (CELL_LOAD with no images). The inmate
	// may refuse (an error wrapping EPERM).
	Shutdown(ctx context.Context) error
	// Destroy destroys the cell (CELL_DESTROY). It is idempotent: destroying
	// a cell that is already gone returns nil.
	Destroy(ctx context.Context) error
	// Console returns the cell's console output, or (nil, nil) if the cell
	// has none. Caronte calls it once, before Start, so that nothing the
	// inmate prints while booting is lost. Read blocks until output arrives
	// (Options.ConsoleMode says otherwise for the hypervisor's ring); Close
	// must make a pending Read return. If the stream also implements
	// io.Writer the console is bidirectional: caronte copies the task's
	// stdin into it.
	Console() (io.ReadCloser, error)
}
