package partition

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// Options are the inputs of Create. Every field is required.
type Options struct {
	// ID and Namespace identify the container; the ledger owner is
	// "<Namespace>/<ID>".
	ID, Namespace string
	// Rootfs is the host path of the mounted rootfs.
	Rootfs string
	// Spec is the container's OCI spec (nil means no resource limits).
	Spec *specs.Spec
	// Board is the board profile of this node.
	Board *Board
	// Driver drives the hypervisor (the device or the simulator).
	Driver jailhouse.Driver
	// Ledger is the node-wide resource ledger.
	Ledger *Ledger
}

// Partition is a cell created for one container. Its methods are safe for
// concurrent use.
type Partition struct {
	owner    string
	driver   jailhouse.Driver
	ledger   *Ledger
	alloc    Allocation
	cell     *jailhouse.Cell
	loadAddr uint64
	console  consoleChoice

	// destroyMu serialises Destroy; it guards destroyed.
	destroyMu sync.Mutex
	// destroyed is set once the cell is gone and the ledger entry released,
	// so a repeated Destroy cannot touch a later cell that reuses the name.
	destroyed bool
}

// Record is what a later process needs to destroy a partition whose shim
// died: JSON-serialisable, written next to the task's state.
type Record struct {
	// Owner is the ledger owner, "<namespace>/<container id>".
	Owner string `json:"owner"`
	// Cell is the Jailhouse cell name.
	Cell string `json:"cell"`
	// Ledger is the path of the ledger file.
	Ledger string `json:"ledger"`
}

