package shim

import (
	"fmt"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"
)

// mountRootfs mounts the snapshotter's mounts onto target. With no mounts
// (ctr --rootfs, or a daemon that mounted for us) target is used as is.
// It reports whether anything was mounted.
func mountRootfs(mounts []*types.Mount, target string) (bool, error) {
	if len(mounts) == 0 {
		return false, nil
	}
	if err := mount.All(mount.FromProto(mounts), target); err != nil {
		// mount.All can fail after mounting some layers.
		_ = mount.UnmountRecursive(target, 0)
		return false, fmt.Errorf("mount rootfs on %s: %w", target, err)
	}
	return true, nil
}

// unmountRootfs unmounts everything at or below target; nothing mounted is
// not an error, so every cleanup path may call it.
func unmountRootfs(target string) error {
	if err := mount.UnmountRecursive(target, 0); err != nil {
		return fmt.Errorf("unmount rootfs %s: %w", target, err)
	}
	return nil
}
