package shim

import (
	"context"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/log"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/runphi/runphi/pkg/caronte"
	"github.com/runphi/runphi/pkg/partition"
)

// consoleOptions tells caronte what the partition's console is
// (docs/console.md): the hypervisor's virtual console, which caronte polls
// and filters, or the cell's own stream; and, when there is none, why, so
// the task's output says it.
func consoleOptions(part *partition.Partition, o caronte.Options) caronte.Options {
	if part.ConsoleKind() == partition.ConsoleVirtual {
		o.ConsoleMode = caronte.ConsoleHypervisor
	}
	o.NoConsoleReason = part.ConsoleReason()
	return o
}

// CloseIO closes the task's stdin: the client has no more input for the
// inmate (`echo … | ctr run`, or a CRI client detaching). The partition
// keeps running; only stdin is closed, as for a runc process.
func (s *service) CloseIO(ctx context.Context, r *taskv3.CloseIORequest) (*emptypb.Empty, error) {
	t, err := s.getInit(r.GetID(), r.GetExecID())
	if err != nil {
		return nil, s.toRPC(err)
	}
	if !r.GetStdin() {
		return &emptypb.Empty{}, nil
	}
	if err := t.proxy.CloseStdin(); err != nil {
		log.G(ctx).WithError(err).WithField("id", t.id).Warn("close stdin")
	}
	return &emptypb.Empty{}, nil
}
