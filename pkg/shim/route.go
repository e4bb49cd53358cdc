package shim

import (
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runphi/runphi/pkg/partition"
)

// RuntimeAnnotation lets an image or pod force the kind of a container:
// "runphi" makes it a partition, "runc" an ordinary container.
const RuntimeAnnotation = "org.runphi.runtime"

// Annotation values of RuntimeAnnotation.
const (
	runtimeRunphi = "runphi"
	runtimeRunc   = "runc"
)

// target is where a container runs.
type target int

const (
	targetPartition target = iota + 1
)

// route decides where a container runs, the way runPHI's filter did: an
// explicit annotation first, then the presence of a boot description in the
// image. Until the runc fallback exists (issue 5) every container that is
// not a partition is refused with FailedPrecondition, naming what is missing.
func route(spec *specs.Spec, rootfs string) (target, error) {
	switch v, ok := spec.Annotations[RuntimeAnnotation]; {
	case !ok:
	case v == runtimeRunphi:
		return targetPartition, nil
	case v == runtimeRunc:
		return 0, fmt.Errorf("annotation %s=%q: runc containers arrive with the runc fallback (issue 5): %w",
			RuntimeAnnotation, v, errdefs.ErrFailedPrecondition)
	default:
		return 0, fmt.Errorf("annotation %s=%q: want %q or %q: %w",
			RuntimeAnnotation, v, runtimeRunphi, runtimeRunc, errdefs.ErrInvalidArgument)
	}
	_, found, err := partition.FindBootDescription(rootfs)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("the image has no /boot/config.json (nor /boot/configuration.json), so it is not a partitioned container, and runc containers arrive with the runc fallback (issue 5): %w",
			errdefs.ErrFailedPrecondition)
	}
	return targetPartition, nil
}
