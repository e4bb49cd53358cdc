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
		{"memory beyond the whole pool", specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](1 << 30)}), "linux.resources.memory.limit", "largest partition pool holds (232 MiB in 0x70000000-0x7e800000)"},
		{"more CPUs than the board has", specWith(&specs.LinuxCPU{Quota: ptr[int64](1500000), Period: ptr[uint64](100000)}, nil), "linux.resources.cpu", "more than the 14 CPUs"},
		{"cpuset naming a CPU twice", specWith(&specs.LinuxCPU{Cpus: "5,5"}, nil), "linux.resources.cpu.cpus", "names CPU 5 twice"},
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

func withAnnotations(spec *specs.Spec, kv ...string) *specs.Spec {
	if spec == nil {
		spec = &specs.Spec{}
	}
	spec.Annotations = map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		spec.Annotations[kv[i]] = kv[i+1]
	}
	return spec
}

// The runphi.io/ annotations (docs/annotations.md) ask for options and
// sizes; annotations outside the prefix are not runphi's business.
func TestRequestAnnotations(t *testing.T) {
	b := mustBoard(t)
	tests := []struct {
		name string
		spec *specs.Spec
		want func(r Request) bool
	}{
		{"exact CPU list", withAnnotations(nil, "runphi.io/cpus", "4-5"),
			func(r Request) bool { return slices.Equal(r.CPUs, []int{4, 5}) && r.NumCPUs == 2 }},
		{"CPU list wins over a quota", withAnnotations(specWith(&specs.LinuxCPU{Quota: ptr[int64](300000)}, nil), "runphi.io/cpus", "7"),
			func(r Request) bool { return slices.Equal(r.CPUs, []int{7}) && r.NumCPUs == 1 }},
		{"CPU list equal to the cpuset", withAnnotations(specWith(&specs.LinuxCPU{Cpus: "6,8"}, nil), "runphi.io/cpus", "6,8"),
			func(r Request) bool { return slices.Equal(r.CPUs, []int{6, 8}) }},
		{"dedicated UART", withAnnotations(nil, "runphi.io/uart", "dedicated"), func(r Request) bool { return r.UART == UARTDedicated }},
		{"no UART", withAnnotations(nil, "runphi.io/uart", "none"), func(r Request) bool { return r.UART == UARTNone }},
		{"network off", withAnnotations(nil, "runphi.io/network", "off"), func(r Request) bool { return r.Network == NetworkOff }},
		{"network on", withAnnotations(nil, "runphi.io/network", "ON"), func(r Request) bool { return r.Network == NetworkOn }},
		{"links", withAnnotations(nil, "runphi.io/shmem-link", "sensor, actuator"),
			func(r Request) bool { return slices.Equal(r.Links, []string{"sensor", "actuator"}) }},
		{"other prefixes are ignored", withAnnotations(nil, "io.kubernetes.cri.sandbox-id", "0xabc", "org.runphi.runtime", "runphi"),
			func(r Request) bool { return r.CPUs == nil && r.UART == UARTDefault && r.Network == NetworkDefault }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := RequestFromSpec(tt.spec, b)
			if err != nil {
				t.Fatalf("RequestFromSpec: %v", err)
			}
			if !tt.want(req) {
				t.Errorf("request %+v", req)
			}
		})
	}
}

func TestRequestAnnotationErrors(t *testing.T) {
	b := mustBoard(t)
	tests := []struct {
		name string
		spec *specs.Spec
		is   func(error) bool
		text string
	}{
		{"an address as a value", withAnnotations(nil, "runphi.io/cpus", "0x4"), errdefs.IsPermissionDenied, "never addresses"},
		{"an address key", withAnnotations(nil, "runphi.io/ram-base", "1879048192"), errdefs.IsPermissionDenied, "never addresses"},
		{"an address in a link", withAnnotations(nil, "runphi.io/shmem-link", "peer@0x7e000000"), errdefs.IsPermissionDenied, "never addresses"},
		{"unknown key", withAnnotations(nil, "runphi.io/colour", "blue"), errdefs.IsInvalidArgument, "unknown runphi annotation"},
		{"CPU kept for Linux", withAnnotations(nil, "runphi.io/cpus", "1-2"), errdefs.IsInvalidArgument, "CPU 1 is not available to partitions"},
		{"CPU list against a different cpuset", withAnnotations(specWith(&specs.LinuxCPU{Cpus: "2"}, nil), "runphi.io/cpus", "3"),
			errdefs.IsInvalidArgument, "differs from annotation runphi.io/cpus"},
		{"empty CPU list", withAnnotations(nil, "runphi.io/cpus", ""), errdefs.IsInvalidArgument, "names no CPU"},
		{"bad UART mode", withAnnotations(nil, "runphi.io/uart", "loud"), errdefs.IsInvalidArgument, `want "shared", "dedicated" or "none"`},
		{"bad network value", withAnnotations(nil, "runphi.io/network", "maybe"), errdefs.IsInvalidArgument, `want "on" or "off"`},
		{"a link named twice", withAnnotations(nil, "runphi.io/shmem-link", "a,a"), errdefs.IsInvalidArgument, "twice"},
		{"a CPU named twice", withAnnotations(nil, "runphi.io/cpus", "3,3"), errdefs.IsInvalidArgument,
			`annotation runphi.io/cpus="3,3": names CPU 3 twice`},
		{"a CPU named twice by overlapping ranges", withAnnotations(nil, "runphi.io/cpus", "2-4,4-5"), errdefs.IsInvalidArgument,
			`annotation runphi.io/cpus="2-4,4-5": names CPU 4 twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := RequestFromSpec(tt.spec, b)
			if err == nil || !tt.is(err) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %v, want one saying %q", err, tt.text)
			}
		})
	}
}
