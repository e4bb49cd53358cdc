package partition

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// ConsoleKind is where a partition's console output comes from
// (docs/console.md). The boot description's "console" key chooses it; the
// default is ConsoleIVSHMEM.
type ConsoleKind int

const (
	// ConsoleIVSHMEM is a root↔partition ivshmem link carrying the runphi
	// console protocol: per partition, bidirectional.
	ConsoleIVSHMEM ConsoleKind = iota
	// ConsoleVirtual is the hypervisor's virtual console ring: the cell
	// gets VIRTUAL_CONSOLE_PERMITTED|ACTIVE and prints through the debug
	// putc hypercall. The ring is shared by the whole host, so at most one
	// partition owns it at a time; output only.
	ConsoleVirtual
	// ConsoleNone: the partition has no console runphi reads (it may still
	// write to the board's UART).
	ConsoleNone
)

var consoleKindNames = [...]string{"ivshmem", "virtual", "none"}

func (k ConsoleKind) String() string {
	if int(k) < len(consoleKindNames) && k >= 0 {
		return consoleKindNames[k]
	}
	return fmt.Sprintf("console(%d)", int(k))
}

// ParseConsoleKind parses the boot description's spelling.
func ParseConsoleKind(s string) (ConsoleKind, error) {
	for i, n := range consoleKindNames {
		if s == n {
			return ConsoleKind(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not a console kind, want \"ivshmem\", \"virtual\" or \"none\"", s)
}

// Errors returned by Create for consoles.
var (
	// ErrVirtualConsoleTaken means another partition owns the host's
	// virtual console. Create returns it as a *VirtualConsoleTakenError,
	// which names the owner and matches errdefs.ErrResourceExhausted.
	ErrVirtualConsoleTaken = errors.New("the virtual console is owned by another partition")
)

// VirtualConsoleTakenError is a claim of the virtual console while Owner
// (cell Cell) has it. It matches ErrVirtualConsoleTaken and
// errdefs.ErrResourceExhausted; its message is one sentence without them.
type VirtualConsoleTakenError struct {
	Owner, Cell string
}

func (e *VirtualConsoleTakenError) Error() string {
	return fmt.Sprintf("the virtual console is owned by %s (cell %q); use \"console\": \"ivshmem\" in this image's boot description", e.Owner, e.Cell)
}

// Unwrap returns ErrVirtualConsoleTaken and errdefs.ErrResourceExhausted.
func (e *VirtualConsoleTakenError) Unwrap() []error {
	return []error{ErrVirtualConsoleTaken, errdefs.ErrResourceExhausted}
}

// consoleChoice is the console a partition gets and why.
type consoleChoice struct {
	kind   ConsoleKind
	reason string // for ConsoleNone: why there is no console
}

// chooseConsole picks the partition's console from the boot description
// and the board. The virtual console needs the system's virtual debug
// console (system flag 0x1), without which the ring cannot be read.
func chooseConsole(b *Board, d *BootDescription) (consoleChoice, error) {
	kind := ConsoleIVSHMEM
	if d != nil && d.HasConsole {
		kind = d.Console
	}
	switch kind {
	case ConsoleVirtual:
		if b.SystemConfig().Flags&jailhouse.SysVirtualDebugConsole == 0 {
			return consoleChoice{}, &BootDescriptionError{File: d.File, Key: "console", Err: fmt.Errorf(
				"\"virtual\" needs the hypervisor's virtual debug console, which board %s does not enable (system.flags lacks \"virtual-debug-console\")", b.Name)}
		}
	case ConsoleNone:
		return consoleChoice{kind: kind, reason: fmt.Sprintf("the boot description %s sets \"console\": \"none\"", d.File)}, nil
	}
	return consoleChoice{kind: kind}, nil
}

// applyConsoleFlags gives the cell the virtual console flags only when it
// owns the virtual console, so no other cell can write into the ring the
// owner's stream is read from.
func applyConsoleFlags(c *jailhouse.Cell, kind ConsoleKind) {
	c.Flags &^= jailhouse.CellVirtualConsolePermitted | jailhouse.CellVirtualConsoleActive
	if kind == ConsoleVirtual {
		c.Flags |= jailhouse.CellVirtualConsolePermitted | jailhouse.CellVirtualConsoleActive
	}
}

// vconsoleOwner is the node-wide record of who owns the virtual console,
// a small JSON file next to the ledger, changed under an flock.
type vconsoleOwner struct {
	Owner string `json:"owner"` // "<namespace>/<container id>"
	Cell  string `json:"cell"`
}

// vconsolePath is where the owner record of the node whose ledger is at
// ledgerPath lives.
func vconsolePath(ledgerPath string) string {
	return filepath.Join(filepath.Dir(ledgerPath), "virtual-console.json")
}

// withVConsoleLock runs fn with the owner record's lock held.
func withVConsoleLock(path string, fn func() error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("virtual console owner: %w", err)
	}
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("virtual console owner: %w", err)
	}
	defer f.Close()
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("virtual console owner: lock %s: %w", path, err)
	}
	return fn()
}

