package partition

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

func TestParseConsoleKind(t *testing.T) {
	for _, k := range []ConsoleKind{ConsoleIVSHMEM, ConsoleVirtual, ConsoleNone} {
		got, err := ParseConsoleKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseConsoleKind(%q) = %v, %v", k.String(), got, err)
		}
	}
	if _, err := ParseConsoleKind("uart"); err == nil {
		t.Error(`ParseConsoleKind("uart") did not fail`)
	}
	_, err := ParseBootDescription("/boot/config.json", []byte(`{"console":"serial"}`))
	var bde *BootDescriptionError
	if !errors.As(err, &bde) || bde.Key != "console" {
		t.Errorf("boot description with console serial: %v, want an error naming key console", err)
	}
}

// virtualRootfs is an image whose inmate prints through the virtual console.
func virtualRootfs(t *testing.T, console, script string) string {
	return scriptRootfs(t, `{"console":"`+console+`"}`, script)
}

// Only the owner of the virtual console gets the virtual console flags;
// a second partition asking for it is refused with ResourceExhausted
// naming the owner; the console is free again after the owner is destroyed.
func TestVirtualConsoleOwnership(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	owner, err := Create(ctx, n.options("first", virtualRootfs(t, "virtual", helloScript), nil))
	if err != nil {
		t.Fatalf("Create first: %v", err)
	}
	const both = jailhouse.CellVirtualConsolePermitted | jailhouse.CellVirtualConsoleActive
	if f := owner.Config().Flags; f&both != both || owner.ConsoleKind() != ConsoleVirtual {
		t.Errorf("owner flags %v kind %v, want PERMITTED|ACTIVE and virtual", f, owner.ConsoleKind())
	}
	other, err := Create(ctx, n.options("other", virtualRootfs(t, "ivshmem", helloScript), nil))
	if err != nil {
		t.Fatalf("Create other: %v", err)
	}
	if f := other.Config().Flags; f&both != 0 {
		t.Errorf("non-owner flags %v, want neither virtual console flag", f)
	}
	_, err = Create(ctx, n.options("second", virtualRootfs(t, "virtual", helloScript), nil))
	if !errors.Is(err, ErrVirtualConsoleTaken) || !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "default/first") {
		t.Errorf("second virtual console: %v, want ResourceExhausted naming default/first", err)
	}
	if _, err := n.driver.Cell("second"); !errors.Is(err, jailhouse.ErrCellNotFound) {
		t.Errorf("the refused partition left a cell: %v", err)
	}
	if err := owner.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	third, err := Create(ctx, n.options("third", virtualRootfs(t, "virtual", helloScript), nil))
	if err != nil {
		t.Fatalf("virtual console after the owner left: %v", err)
	}
	third.Destroy(ctx)
	other.Destroy(ctx)
	n.checkEmpty(t)
}

// A record left by an owner whose cell and ledger entry are gone (its shim
// died before delete) does not block the next claimant.
func TestVirtualConsoleStaleOwner(t *testing.T) {
	n := newNode(t)
	path := vconsolePath(n.ledger.Path())
	if err := claimVirtualConsole(path, "default/dead", "dead", n.driver, n.ledger); err != nil {
		t.Fatal(err)
	}
	if err := claimVirtualConsole(path, "default/next", "next", n.driver, n.ledger); err != nil {
		t.Errorf("claim over a stale owner: %v", err)
	}
	if err := releaseVirtualConsole(path, "default/dead"); err != nil {
		t.Fatal(err)
	}
	if o, _ := readVConsoleOwner(path); o.Owner != "default/next" {
		t.Errorf("a stale owner's release took the console from %q", o.Owner)
	}
}

// The virtual console's owner reads its inmate's output from the
// hypervisor ring (the stream caronte filters); a partition with console
// none has no stream and says why.
func TestPartitionConsoleStreams(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	v, err := Create(ctx, n.options("v", virtualRootfs(t, "virtual", "#!runphi-sim\nprint through the ring\nexit\n"), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Destroy(ctx)
	con, err := v.Console()
	if err != nil || con == nil {
		t.Fatalf("Console: %v, %v", con, err)
	}
	defer con.Close()
	io.ReadAll(con) // what the ring held before: boot and creation messages
	if err := v.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// The simulator runs the inmate on the next transaction.
	if _, err := v.State(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(con) // non-blocking: what is new
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "through the ring\n") || !strings.Contains(string(b), `Started cell "v"`) {
		t.Errorf("virtual console %q, want the start message and the inmate's line", b)
	}

	none, err := Create(ctx, n.options("quiet", virtualRootfs(t, "none", helloScript), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer none.Destroy(ctx)
	if con, err := none.Console(); con != nil || err != nil {
		t.Errorf("console none: Console = %v, %v; want nil, nil", con, err)
	}
	if r := none.ConsoleReason(); !strings.Contains(r, `"console": "none"`) {
		t.Errorf("ConsoleReason %q", r)
	}
}
