package partition

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func ptr[T any](v T) *T { return &v }

func specWith(cpu *specs.LinuxCPU, mem *specs.LinuxMemory) *specs.Spec {
	return &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{CPU: cpu, Memory: mem}}}
}

func TestRequestFromSpec(t *testing.T) {
	b := mustBoard(t)
	const mib = 1 << 20
	tests := []struct {
		name    string
		spec    *specs.Spec
		cpus    []int
		numCPUs int
		memory  uint64
	}{
		{"no spec gives one CPU and 64 MiB", nil, nil, 1, 64 * mib},
		{"no resources", &specs.Spec{Linux: &specs.Linux{}}, nil, 1, 64 * mib},
		{"explicit cpuset", specWith(&specs.LinuxCPU{Cpus: "2-3,5"}, nil), []int{2, 3, 5}, 3, 64 * mib},
		{"cpuset wins over quota", specWith(&specs.LinuxCPU{Cpus: "4", Quota: ptr[int64](300000), Period: ptr[uint64](100000)}, nil), []int{4}, 1, 64 * mib},
		{"Kubernetes limits.cpu 2", specWith(&specs.LinuxCPU{Quota: ptr[int64](200000), Period: ptr[uint64](100000)}, nil), nil, 2, 64 * mib},
		{"fractional quota rounds up", specWith(&specs.LinuxCPU{Quota: ptr[int64](150000), Period: ptr[uint64](100000)}, nil), nil, 2, 64 * mib},
		{"quota without period uses 100ms", specWith(&specs.LinuxCPU{Quota: ptr[int64](250000)}, nil), nil, 3, 64 * mib},
		{"runPHI default quota/period", specWith(&specs.LinuxCPU{Quota: ptr[int64](10000), Period: ptr[uint64](10000)}, nil), nil, 1, 64 * mib},
		{"quota -1 is unlimited, one CPU", specWith(&specs.LinuxCPU{Quota: ptr[int64](-1)}, nil), nil, 1, 64 * mib},
		{"memory limit", specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](128 * mib)}), nil, 1, 128 * mib},
		{"memory rounds up to the 2 MiB granule", specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](100*mib + 1)}), nil, 1, 102 * mib},
		{"memory -1 is the default", specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](-1)}), nil, 1, 64 * mib},
		{"memory 0 is the default", specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](0)}), nil, 1, 64 * mib},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := RequestFromSpec(tt.spec, b)
			if err != nil {
				t.Fatalf("RequestFromSpec: %v", err)
			}
			if !slices.Equal(req.CPUs, tt.cpus) || req.NumCPUs != tt.numCPUs || req.Memory != tt.memory {
				t.Errorf("got %+v, want cpus %v num %d memory %d", req, tt.cpus, tt.numCPUs, tt.memory)
			}
		})
	}
}

func TestRequestFromSpecErrors(t *testing.T) {
	b := mustBoard(t)
	tests := []struct {
		name  string
		spec  *specs.Spec
		field string
		text  string
	}{
		{"cpuset syntax", specWith(&specs.LinuxCPU{Cpus: "2-"}, nil), "linux.resources.cpu.cpus", "cpu number"},
		{"cpuset naming a Linux CPU", specWith(&specs.LinuxCPU{Cpus: "0-2"}, nil), "linux.resources.cpu.cpus", "CPU 0 is not available"},
		{"cpuset naming a CPU the board lacks", specWith(&specs.LinuxCPU{Cpus: "99"}, nil), "linux.resources.cpu.cpus", "CPU 99"},
		{"quota with zero period", specWith(&specs.LinuxCPU{Quota: ptr[int64](1000), Period: ptr[uint64](0)}, nil), "linux.resources.cpu.period", "non-zero"},
		{"absurd quota", specWith(&specs.LinuxCPU{Quota: ptr[int64](1 << 62), Period: ptr[uint64](1)}, nil), "linux.resources.cpu.quota", "more than Jailhouse"},
		{"memory beyond the whole pool", specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](1 << 30)}), "linux.resources.memory.limit", "whole partition pool 0x70000000-0x7f800000 (248 MiB)"},
		{"more CPUs than the board has", specWith(&specs.LinuxCPU{Quota: ptr[int64](1500000), Period: ptr[uint64](100000)}, nil), "linux.resources.cpu", "more than the 14 CPUs"},
		{"negative memory limit", specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](-2)}), "linux.resources.memory.limit", "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := RequestFromSpec(tt.spec, b)
			if err == nil {
				t.Fatal("RequestFromSpec succeeded")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("error %v is not InvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tt.field) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not name %s and %q", err, tt.field, tt.text)
			}
		})
	}
}