// Create turns a container into a loaded, not yet started partition: read
// the boot description, compute the request, allocate, plan, encode, create
// the cell and load the payload. Any failure undoes every earlier step (the
// cell is destroyed if it was created, the ledger entry released; a cell
// that cannot be destroyed stays, with its entry marked orphaned for later
// allocations to destroy) and is returned wrapping an errdefs sentinel:
//   - errdefs.ErrInvalidArgument: a bad image or spec (a *BootDescriptionError
//     for the boot description and the payload);
//   - errdefs.ErrFailedPrecondition: an image without a boot description
//     (with ErrNoBootDescription), a bad board, or a driver refusal (the
//     errno is kept: errors.Is(err, unix.EBUSY) holds);
//   - errdefs.ErrResourceExhausted: not enough CPUs or RAM left (an
//     *ExhaustedError), or the hypervisor out of memory (ENOMEM);
//   - errdefs.ErrAlreadyExists: the container already has a partition;
//   - errdefs.ErrNotImplemented: an RPU payload (rpu_req).
//
// The payload (docs/payloads.md) is a raw binary, an ELF or a Linux kernel
// with its device tree; it is read through the rootfs, never outside it.
//
// The payload is a raw binary, loaded at LoadAddress and no larger than the
// partition RAM; it is read through the rootfs, never outside it.
func Create(ctx context.Context, o Options) (_ *Partition, retErr error) {
	if o.Board == nil || o.Driver == nil || o.Ledger == nil || o.ID == "" || o.Namespace == "" {
		return nil, fmt.Errorf("partition: Options need ID, Namespace, Board, Driver and Ledger: %w", errdefs.ErrInvalidArgument)
	}
	owner := o.Namespace + "/" + o.ID
	logger := log.G(ctx).WithField("owner", owner)

	root, err := os.OpenRoot(o.Rootfs)
	if err != nil {
		return nil, fmt.Errorf("open rootfs %s: %w: %w", o.Rootfs, err, errdefs.ErrFailedPrecondition)
	}
	defer root.Close()

	desc, err := readBootDescription(root)
	if errors.Is(err, ErrNoBootDescription) {
		return nil, fmt.Errorf("rootfs %s: %w: %w", o.Rootfs, err, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	if keys := desc.UnknownKeys(); len(keys) > 0 {
		logger.WithField("file", desc.File).WithField("keys", keys).Warn("boot description: ignoring unknown keys")
	}
	con, err := chooseConsole(o.Board, desc)
	if err != nil {
		return nil, err
	}
	req, err := RequestFromSpec(o.Spec, o.Board)
	if err != nil {
		return nil, err
	}
	var prebuilt *jailhouse.Cell
	if desc.Cell != "" {
		if prebuilt, req, err = prebuiltRequest(root, o.Board, desc, req); err != nil {
			return nil, err
		}
	} else {
		if req.Net, err = resolveNetwork(ctx, o.Board, req, desc); err != nil {
			return nil, err
		}
		req.Loader = o.Board.LoaderArea > 0 && LoadAddress(o.Board, desc) != 0
		// Check the fit in the cell's address space before taking anything.
		if err := checkAddressSpace(o.Board, req.Memory, desc, req.Net, req.Loader); err != nil {
			return nil, err
		}
	}
	payload, err := readPayload(root, desc, o.Board, payloadLimit(req, prebuilt))
	if err != nil {
		return nil, err
	}
	// The cell and the payload in it are checked on an allocation from an
	// empty board before anything is taken: what is wrong with them is
	// wrong with any allocation, and must not hide behind the
	// ResourceExhausted of a full node, which kubelet retries forever. A
	// request that does not fit an empty board either is left to the
	// ledger, which says why.
	if trial, err := o.Board.allocate(newHoldings(), nil, owner, req); err == nil {
		trial.Cell = CellName(o.Namespace, o.ID)
		if _, _, _, err := buildCell(o.Board, req, desc, trial, prebuilt, payload, con.kind); err != nil {
			return nil, err
		}
	}

	alloc, err := o.Ledger.Allocate(ctx, o.Driver, owner, o.Board, req)
	if err != nil {
		return nil, fmt.Errorf("allocate partition for %s: %w", owner, err)
	}
	// cellLeft is set when the rollback could not destroy the cell: its
	// entry must then stay, orphaned, since the cell still holds what the
	// entry records.
	var cellLeft error
	defer func() {
		if retErr == nil {
			return
		}
		if cellLeft != nil {
			if err := o.Ledger.MarkOrphaned(owner, cellLeft.Error()); err != nil {
				logger.WithError(err).Error("rollback: mark the ledger entry of the leaked cell orphaned")
			}
			return
		}
		if err := o.Ledger.Release(owner); err != nil {
			logger.WithError(err).Error("rollback: release ledger entry")
		}
	}()
	logger = logger.WithField("cell", alloc.Cell)
	if con.kind == ConsoleVirtual {
		vpath := vconsolePath(o.Ledger.Path())
		if err := claimVirtualConsole(vpath, owner, alloc.Cell, o.Driver, o.Ledger); err != nil {
			return nil, err
		}
		defer func() {
			if retErr != nil {
				if err := releaseVirtualConsole(vpath, owner); err != nil {
					logger.WithError(err).Error("rollback: release the virtual console")
				}
			}
		}()
	}

	cell, images, load, err := buildCell(o.Board, req, desc, alloc, prebuilt, payload, con.kind)
	if err != nil {
		return nil, err
	}
	if err := checkCell(o.Board, o.Ledger, owner, cell); err != nil {
		return nil, err
	}
	config, err := cell.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode cell %q: %w: %w", cell.Name, err, errdefs.ErrInternal)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := o.Ledger.SaveConfig(owner, config); err != nil {
		return nil, fmt.Errorf("keep the configuration of cell %q: %w", cell.Name, err)
	}
	logger.WithField("cpus", jailhouse.FormatCPUList(alloc.CPUs)).
		WithField("ram", formatRanges(alloc.RAM)).
		WithField("pins", formatPins(alloc.Pins)).
		WithField("slots", alloc.Slots).
		WithField("load", fmt.Sprintf("%#x", load)).
		WithField("entry", fmt.Sprintf("%#x", cell.CPUResetAddress)).
		WithField("console", con.kind).
		Debug("create cell")

	if err := o.Driver.CreateCell(config); err != nil {
		return nil, driverError("create cell", cell.Name, err)
	}
	defer func() {
		if retErr != nil {
			if err := destroyCell(o.Driver, cell.Name); err != nil {
				logger.WithError(err).Error("rollback: cannot destroy the cell; leaving it and its ledger entry orphaned for later allocations to destroy")
				cellLeft = err
			}
		}
	}()
	if err := o.Driver.LoadCell(cell.Name, images...); err != nil {
		return nil, driverError("load cell", cell.Name, err)
	}
	return &Partition{
		owner: owner, driver: o.Driver, ledger: o.Ledger,
		alloc: alloc, cell: cell, loadAddr: load, console: con,
	}, nil
}

// buildCell makes the cell of allocation a: the prebuilt cell (a copy,
// renamed) or the planned one, with the console's flags, and places the
// payload in it. It returns the cell, the images to load and where the
// first one goes.
func buildCell(b *Board, req Request, d *BootDescription, a Allocation, prebuilt *jailhouse.Cell, p *payload, console ConsoleKind) (*jailhouse.Cell, []jailhouse.Image, uint64, error) {
	var cell *jailhouse.Cell
	load := LoadAddress(b, d)
	if prebuilt != nil {
		c := cloneCell(prebuilt)
		cell = &c
		cell.Name = a.Cell
		if !d.HasStartingVAddress {
			load = cell.CPUResetAddress
		}
	} else {
		var err error
		if cell, err = Plan(b, req, d, a); err != nil {
			return nil, nil, 0, err
		}
	}
	applyConsoleFlags(cell, console)
	images, err := p.place(cell, d, load)
	if err != nil {
		return nil, nil, 0, err
	}
	return cell, images, images[0].Target, nil
}

// Name returns the cell name.
func (p *Partition) Name() string { return p.alloc.Cell }

// Owner returns the ledger owner, "<namespace>/<container id>".
func (p *Partition) Owner() string { return p.owner }

// Allocation returns what the partition holds.
func (p *Partition) Allocation() Allocation {
	a := p.alloc
	a.CPUs = slices.Clone(a.CPUs)
	a.RAM = slices.Clone(a.RAM)
	return a
}

// Config returns a copy of the cell configuration the partition was created
// with.
func (p *Partition) Config() *jailhouse.Cell {
	c := cloneCell(p.cell)
	return &c
}

// LoadAddress returns the cell address the payload was loaded at.
func (p *Partition) LoadAddress() uint64 { return p.loadAddr }

// Start starts the cell at its cpu_reset_address (CELL_START). Starting a
// running cell restarts it.
func (p *Partition) Start(ctx context.Context) error {
	if err := p.driver.StartCell(p.Name()); err != nil {
		return driverError("start cell", p.Name(), err)
	}
	return nil
}

// State returns the cell state sysfs reports. A cell that no longer exists
// is errdefs.ErrNotFound.
func (p *Partition) State() (jailhouse.CellState, error) {
	info, err := p.driver.Cell(p.Name())
	if errors.Is(err, jailhouse.ErrCellNotFound) {
		return jailhouse.StateInvalid, fmt.Errorf("cell %q: %w: %w", p.Name(), err, errdefs.ErrNotFound)
	}
	if err != nil {
		return jailhouse.StateInvalid, fmt.Errorf("cell %q: %w", p.Name(), err)
	}
	return info.State, nil
}

// Shutdown stops the cell and leaves it loadable ("jailhouse cell
// shutdown": CELL_LOAD with no image). The cell and its resources stay until
// Destroy.
func (p *Partition) Shutdown(ctx context.Context) error {
	if err := p.driver.LoadCell(p.Name()); err != nil {
		return driverError("shut down cell", p.Name(), err)
	}
	return nil
}

// Destroy destroys the cell (a cell already gone is fine) and then releases
// the ledger entry. It is idempotent. If the cell cannot be destroyed the
// ledger entry stays, because the cell still holds its CPUs and RAM.
func (p *Partition) Destroy(ctx context.Context) error {
	p.destroyMu.Lock()
	defer p.destroyMu.Unlock()
	if p.destroyed {
		return nil
	}
	if err := destroyCell(p.driver, p.Name()); err != nil {
		return err
	}
	if err := p.ledger.Release(p.owner); err != nil {
		return fmt.Errorf("release %s: %w", p.owner, err)
	}
	p.destroyed = true
	if p.console.kind == ConsoleVirtual {
		// A failure here leaves a record whose cell and ledger entry are
		// gone, which the next claim replaces.
		if err := releaseVirtualConsole(vconsolePath(p.ledger.Path()), p.owner); err != nil {
			log.G(ctx).WithError(err).Warn("release the virtual console")
		}
	}
	return nil
}

// Record returns what DestroyRecord needs after a crash.
func (p *Partition) Record() Record {
	return Record{Owner: p.owner, Cell: p.Name(), Ledger: p.ledger.Path()}
}

// DestroyRecord destroys the partition r describes, for a process that did
// not create it (the shim's delete after a crash). l may be nil, then the
// ledger at r.Ledger is used. When the ledger no longer has r.Owner, the
// cell is destroyed only if no other ledger entry claims its name, so a
// stale record never destroys someone else's cell.
func DestroyRecord(ctx context.Context, d jailhouse.Driver, l *Ledger, r Record) error {
	if r.Owner == "" || r.Cell == "" {
		return fmt.Errorf("partition record %+v: owner and cell are required: %w", r, errdefs.ErrInvalidArgument)
	}
	if l == nil {
		if r.Ledger == "" {
			return fmt.Errorf("partition record of %s names no ledger: %w", r.Owner, errdefs.ErrInvalidArgument)
		}
		l = OpenLedger(r.Ledger)
	}
	entries, err := l.Entries()
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Cell == r.Cell && e.Owner != r.Owner {
			log.G(ctx).WithField("cell", r.Cell).WithField("owner", e.Owner).
				Warn("record names a cell another container now owns; leaving it")
			return l.Release(r.Owner)
		}
	}
	if err := destroyCell(d, r.Cell); err != nil {
		return err
	}
	if err := l.Release(r.Owner); err != nil {
		return fmt.Errorf("release %s: %w", r.Owner, err)
	}
	if err := releaseVirtualConsole(vconsolePath(l.Path()), r.Owner); err != nil {
		log.G(ctx).WithError(err).Warn("release the virtual console")
	}
	return nil
}

