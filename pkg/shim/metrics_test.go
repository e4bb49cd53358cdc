package shim

import (
	"context"
	"testing"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestCellUsageMetrics(t *testing.T) {
	cases := []struct {
		name      string
		usage     cellUsage
		cpuNanos  uint64
		perCPU    []uint64 // v1, indexed by host CPU
		memory    uint64
		wantTypes [2]string
	}{
		{"two CPUs running 1.5 s use 3 CPU-seconds",
			cellUsage{cpus: []int{2, 3}, ram: 64 << 20, running: 1500 * time.Millisecond},
			3e9, []uint64{0, 0, 1.5e9, 1.5e9}, 64 << 20, [2]string{}},
		{"a created cell has used no CPU but holds its RAM",
			cellUsage{cpus: []int{1}, ram: 128 << 20}, 0, []uint64{0, 0}, 128 << 20, [2]string{}},
		{"a negative duration (clock step) counts as none",
			cellUsage{cpus: []int{1}, ram: 1 << 20, running: -time.Second}, 0, []uint64{0, 0}, 1 << 20, [2]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v1 := tc.usage.v1()
			if got := v1.GetCPU().GetUsage().GetTotal(); got != tc.cpuNanos {
				t.Errorf("v1 cpu total %d, want %d", got, tc.cpuNanos)
			}
			if got := v1.GetCPU().GetUsage().GetPerCPU(); !equalUints(got, tc.perCPU) {
				t.Errorf("v1 per-CPU %v, want %v", got, tc.perCPU)
			}
			// CRI's working set is usage minus inactive file pages.
			if m := v1.GetMemory(); m.GetUsage().GetUsage() != tc.memory || m.GetTotalInactiveFile() != 0 || m.GetUsage().GetLimit() != tc.memory {
				t.Errorf("v1 memory %v, want usage and limit %d and no inactive file pages", m, tc.memory)
			}
			v2 := tc.usage.v2()
			if got := v2.GetCPU().GetUsageUsec(); got != tc.cpuNanos/1000 {
				t.Errorf("v2 cpu usage %d µs, want %d", got, tc.cpuNanos/1000)
			}
			if m := v2.GetMemory(); m.GetUsage() != tc.memory || m.GetInactiveFile() != 0 || m.GetUsageLimit() != tc.memory {
				t.Errorf("v2 memory %v, want usage and limit %d", m, tc.memory)
			}
		})
	}
}

func equalUints(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Stats sends the cgroup Metrics type of the host's mode, the only types
// CRI accepts, with the partition's numbers: CPU time grows with the time
// the cell runs, on every cell CPU, and stops at the exit; memory is the
// cell's RAM (64 MiB by default).
func TestServiceStats(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		name := map[bool]string{false: "cgroup v1 or hybrid host", true: "cgroup v2 host"}[v2]
		t.Run(name, func(t *testing.T) {
			h := newHost(t)
			h.svc.cgroupV2 = v2
			ctx := context.Background()
			bundle := h.bundle(t, "t1", partitionImage(inmateForever), "")
			if _, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle}); err != nil {
				t.Fatal(err)
			}
			cpu, mem := statsOf(t, h, v2)
			if cpu != 0 || mem != 64<<20 {
				t.Errorf("created partition: cpu %d ns, memory %d; want 0 and 64 MiB", cpu, mem)
			}
			before := time.Now()
			if _, err := h.svc.Start(ctx, &taskv3.StartRequest{ID: "t1"}); err != nil {
				t.Fatal(err)
			}
			afterStart := time.Now()
			time.Sleep(50 * time.Millisecond)
			ncpus := uint64(len(h.svc.tasks["t1"].part.Allocation().CPUs))
			lo := ncpus * uint64(time.Since(afterStart))
			cpu, mem = statsOf(t, h, v2)
			hi := ncpus * uint64(time.Since(before))
			if v2 { // microseconds on the wire
				lo, hi = lo/1000*1000, hi/1000*1000+1000
			}
			if cpu < lo || cpu > hi || mem != 64<<20 {
				t.Errorf("running partition: cpu %d ns, want %d CPUs × running time in [%d, %d]; memory %d, want 64 MiB", cpu, ncpus, lo, hi, mem)
			}

			if _, err := h.svc.Kill(ctx, &taskv3.KillRequest{ID: "t1", Signal: 9}); err != nil {
				t.Fatal(err)
			}
			if _, err := h.svc.Wait(ctx, &taskv3.WaitRequest{ID: "t1"}); err != nil {
				t.Fatal(err)
			}
			first, _ := statsOf(t, h, v2)
			time.Sleep(20 * time.Millisecond)
			if again, _ := statsOf(t, h, v2); again != first || first == 0 {
				t.Errorf("stopped partition: cpu %d then %d, want the same non-zero total after the exit", first, again)
			}
			if _, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// statsOf calls Stats and decodes the CPU usage (ns) and memory usage.
func statsOf(t *testing.T, h *host, v2 bool) (uint64, uint64) {
	t.Helper()
	resp, err := h.svc.Stats(context.Background(), &taskv3.StatsRequest{ID: "t1"})
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return decodeMetrics(t, resp.GetStats(), v2)
}

func decodeMetrics(t *testing.T, a *anypb.Any, v2 bool) (uint64, uint64) {
	t.Helper()
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		t.Fatalf("Stats type %s: %v", a.GetTypeUrl(), err)
	}
	switch m := v.(type) {
	case *cgroupsv1.Metrics:
		if v2 {
			t.Fatalf("Stats sent %s on a cgroup v2 host", a.GetTypeUrl())
		}
		return m.GetCPU().GetUsage().GetTotal(), m.GetMemory().GetUsage().GetUsage()
	case *cgroupsv2.Metrics:
		if !v2 {
			t.Fatalf("Stats sent %s on a cgroup v1 host", a.GetTypeUrl())
		}
		return m.GetCPU().GetUsageUsec() * 1000, m.GetMemory().GetUsage()
	}
	t.Fatalf("Stats sent %T (%s), which CRI rejects", v, a.GetTypeUrl())
	return 0, 0
}
