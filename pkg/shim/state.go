package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"

	"github.com/runphi/runphi/pkg/partition"
)

// stateFileName is the per-task state file in the bundle. It is root-only
// (0600) because it names host paths and the cell's resources.
const stateFileName = "runphi.json"

// stateVersion is bumped when taskState changes incompatibly, so that a
// newer `delete` can still read what an older shim wrote.
const stateVersion = 1

// taskState is everything `delete` needs to tear a task down after the
// shim that created it died: which backend the cell lives on, the
// partition's record (cell name, ledger entry) and what was mounted where.
type taskState struct {
	Version int `json:"version"`
	// Kind is kindRunc for an ordinary container; empty for a partition
	// (what every state file from before the runc fallback holds).
	Kind      string `json:"kind,omitempty"`
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	Bundle    string `json:"bundle"`
	// ShimPid is the pid the task reported (a partition has no host
	// process, so it is the shim's own).
	ShimPid int `json:"shim_pid"`
	// Rootfs is the mount target; Mounted says the shim mounted
	// CreateTaskRequest.rootfs there and must unmount it.
	Rootfs  string `json:"rootfs"`
	Mounted bool   `json:"mounted"`
	// Config is the resolved configuration the task was created with.
	Config Config `json:"config"`
	// Partition is set once the cell exists.
	Partition *partition.Record `json:"partition,omitempty"`
}

// kindRunc marks the state of an ordinary container, which the runc task
// service runs and containerd's runc bookkeeping in the bundle describes.
const kindRunc = "runc"

func statePath(bundle string) string { return filepath.Join(bundle, stateFileName) }

// writeState replaces the state file atomically: a crash leaves either the
// old or the new state, never half of one.
func writeState(st *taskState) error {
	st.Version = stateVersion
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode task state: %w", err)
	}
	path := statePath(st.Bundle)
	tmp, err := os.CreateTemp(st.Bundle, "."+stateFileName+".*")
	if err != nil {
		return fmt.Errorf("write task state %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write task state %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write task state %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write task state %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write task state %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write task state %s: %w", path, err)
	}
	return nil
}

// readState reads the bundle's state file; an error wrapping
// fs.ErrNotExist means the shim never got far enough to write one.
func readState(bundle string) (*taskState, error) {
	path := statePath(bundle)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read task state: %w", err)
	}
	var st taskState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("decode task state %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("task state %s has version %d, this shim reads version %d", path, st.Version, stateVersion)
	}
	return &st, nil
}

// removeState deletes the state file; a missing file is not an error.
func removeState(bundle string) error {
	if err := os.Remove(statePath(bundle)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove task state: %w", err)
	}
	return nil
}

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
