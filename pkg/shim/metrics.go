package shim

import (
	"fmt"
	"time"

	"github.com/containerd/cgroups/v3"
	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// A partition has no host cgroup, but CRI (container stats, pod metrics,
// the OOM check) and containerd's metrics collector accept only the two
// cgroup Metrics types (io.containerd.cgroups.v1.Metrics and .v2.Metrics)
// and error on anything else. So a partition is described in the cgroup
// terms that hold for it:
//
//   - CPU: the cell owns its CPUs outright from Start until it stops, so its
//     usage is (number of cell CPUs) × (time running), every CPU busy from the
//     host's point of view. Guest time is reported as user time.
//   - memory: the cell's RAM is taken from Linux when the cell is created and
//     never swapped or reclaimed, so usage, limit, maximum and RSS are all the
//     cell's RAM; nothing of it is inactive file cache, so CRI's working set
//     is the whole RAM too.
//
// The type follows the host's cgroup mode, as the runc containers in the
// same pod do: v1 Metrics on a legacy or hybrid host (runc puts containers
// in the v1 hierarchies there), v2 on a unified one.
//
// Jailhouse's own counters (cells/<id>/statistics: vmexits_total,
// vmexits_mmio, …) have no field in either type, and CRI drops any other
// type, so they are not sent through Stats; docs/kubernetes.md says where to
// read them.

// cellUsage is what one partition uses, seen from the host.
type cellUsage struct {
	cpus    []int         // the cell's CPUs
	ram     uint64        // bytes of cell RAM
	running time.Duration // time since Start, up to the exit
}

// hostCgroupV2 reports whether the host runs the unified cgroup hierarchy
// only, which is when containerd expects v2 Metrics.
func hostCgroupV2() bool { return cgroups.Mode() == cgroups.Unified }

// metrics encodes u as the cgroup Metrics type the host's mode calls for.
func (u cellUsage) metrics(v2 bool) (*anypb.Any, error) {
	var m any = u.v1()
	if v2 {
		m = u.v2()
	}
	a, err := typeurl.MarshalAnyToProto(m)
	if err != nil {
		return nil, fmt.Errorf("encode partition metrics: %w", err)
	}
	return a, nil
}

// cpuNanos is the CPU time the cell's CPUs have spent, in nanoseconds.
func (u cellUsage) cpuNanos() uint64 {
	if u.running < 0 {
		return 0
	}
	return uint64(len(u.cpus)) * uint64(u.running.Nanoseconds())
}

func (u cellUsage) v1() *cgroupsv1.Metrics {
	total := u.cpuNanos()
	// cpuacct.usage_percpu has one entry per host CPU, by number.
	var perCPU []uint64
	for _, c := range u.cpus {
		if c < 0 {
			continue
		}
		for len(perCPU) <= c {
			perCPU = append(perCPU, 0)
		}
		perCPU[c] = total / uint64(len(u.cpus))
	}
	return &cgroupsv1.Metrics{
		CPU: &cgroupsv1.CPUStat{Usage: &cgroupsv1.CPUUsage{Total: total, User: total, PerCPU: perCPU}},
		Memory: &cgroupsv1.MemoryStat{
			RSS:                     u.ram,
			TotalRSS:                u.ram,
			HierarchicalMemoryLimit: u.ram,
			Usage:                   &cgroupsv1.MemoryEntry{Usage: u.ram, Limit: u.ram, Max: u.ram},
		},
	}
}

func (u cellUsage) v2() *cgroupsv2.Metrics {
	usec := u.cpuNanos() / 1000
	return &cgroupsv2.Metrics{
		CPU: &cgroupsv2.CPUStat{UsageUsec: usec, UserUsec: usec},
		Memory: &cgroupsv2.MemoryStat{
			Anon:       u.ram,
			Usage:      u.ram,
			UsageLimit: u.ram,
			MaxUsage:   u.ram,
		},
	}
}
