package partition

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// Whether a request can ever be granted on the board is decided before
// whether it can be granted now. A refusal for want of free resources
// (ResourceExhausted) tells kubelet and users to retry; it must never stand
// for a request no amount of waiting makes fit (InvalidArgument), or the
// retries never end.

// maxPCIDevices is how many ivshmem devices one cell can have with an INTx
// line each: Jailhouse puts device d's on 32 + vpci_irq_base + (d & 3).
const maxPCIDevices = 4

// checkFits returns an InvalidArgument error if req could never be granted
// to owner on b, however many partitions went away. It looks at nothing
// that is held, except the links peers opened towards owner: owner joins
// those as they are.
func (b *Board) checkFits(peers []Entry, owner string, req Request) error {
	if err := b.checkRequest(owner, req); err != nil {
		return err
	}
	// What the checks above cannot see alone — the RAM, loader area and
	// link memory together in the pools, the INTx lines of all devices on
	// the board's SPIs — is settled by allocating on an empty board.
	if _, err := b.take(newHoldings(), towards(peers, owner), owner, req); err != nil {
		var ee *ExhaustedError
		if errors.As(err, &ee) {
			return fmt.Errorf("board %s cannot grant this even with no other partition running: %s: %w", b.Name, ee, errdefs.ErrInvalidArgument)
		}
		return err
	}
	return nil
}

// towards keeps, of the entries, only the links towards owner: what owner
// will join whatever else goes away.
func towards(entries []Entry, owner string) []Entry {
	var out []Entry
	for _, e := range entries {
		var links []Link
		for _, l := range e.Links {
			if l.Peer == owner {
				links = append(links, l)
			}
		}
		if links != nil {
			out = append(out, Entry{Allocation: Allocation{Owner: e.Owner, Links: links}})
		}
	}
	return out
}

// checkRequest checks each part of req against what board b has at all,
// with an error that names it. RequestFromSpec checks sizes against the
// board too, naming the spec field; this is the allocator's own line, for
// every caller.
func (b *Board) checkRequest(owner string, req Request) error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	usable := b.usableCPUs()
	switch {
	case req.CPUs != nil:
		for _, c := range req.CPUs {
			if !slices.Contains(usable, c) {
				return invalid("cpu: CPU %d is not available to partitions on board %s (partitions may use %s)",
					c, b.Name, jailhouse.FormatCPUList(usable))
			}
		}
	case req.NumCPUs < 1 && req.RPUs == 0:
		return invalid("cpu: asked %s, want at least 1", count(req.NumCPUs, "CPU"))
	case req.NumCPUs > len(usable):
		return invalid("cpu: asked %s, board %s has %d for partitions (%s)",
			count(req.NumCPUs, "CPU"), b.Name, len(usable), jailhouse.FormatCPUList(usable))
	}
	switch {
	case req.RPUs > 0 && len(b.RPUs) == 0:
		return invalid("rpu: board %s has no Cortex-R5 RPUs", b.Name)
	case req.RPUs > len(b.RPUs):
		return invalid("rpu: asked %s, board %s has %d (%s)", count(req.RPUs, "RPU"), b.Name, len(b.RPUs), jailhouse.FormatCPUList(b.RPUs))
	}
	if req.Memory == 0 {
		return invalid("memory: asked 0 bytes")
	}
	if largest := b.largestBlock(); alignUp(req.Memory, b.Granule) > largest {
		return invalid("memory: asked %s, more than board %s's largest partition pool holds (%s in %s)",
			formatSize(alignUp(req.Memory, b.Granule)), b.Name, formatSize(largest), formatRanges(b.Pools))
	}
	switch req.UART {
	case UARTShared:
		if b.sharedUART() == nil {
			return invalid("%s=shared: board %s has no UART shared with the root cell", AnnotationUART, b.Name)
		}
	case UARTDedicated:
		if !slices.ContainsFunc(b.UARTs, func(u UART) bool { return !u.Shared }) {
			return invalid("%s=dedicated: board %s has no UART for one partition alone", AnnotationUART, b.Name)
		}
	}
	if req.Net && b.IVSHMEM.Slots == 0 {
		return invalid("network: board %s has no ivshmem window for root links", b.Name)
	}
	_, self, _ := strings.Cut(owner, "/")
	for _, id := range req.Links {
		if id == self {
			return invalid("%s: a container cannot link to itself", AnnotationShmemLink)
		}
	}
	if len(req.Links) > 0 && len(b.LinkDevices) == 0 {
		return invalid("%s: board %s has no devices for partition links", AnnotationShmemLink, b.Name)
	}
	devices := len(req.Links)
	if req.Net {
		devices++
	}
	what := func() string {
		if req.Net {
			return fmt.Sprintf("the network link and %s", count(len(req.Links), "partition link"))
		}
		return count(len(req.Links), "partition link")
	}
	switch {
	case devices > maxPCIDevices:
		return invalid("%s (%s) asked, and a cell has at most %d: each needs an INTx line of its own, and Jailhouse gives a cell 4 (32 + vpci_irq_base + device number mod 4)",
			count(devices, "ivshmem device"), what(), maxPCIDevices)
	case devices > len(b.SPIs):
		return invalid("%s (%s) asked, each with an INTx line of its own, and board %s gives partitions %s (interrupts %s)",
			count(devices, "ivshmem device"), what(), b.Name, count(len(b.SPIs), "interrupt"), formatPins(b.SPIs))
	}
	return nil
}
