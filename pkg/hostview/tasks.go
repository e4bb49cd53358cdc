package hostview

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"

	"github.com/runphi/runphi/pkg/taskstate"
)

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
	State  *taskstate.State
	Pod    *Pod
}

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
		if _, err := os.Lstat(filepath.Join(bundle, taskstate.FileName)); err != nil {
			return
		}
		st, err := taskstate.Read(bundle)
		if err != nil {
			errs = append(errs, err)
			return
		}
		if st.Kind == taskstate.KindRunc {
			return // runc runs it: no cell, no ledger entry
		}
		tasks = append(tasks, Task{Bundle: bundle, State: st, Pod: ReadPod(bundle)})
	}
	for _, root := range roots {
		matches, _ := filepath.Glob(filepath.Join(root, "*", "*", taskstate.FileName))
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