func readVConsoleOwner(path string) (vconsoleOwner, error) {
	var o vconsoleOwner
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return o, nil
	}
	if err != nil {
		return o, fmt.Errorf("virtual console owner: %w", err)
	}
	if err := json.Unmarshal(b, &o); err != nil {
		// A torn record names nobody: the next claim rewrites it.
		return vconsoleOwner{}, nil
	}
	return o, nil
}

// claimVirtualConsole makes owner (with cell) the owner of the virtual
// console. An owner whose cell no longer exists and whose ledger entry is
// gone (its shim died without delete) is replaced; a live one makes the
// claim fail with a *VirtualConsoleTakenError.
func claimVirtualConsole(path, owner, cell string, d jailhouse.Driver, l *Ledger) error {
	return withVConsoleLock(path, func() error {
		cur, err := readVConsoleOwner(path)
		if err != nil {
			return err
		}
		if cur.Owner != "" && cur.Owner != owner && vconsoleOwnerAlive(cur, d, l) {
			return &VirtualConsoleTakenError{Owner: cur.Owner, Cell: cur.Cell}
		}
		b, err := json.Marshal(vconsoleOwner{Owner: owner, Cell: cell})
		if err != nil {
			return err
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return fmt.Errorf("virtual console owner: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("virtual console owner: %w", err)
		}
		return nil
	})
}

// vconsoleOwnerAlive reports whether a recorded owner may still use the
// virtual console: its cell exists, or its ledger entry does (it claimed
// the console and has not created its cell yet). When in doubt it is alive.
func vconsoleOwnerAlive(o vconsoleOwner, d jailhouse.Driver, l *Ledger) bool {
	if _, err := d.Cell(o.Cell); !errors.Is(err, jailhouse.ErrCellNotFound) {
		return true
	}
	entries, err := l.Entries()
	if err != nil {
		return true
	}
	for _, e := range entries {
		if e.Owner == o.Owner {
			return true
		}
	}
	return false
}

// releaseVirtualConsole gives the virtual console up if owner has it.
func releaseVirtualConsole(path, owner string) error {
	return withVConsoleLock(path, func() error {
		cur, err := readVConsoleOwner(path)
		if err != nil {
			return err
		}
		if cur.Owner != owner {
			return nil
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("virtual console owner: %w", err)
		}
		return nil
	})
}

// ConsoleKind returns the partition's console kind.
func (p *Partition) ConsoleKind() ConsoleKind { return p.console.kind }

// ConsoleReason says why Console returns no stream: the boot description
// asked for none, or the driver offers no host side for the ivshmem
// console.
func (p *Partition) ConsoleReason() string {
	if p.console.kind == ConsoleIVSHMEM {
		if _, ok := p.driver.(jailhouse.CellConsoler); !ok {
			return "the host side of the ivshmem console (its uio mapping) is not implemented for this driver yet"
		}
	}
	return p.console.reason
}

// Console opens the partition's console (caronte.Cell):
//   - ivshmem: the root's end of the cell's console link, an
//     io.ReadWriteCloser when the driver offers one (the simulator);
//   - virtual: the hypervisor's ring, opened non-blocking, for the owner's
//     caronte to poll and filter (caronte.ConsoleHypervisor);
//   - none: nil, nil (ConsoleReason says why).
//
// On real hardware the ivshmem console's host side is the uio mapping of
// the link, which the planner does not create yet: Console then returns
// nil, nil as for none.
func (p *Partition) Console() (io.ReadCloser, error) {
	switch p.console.kind {
	case ConsoleVirtual:
		r, err := p.driver.OpenConsole(false)
		if err != nil {
			return nil, fmt.Errorf("open the virtual console for cell %q: %w", p.Name(), err)
		}
		return r, nil
	case ConsoleNone:
		return nil, nil
	}
	cc, ok := p.driver.(jailhouse.CellConsoler)
	if !ok {
		return nil, nil
	}
	r, err := cc.OpenCellConsole(p.Name())
	if err != nil {
		return nil, fmt.Errorf("open console of cell %q: %w", p.Name(), err)
	}
	return r, nil
}
