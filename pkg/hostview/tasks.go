package hostview

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// StateFileName is the shim's per-task state file in the bundle
// (pkg/shim/state.go).
const StateFileName = "runphi.json"

// stateVersion is the version of the state file this package reads.
const stateVersion = 1

// TaskState is the shim's <bundle>/runphi.json, read with the shim's keys.
// It is written by Create before the cell exists and again once it does;
// Partition is nil in between.
type TaskState struct {
	Version int `json:"version"`
	// Kind is "runc" for an ordinary container the shim runs with runc
	// (a pod's pause container); empty for a partition.
	Kind      string `json:"kind,omitempty"`
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	Bundle    string `json:"bundle"`
	// ShimPid is the shim that serves the task (also the task's pid).
	ShimPid int    `json:"shim_pid"`
	Rootfs  string `json:"rootfs"`
	Mounted bool   `json:"mounted"`
	// Config is the resolved configuration the task was created with.
	Config    Config       `json:"config"`
	Partition *StateRecord `json:"partition,omitempty"`
}

// StateRecord is partition.Record as the state file holds it.
type StateRecord struct {
	Owner  string `json:"owner"`
	Cell   string `json:"cell"`
	Ledger string `json:"ledger"`
}

// Owner is the ledger owner of the task, "<namespace>/<id>".
func (s *TaskState) Owner() string { return s.Namespace + "/" + s.ID }

// ReadTaskState reads <bundle>/runphi.json. The file is root-only.
func ReadTaskState(bundle string) (*TaskState, error) {
	path := filepath.Join(bundle, StateFileName)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read task state: %w", err)
	}
	var st TaskState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("decode task state %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("task state %s has version %d, this runphi reads version %d", path, st.Version, stateVersion)
	}
	return &st, nil
}

// Pod is what the CRI annotations of a container's OCI spec say about the
// Kubernetes pod it belongs to (containerd's pkg/cri/annotations).
type Pod struct {
	Name          string `json:"name"`
	Namespace     string `json:"namespace"`
	UID           string `json:"uid,omitempty"`
	SandboxID     string `json:"sandbox_id,omitempty"`
	ContainerName string `json:"container_name,omitempty"`
	// ContainerType is "sandbox" or "container".
	ContainerType string `json:"container_type,omitempty"`
}

// CRI annotation keys.
const (
	annotationSandboxName      = "io.kubernetes.cri.sandbox-name"
	annotationSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	annotationSandboxUID       = "io.kubernetes.cri.sandbox-uid"
	annotationSandboxID        = "io.kubernetes.cri.sandbox-id"
	annotationContainerName    = "io.kubernetes.cri.container-name"
	annotationContainerType    = "io.kubernetes.cri.container-type"
)

// ReadPod reads the CRI annotations from <bundle>/config.json; nil when the
// container was not created by CRI (ctr, nerdctl) or the spec is unreadable.
func ReadPod(bundle string) *Pod {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(data, &spec) != nil {
		return nil
	}
	a := spec.Annotations
	p := &Pod{
		Name:          a[annotationSandboxName],
		Namespace:     a[annotationSandboxNamespace],
		UID:           a[annotationSandboxUID],
		SandboxID:     a[annotationSandboxID],
		ContainerName: a[annotationContainerName],
		ContainerType: a[annotationContainerType],
	}
	if p.Name == "" && p.SandboxID == "" && p.ContainerType == "" {
		return nil
	}
	return p
}

// Task is one bundle holding a runphi state file.
type Task struct {
	Bundle string
	State  *TaskState
	Pod    *Pod
}

// KindRunc marks the state file of a container that is not a partition.
const KindRunc = "runc"

// FindTasks reads every runphi state file in the bundles below the given
// task roots (<root>/<namespace>/<id>/runphi.json) and in the extra bundle
// directories. Unreadable state files are returned as errors next to the
// tasks that could be read, so one bad file does not hide the others.
func FindTasks(roots, bundles []string) ([]Task, []error) {
	seen := map[string]bool{}
	var (
		tasks []Task
		errs  []error
	)
	visit := func(bundle string) {
		bundle = filepath.Clean(bundle)
		if seen[bundle] {
			return
		}
		seen[bundle] = true
		if _, err := os.Lstat(filepath.Join(bundle, StateFileName)); err != nil {
			return
		}
		st, err := ReadTaskState(bundle)
		if err != nil {
			errs = append(errs, err)
			return
		}
		if st.Kind == KindRunc {
			return // runc runs it: no cell, no ledger entry
		}
		tasks = append(tasks, Task{Bundle: bundle, State: st, Pod: ReadPod(bundle)})
	}
	for _, root := range roots {
		matches, _ := filepath.Glob(filepath.Join(root, "*", "*", StateFileName))
		slices.Sort(matches)
		for _, m := range matches {
			visit(filepath.Dir(m))
		}
	}
	for _, b := range bundles {
		visit(b)
	}
	return tasks, errs
}
