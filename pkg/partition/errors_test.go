package partition

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Errors are printed whole, every %w included, and containerd prints them
// again after its own prefix. A class belongs to the chain (errors.Is), not
// in the middle of the sentence a user reads: "the virtual console is owned
// by another partition: resource exhausted: default/lx (cell "lx") has it"
// said the same thing three ways.
func TestErrorTextsKeepTheClassOutOfTheSentence(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	owner, err := Create(ctx, n.options("lx", virtualRootfs(t, "virtual", helloScript), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Destroy(ctx)
	_, vconsoleErr := Create(ctx, n.options("second", virtualRootfs(t, "virtual", helloScript), nil))

	tests := []struct {
		name    string
		err     error
		text    string // the whole message
		is      []error
		notText string
	}{
		{
			name: "virtual console taken",
			err:  vconsoleErr,
			text: `the virtual console is owned by default/lx (cell "lx"); use "console": "ivshmem" in this image's boot description`,
			is:   []error{ErrVirtualConsoleTaken, errdefs.ErrResourceExhausted},
		},
		{
			name: "driver refusal",
			err:  driverError("create cell", "c", fmt.Errorf("CELL_CREATE: %w", unix.EBUSY)),
			text: `create cell "c": CELL_CREATE: device or resource busy`,
			is:   []error{unix.EBUSY, errdefs.ErrFailedPrecondition},
		},
		{
			name: "hypervisor out of memory",
			err:  driverError("create cell", "c", fmt.Errorf("CELL_CREATE: %w", unix.ENOMEM)),
			text: `create cell "c": CELL_CREATE: cannot allocate memory`,
			is:   []error{unix.ENOMEM, errdefs.ErrResourceExhausted},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("no error")
			}
			if got := tt.err.Error(); got != tt.text {
				t.Errorf("message\n%s\nwant\n%s", got, tt.text)
			}
			for _, target := range tt.is {
				if !errors.Is(tt.err, target) {
					t.Errorf("%v does not match %v", tt.err, target)
				}
			}
			for _, class := range []error{errdefs.ErrResourceExhausted, errdefs.ErrFailedPrecondition, errdefs.ErrInvalidArgument} {
				if strings.Contains(tt.err.Error(), class.Error()) {
					t.Errorf("message %q spells the class %q", tt.err, class)
				}
			}
		})
	}
}

// containerd 1.6 has no PermissionDenied: the shim sends a refused
// prebuilt cell as FailedPrecondition, and only the message can still say
// what happened (docs/annotations.md promises "permission denied").
func TestPrebuiltRefusalSaysPermissionDenied(t *testing.T) {
	n := newNode(t)
	c := prebuiltCell(t, n.board)
	_ = c.SetCPUs([]int{0})
	_, err := Create(context.Background(), n.options("pre", prebuiltRootfs(t, c), nil))
	var pe *PrebuiltError
	if !errors.As(err, &pe) || !errdefs.IsPermissionDenied(err) {
		t.Fatalf("Create: %v, want a *PrebuiltError", err)
	}
	const want = "prebuilt cell /boot/x.cell: cpus: CPU 0 is not available to partitions on board qemu-arm64"
	if msg := err.Error(); !strings.HasPrefix(msg, want) || !strings.HasSuffix(msg, ": permission denied") {
		t.Errorf("message %q, want %q… ending in \": permission denied\"", msg, want)
	}
}