// destroyCell destroys a cell; a cell that does not exist (or a hypervisor
// that is not there, which means no cell exists) is success.
func destroyCell(d jailhouse.Driver, name string) error {
	err := d.DestroyCell(name)
	if err == nil || cellGone(d, name, err) {
		return nil
	}
	return driverError("destroy cell", name, err)
}

// cellGone reports whether err (from a request on the cell) means the cell
// does not exist, asking the driver when the errno alone does not tell.
func cellGone(d jailhouse.Driver, name string, err error) bool {
	if errors.Is(err, jailhouse.ErrCellNotFound) || errors.Is(err, jailhouse.ErrNotLoaded) || errors.Is(err, unix.ENOENT) {
		return true
	}
	if enabled, eerr := d.Enabled(); eerr == nil && !enabled {
		return true
	}
	_, cerr := d.Cell(name)
	return errors.Is(cerr, jailhouse.ErrCellNotFound)
}

// DriverError is a refusal of the driver to Op ("create cell", "load
// cell", …) the cell Cell. It matches Err, errno included, and a class:
// errdefs.ErrResourceExhausted for ENOMEM (the hypervisor's memory pool is
// exhausted), else errdefs.ErrFailedPrecondition. The class is in the
// chain, not in the message.
type DriverError struct {
	Op, Cell string
	Err      error
}

func (e *DriverError) Error() string { return fmt.Sprintf("%s %q: %v", e.Op, e.Cell, e.Err) }

// Unwrap returns the driver's error and the class.
func (e *DriverError) Unwrap() []error {
	if errors.Is(e.Err, unix.ENOMEM) {
		return []error{e.Err, errdefs.ErrResourceExhausted}
	}
	return []error{e.Err, errdefs.ErrFailedPrecondition}
}

// driverError classifies a refusal of the driver (see DriverError).
func driverError(op, cell string, err error) error {
	return &DriverError{Op: op, Cell: cell, Err: err}
}
