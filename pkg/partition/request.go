package partition

import (
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// DefaultMemory is the partition RAM when the spec sets no memory limit
// (runPHI's default).
const DefaultMemory = 64 << 20

// defaultCFSPeriod is the kernel's default cpu.cfs_period_us, used when a
// spec sets a quota without a period.
const defaultCFSPeriod = 100000

// Request is what one container asks for: sizes only, never addresses.
type Request struct {
	// CPUs is the explicit CPU list (linux.resources.cpu.cpus), ascending;
	// nil lets the allocator choose NumCPUs CPUs.
	CPUs []int
	// NumCPUs is the number of CPUs, len(CPUs) when CPUs is set.
	NumCPUs int
	// Memory is the partition RAM in bytes, a multiple of the board's
	// granule.
	Memory uint64
}

// RequestFromSpec reads the resources a container asks for from its OCI
// spec, for the board b:
//   - CPUs: linux.resources.cpu.cpus (a cpuset such as "2-3,5") when set,
//     which must name partition CPUs of the board; else
//     ceil(linux.resources.cpu.quota / period) (period defaults to the
//     kernel's 100000 µs; Kubernetes' limits.cpu arrives this way); else 1.
//     A quota of 0 or below means "no limit" and gives the default.
//   - memory: linux.resources.memory.limit in bytes, rounded up to the
//     board's granule; 64 MiB when unset, 0 or -1 ("unlimited": a partition
//     cannot be unlimited).
//
// Values no container could mean, and sizes the board could never give (more
// RAM than its whole pool, more CPUs than it has for partitions), are
// errdefs.ErrInvalidArgument naming the spec field. Sizes the board cannot
// fit now, because other partitions hold the room, are the allocator's
// business (errdefs.ErrResourceExhausted).
func RequestFromSpec(spec *specs.Spec, b *Board) (Request, error) {
	req := Request{NumCPUs: 1, Memory: alignUp(DefaultMemory, b.Granule)}
	if spec == nil || spec.Linux == nil || spec.Linux.Resources == nil {
		return req, nil
	}
	res := spec.Linux.Resources

	if cpu := res.CPU; cpu != nil {
		switch {
		case cpu.Cpus != "":
			cpus, err := jailhouse.ParseCPUList(cpu.Cpus)
			if err != nil {
				return Request{}, specError("linux.resources.cpu.cpus", cpu.Cpus, err.Error())
			}
			for _, c := range cpus {
				if !slices.Contains(b.PartitionCPUs, c) {
					return Request{}, specError("linux.resources.cpu.cpus", cpu.Cpus,
						fmt.Sprintf("CPU %d is not available to partitions on board %s (partitions may use %s)",
							c, b.Name, jailhouse.FormatCPUList(b.PartitionCPUs)))
				}
			}
			req.CPUs, req.NumCPUs = cpus, len(cpus)
		case cpu.Quota != nil && *cpu.Quota > 0:
			period := uint64(defaultCFSPeriod)
			if cpu.Period != nil {
				period = *cpu.Period
			}
			if period == 0 {
				return Request{}, specError("linux.resources.cpu.period", "0", "a quota needs a non-zero period")
			}
			q := uint64(*cpu.Quota)
			n := q / period
			if q%period != 0 {
				n++
			}
			if n > jailhouse.MaxCPUs {
				return Request{}, specError("linux.resources.cpu.quota", fmt.Sprint(*cpu.Quota),
					fmt.Sprintf("asks for %d CPUs (period %d), more than Jailhouse can address", n, period))
			}
			req.NumCPUs = int(n)
		}
	}

	if mem := res.Memory; mem != nil && mem.Limit != nil {
		switch limit := *mem.Limit; {
		case limit < -1:
			return Request{}, specError("linux.resources.memory.limit", fmt.Sprint(limit), "a negative limit other than -1 (unlimited)")
		case limit > 0:
			req.Memory = alignUp(uint64(limit), b.Granule)
		}
	}

	// Sizes the board could never give are the spec's fault, not a lack of
	// free resources: no amount of waiting makes them fit.
	if whole := b.Pool.End - alignUp(b.Pool.Start, b.Granule); req.Memory > whole {
		return Request{}, specError("linux.resources.memory.limit", formatSize(req.Memory),
			fmt.Sprintf("more than board %s's whole partition pool %s (%s)", b.Name, b.Pool, formatSize(whole)))
	}
	if req.NumCPUs > len(b.PartitionCPUs) {
		return Request{}, specError("linux.resources.cpu", fmt.Sprintf("%d CPUs", req.NumCPUs),
			fmt.Sprintf("more than the %d CPUs board %s has for partitions (%s)",
				len(b.PartitionCPUs), b.Name, jailhouse.FormatCPUList(b.PartitionCPUs)))
	}
	return req, nil
}

func specError(field, value, problem string) error {
	return fmt.Errorf("spec %s %q: %s: %w", field, value, problem, errdefs.ErrInvalidArgument)
}
