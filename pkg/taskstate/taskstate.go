package taskstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/runphi/runphi/pkg/config"
)

// FileName is the per-task state file in the bundle.
const FileName = "runphi.json"

// Version is bumped when State changes incompatibly, so that a newer
// `delete` can still tell what an older shim wrote.
const Version = 1

// KindRunc marks the state of an ordinary container, which the runc task
// service runs and containerd's runc bookkeeping in the bundle describes.
const KindRunc = "runc"

// State is everything `delete` needs to tear a task down after the shim
// that created it died: which backend the cell lives on, the partition's
// record (cell name, ledger entry) and what was mounted where. The shim
// writes it before the cell exists and again once it does; Partition is
// nil in between.
type State struct {
	Version int `json:"version"`
	// Kind is KindRunc for an ordinary container; empty for a partition
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
	Config config.Config `json:"config"`
	// Partition is set once the cell exists.
	Partition *Record `json:"partition,omitempty"`
}

// Record is partition.Record as the state file holds it (the same fields,
// so either converts to the other); it is repeated here to keep this
// package a leaf.
type Record struct {
	// Owner is the ledger owner, "<namespace>/<container id>".
	Owner string `json:"owner"`
	// Cell is the Jailhouse cell name.
	Cell string `json:"cell"`
	// Ledger is the path of the ledger file.
	Ledger string `json:"ledger"`
}

// Owner is the ledger owner of the task, "<namespace>/<id>".
func (s *State) Owner() string { return s.Namespace + "/" + s.ID }

// Path is the state file of a bundle.
func Path(bundle string) string { return filepath.Join(bundle, FileName) }

// Write replaces st.Bundle's state file atomically with mode 0600, setting
// st.Version.
func Write(st *State) error {
	st.Version = Version
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode task state: %w", err)
	}
	path := Path(st.Bundle)
	tmp, err := os.CreateTemp(st.Bundle, "."+FileName+".*")
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

// Read reads the bundle's state file; an error wrapping fs.ErrNotExist
// means the shim never got far enough to write one.
func Read(bundle string) (*State, error) {
	path := Path(bundle)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read task state: %w", err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("decode task state %s: %w", path, err)
	}
	if st.Version != Version {
		return nil, fmt.Errorf("task state %s has version %d, this runphi reads version %d", path, st.Version, Version)
	}
	return &st, nil
}

// Remove deletes the bundle's state file; a missing file is not an error.
func Remove(bundle string) error {
	if err := os.Remove(Path(bundle)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove task state: %w", err)
	}
	return nil
}
