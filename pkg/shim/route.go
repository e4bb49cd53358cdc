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

// The CRI annotations routing and grouping read (containerd's
// internal/cri/annotations).
const (
	criContainerType        = "io.kubernetes.cri.container-type"
	criContainerTypeSandbox = "sandbox"
	criSandboxID            = "io.kubernetes.cri.sandbox-id"
)

// runcGroupAnnotation groups containers into one shim for users that are not
// CRI, as it does for containerd's runc shim.
const runcGroupAnnotation = "io.containerd.runc.v2.group"

// target is where a container runs.
type target int

const (
	targetPartition target = iota + 1 // a Jailhouse cell
	targetRunc                        // an ordinary container, on runc
)

func (t target) String() string {
	switch t {
	case targetPartition:
		return "partition"
	case targetRunc:
		return "runc"
	}
	return fmt.Sprintf("target(%d)", int(t))
}

// route decides where a container runs, the way runPHI's filter did: an
// explicit annotation first, then the pod's sandbox (pause) container, which
// is always an ordinary container, then the presence of a boot description
// in the image.
func route(spec *specs.Spec, rootfs string) (target, error) {
	t, err := routeBySpec(spec)
	if err != nil || t != 0 {
		return t, err
	}
	return routeByImage(rootfs)
}

// routeBySpec decides from the spec's annotations alone; 0 means the image
// has to be looked at.
func routeBySpec(spec *specs.Spec) (target, error) {
	switch v, ok := spec.Annotations[RuntimeAnnotation]; {
	case !ok:
	case v == runtimeRunphi:
		return targetPartition, nil
	case v == runtimeRunc:
		return targetRunc, nil
	default:
		return 0, fmt.Errorf("annotation %s=%q: want %q or %q: %w",
			RuntimeAnnotation, v, runtimeRunphi, runtimeRunc, errdefs.ErrInvalidArgument)
	}
	if spec.Annotations[criContainerType] == criContainerTypeSandbox {
		return targetRunc, nil
	}
	return 0, nil
}

// routeByImage makes a container with a boot description a partition and
// any other an ordinary container. A broken boot description (a directory,
// a symlink leaving the rootfs) is an InvalidArgument error, never silently
// "not a partition".
func routeByImage(rootfs string) (target, error) {
	_, found, err := partition.FindBootDescription(rootfs)
	switch {
	case err != nil:
		return 0, err
	case found:
		return targetPartition, nil
	}
	return targetRunc, nil
}
