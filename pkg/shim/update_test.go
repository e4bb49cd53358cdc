package shim

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// linuxResources encodes r the way containerd sends it (JSON under the
// runtime-spec type URL).
func linuxResources(t *testing.T, r *specs.LinuxResources) *anypb.Any {
	t.Helper()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: data}
}

func ptr[T any](v T) *T { return &v }

// A running partition (created with limits of 2 CPUs and 128 MiB) accepts
// an update that keeps its size, which is what Kubernetes sends again and
// again, and refuses one that changes it, naming what and why.
func TestServiceUpdate(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	bundle := h.bundle(t, "t1", partitionImage(inmateForever), "")
	// The spec's limits: 2 CPUs by quota, 128 MiB.
	writeFile(t, bundle+"/config.json", `{"ociVersion":"1.2.0","root":{"path":"rootfs"},"process":{"args":["/boot/boot.bin"],"cwd":"/"},
		"linux":{"resources":{"cpu":{"quota":200000,"period":100000},"memory":{"limit":134217728}}}}`)
	if _, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Start(ctx, &taskv3.StartRequest{ID: "t1"}); err != nil {
		t.Fatal(err)
	}
	cpus := h.svc.tasks["t1"].part.Allocation().CPUs
	if len(cpus) != 2 {
		t.Fatalf("partition has CPUs %v, want 2", cpus)
	}

	cases := []struct {
		name      string
		resources *anypb.Any
		want      error // nil: accepted
		text      []string
	}{
		{"annotations only", nil, nil, nil},
		{"the same limits again", linuxResources(t, &specs.LinuxResources{
			CPU:    &specs.LinuxCPU{Quota: ptr[int64](200000), Period: ptr[uint64](100000), Shares: ptr[uint64](2048)},
			Memory: &specs.LinuxMemory{Limit: ptr[int64](128 << 20)}}), nil, nil},
		{"the same limit in other units rounds to the same cell", linuxResources(t, &specs.LinuxResources{
			CPU: &specs.LinuxCPU{Quota: ptr[int64](150000), Period: ptr[uint64](100000)}}), nil, nil},
		{"shares only", linuxResources(t, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: ptr[uint64](512)}}), nil, nil},
		{"no quota and no memory limit (unlimited)", linuxResources(t, &specs.LinuxResources{
			CPU:    &specs.LinuxCPU{Quota: ptr[int64](-1)},
			Memory: &specs.LinuxMemory{Limit: ptr[int64](-1)}}), nil, nil},
		{"the cell's own cpuset", linuxResources(t, &specs.LinuxResources{
			CPU: &specs.LinuxCPU{Cpus: jailhouse.FormatCPUList(cpus)}}), nil, nil},
		{"more memory is refused", linuxResources(t, &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: ptr[int64](192 << 20)}}),
			errdefs.ErrNotImplemented, []string{"RAM from 128 MiB to 192 MiB", "recreate the container"}},
		{"more memory than the board has is the spec's fault", linuxResources(t, &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: ptr[int64](4 << 30)}}),
			errdefs.ErrInvalidArgument, []string{"linux.resources.memory.limit"}},
		{"more CPUs are refused", linuxResources(t, &specs.LinuxResources{
			CPU: &specs.LinuxCPU{Quota: ptr[int64](300000), Period: ptr[uint64](100000)}}),
			errdefs.ErrNotImplemented, []string{"CPUs from 2", "to 3", "Jailhouse fixes"}},
		{"resources of another type", &anypb.Any{TypeUrl: "example/Other", Value: []byte("{}")},
			errdefs.ErrInvalidArgument, []string{"example/Other"}},
		{"resources that do not decode", &anypb.Any{TypeUrl: "x/LinuxResources", Value: []byte("{")},
			errdefs.ErrInvalidArgument, []string{"decode LinuxResources"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.svc.Update(ctx, &taskv3.UpdateTaskRequest{ID: "t1", Resources: tc.resources,
				Annotations: map[string]string{"a": "b"}})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Update: %v, want it accepted", err)
				}
				return
			}
			isErr(t, err, tc.want, "Update")
			for _, text := range tc.text {
				if !strings.Contains(err.Error(), text) {
					t.Errorf("error %q does not say %q", err, text)
				}
			}
		})
	}
	_, err := h.svc.Update(ctx, &taskv3.UpdateTaskRequest{ID: "nope"})
	isErr(t, err, errdefs.ErrNotFound, "Update of an unknown task")
	h.removeTask(t, "t1")
}
