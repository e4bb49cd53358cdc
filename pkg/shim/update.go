package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/partition"
)

// Update accepts a resource update that leaves the partition's CPUs and RAM
// as they are, and refuses one that would change them with NotImplemented,
// naming both: Jailhouse fixes a cell's CPUs and memory regions when the
// cell is created, and has no request that changes them afterwards, so a
// different size means recreating the container. Kubernetes sends
// unchanged limits again (CPU manager reconciliation, a resize of another
// container of the pod), and those must keep working; CPU shares, a quota
// or memory limit of "unlimited", and annotations change nothing.
func (s *service) Update(ctx context.Context, r *taskv3.UpdateTaskRequest) (*emptypb.Empty, error) {
	t, err := s.get(r.GetID())
	if err != nil {
		return nil, s.toRPC(err)
	}
	if err := t.checkUpdate(r.GetResources()); err != nil {
		return nil, s.toRPC(err)
	}
	log.G(ctx).WithField("id", t.id).Debug("update leaves the partition's resources as they are")
	return &emptypb.Empty{}, nil
}

// checkUpdate returns nil when resources ask for nothing the partition
// does not already have.
func (t *task) checkUpdate(resources *anypb.Any) error {
	if len(resources.GetValue()) == 0 {
		return nil
	}
	// containerd sends specs.LinuxResources as JSON under a type URL ending
	// in its name (core/runtime/typeurl.go).
	if url := resources.GetTypeUrl(); !strings.HasSuffix(url, "/LinuxResources") {
		return fmt.Errorf("update task %q: resources of type %q, want opencontainers/runtime-spec LinuxResources: %w",
			t.id, url, errdefs.ErrInvalidArgument)
	}
	var lr specs.LinuxResources
	if err := json.Unmarshal(resources.GetValue(), &lr); err != nil {
		return fmt.Errorf("update task %q: decode LinuxResources: %w: %w", t.id, err, errdefs.ErrInvalidArgument)
	}
	req, err := partition.RequestFromSpec(&specs.Spec{Linux: &specs.Linux{Resources: &lr}}, t.backend.board)
	if err != nil {
		return fmt.Errorf("update task %q: %w", t.id, err)
	}

	have := t.part.Allocation()
	var ram uint64
	for _, r := range have.RAM {
		ram += r.Size()
	}
	var changes []string
	if cpu := lr.CPU; cpu != nil && (cpu.Cpus != "" || (cpu.Quota != nil && *cpu.Quota > 0)) {
		if req.NumCPUs != len(have.CPUs) || (req.CPUs != nil && !slices.Equal(req.CPUs, have.CPUs)) {
			want := fmt.Sprintf("%d", req.NumCPUs)
			if req.CPUs != nil {
				want = jailhouse.FormatCPUList(req.CPUs)
			}
			changes = append(changes, fmt.Sprintf("its CPUs from %d (%s) to %s",
				len(have.CPUs), jailhouse.FormatCPUList(have.CPUs), want))
		}
	}
	if mem := lr.Memory; mem != nil && mem.Limit != nil && *mem.Limit > 0 && req.Memory != ram {
		changes = append(changes, fmt.Sprintf("its RAM from %d MiB to %d MiB", ram>>20, req.Memory>>20))
	}
	if len(changes) == 0 {
		return nil
	}
	return fmt.Errorf("update task %q: cell %q cannot change %s: Jailhouse fixes a cell's CPUs and RAM when the cell is created; recreate the container with the new limits: %w",
		t.id, t.part.Name(), strings.Join(changes, " or "), errdefs.ErrNotImplemented)
}
