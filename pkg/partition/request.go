package partition

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// DefaultMemory is the partition RAM when the spec sets no memory limit
// (runPHI's default).
const DefaultMemory = 64 << 20

// defaultCFSPeriod is the kernel's default cpu.cfs_period_us, used when a
// spec sets a quota without a period.
const defaultCFSPeriod = 100000

// UARTMode says which serial port, if any, a partition maps (the
// runphi.io/uart annotation). Where the console stream runphi reads comes
// from is another matter: the boot description's console key (console.go).
type UARTMode int

const (
	// UARTDefault is UARTShared on a board with a shared UART, else
	// UARTNone.
	UARTDefault UARTMode = iota
	// UARTShared maps the board's UART shared with root Linux: output
	// only, its interrupt stays with the root cell.
	UARTShared
	// UARTDedicated maps a UART of the partition's own, with its
	// interrupt; one partition at a time.
	UARTDedicated
	// UARTNone maps no UART.
	UARTNone
)

var uartModeNames = map[UARTMode]string{
	UARTDefault: "default", UARTShared: "shared", UARTDedicated: "dedicated", UARTNone: "none",
}

// String returns the annotation spelling of the mode.
func (m UARTMode) String() string { return uartModeNames[m] }

// NetworkMode is the runphi.io/network choice.
type NetworkMode int

const (
	// NetworkDefault follows the boot description's net key.
	NetworkDefault NetworkMode = iota
	// NetworkOn asks for an ivshmem-net link to the root cell.
	NetworkOn
	// NetworkOff asks for none: no regions and no PCI device.
	NetworkOff
)

// Request is what one container asks for: sizes and options only, never
// addresses.
type Request struct {
	// CPUs is the explicit CPU list (linux.resources.cpu.cpus or
	// runphi.io/cpus), ascending; nil lets the allocator choose NumCPUs
	// CPUs.
	CPUs []int
	// NumCPUs is the number of CPUs, len(CPUs) when CPUs is set.
	NumCPUs int
	// Memory is the partition RAM in bytes, a multiple of the board's
	// granule.
	Memory uint64
	// Loader asks for the board's loader area (RAM0 at cell address 0)
	// besides Memory; Create sets it when the RAM does not start at 0.
	Loader bool
	// RPUs is the number of Cortex-R5 RPUs (boot description rpu_req).
	RPUs int
	// UART is runphi.io/uart.
	UART UARTMode
	// Network is runphi.io/network; Net is the resolved choice the
	// allocator acts on (Create resolves it against the boot description).
	Network NetworkMode
	Net     bool
	// Links are the container ids (same namespace) runphi.io/shmem-link
	// names: one partition-to-partition shared-memory link each.
	Links []string

	// explicitMemory is set when the spec gave a memory limit.
	explicitMemory bool
	// exact is set for a prebuilt cell: exactly these resources or nothing.
	exact *exactRequest
}

// The annotations a container may set (docs/annotations.md).
const (
	AnnotationPrefix    = "runphi.io/"
	AnnotationCPUs      = "runphi.io/cpus"
	AnnotationUART      = "runphi.io/uart"
	AnnotationNetwork   = "runphi.io/network"
	AnnotationShmemLink = "runphi.io/shmem-link"
)

// annotations lists the known runphi.io/ keys. Any other key under the
// prefix is refused, so a misspelt option never silently does nothing.
var annotations = []string{AnnotationCPUs, AnnotationUART, AnnotationNetwork, AnnotationShmemLink}

// addressLike matches values and keys that name a physical or cell address:
// hex literals, and keys about bases and addresses. An image and a pod may
// ask for sizes and options, never for where things go.
var (
	addressValue = regexp.MustCompile(`(?i)(^|[^0-9a-z])0x[0-9a-f]+`)
	addressKey   = regexp.MustCompile(`(?i)(addr|address|base|phys|virt|offset|location|start)`)
)

// RequestFromSpec reads the resources a container asks for from its OCI
// spec, for the board b:
//   - CPUs: linux.resources.cpu.cpus (a cpuset such as "2-3,5") or the
//     runphi.io/cpus annotation when set (both set must agree), which must
//     name partition CPUs of the board; else
//     ceil(linux.resources.cpu.quota / period) (period defaults to the
//     kernel's 100000 µs; Kubernetes' limits.cpu arrives this way); else 1.
//     A quota of 0 or below means "no limit" and gives the default.
//   - memory: linux.resources.memory.limit in bytes, rounded up to the
//     board's granule; 64 MiB when unset, 0 or -1 ("unlimited": a partition
//     cannot be unlimited).
//   - options: the runphi.io/ annotations (docs/annotations.md).
//
// Values no container could mean, and sizes the board could never give (more
// RAM than its largest pool, more CPUs than it has for partitions), are
// errdefs.ErrInvalidArgument naming the spec field. An annotation that names
// an address is errdefs.ErrPermissionDenied. Sizes the board cannot fit now,
// because other partitions hold the room, are the allocator's business
// (errdefs.ErrResourceExhausted).
func RequestFromSpec(spec *specs.Spec, b *Board) (Request, error) {
	req := Request{NumCPUs: 1, Memory: alignUp(DefaultMemory, b.Granule)}
	if spec == nil {
		return req, nil
	}
	if err := req.readAnnotations(spec.Annotations, b); err != nil {
		return Request{}, err
	}
	if spec.Linux != nil && spec.Linux.Resources != nil {
		if err := req.readResources(spec.Linux.Resources, b); err != nil {
			return Request{}, err
		}
	}

	// Sizes the board could never give are the spec's fault, not a lack of
	// free resources: no amount of waiting makes them fit.
	if largest := b.largestBlock(); req.Memory > largest {
		return Request{}, specError("linux.resources.memory.limit", formatSize(req.Memory),
			fmt.Sprintf("more than board %s's largest partition pool holds (%s in %s)", b.Name, formatSize(largest), formatRanges(b.Pools)))
	}
	if req.NumCPUs > len(b.PartitionCPUs) {
		return Request{}, specError("linux.resources.cpu", fmt.Sprintf("%d CPUs", req.NumCPUs),
			fmt.Sprintf("more than the %d CPUs board %s has for partitions (%s)",
				len(b.PartitionCPUs), b.Name, jailhouse.FormatCPUList(b.PartitionCPUs)))
	}
	return req, nil
}

// largestBlock is the largest granule-aligned block any pool holds.
func (b *Board) largestBlock() uint64 {
	var n uint64
	for _, p := range b.Pools {
		if s := alignUp(p.Start, b.Granule); s < p.End {
			n = max(n, (p.End-s)&^(b.Granule-1))
		}
	}
	return n
}

func (req *Request) readResources(res *specs.LinuxResources, b *Board) error {
	if cpu := res.CPU; cpu != nil {
		switch {
		case cpu.Cpus != "":
			cpus, err := partitionCPUList(cpu.Cpus, b, func(problem string) error {
				return specError("linux.resources.cpu.cpus", cpu.Cpus, problem)
			})
			if err != nil {
				return err
			}
			if req.CPUs != nil && !slices.Equal(req.CPUs, cpus) {
				return specError("linux.resources.cpu.cpus", cpu.Cpus,
					fmt.Sprintf("differs from annotation %s %q; set one, or both alike", AnnotationCPUs, jailhouse.FormatCPUList(req.CPUs)))
			}
			req.CPUs, req.NumCPUs = cpus, len(cpus)
		case req.CPUs != nil:
			// The annotation's exact list wins over a quota.
		case cpu.Quota != nil && *cpu.Quota > 0:
			period := uint64(defaultCFSPeriod)
			if cpu.Period != nil {
				period = *cpu.Period
			}
			if period == 0 {
				return specError("linux.resources.cpu.period", "0", "a quota needs a non-zero period")
			}
			q := uint64(*cpu.Quota)
			n := q / period
			if q%period != 0 {
				n++
			}
			if n > jailhouse.MaxCPUs {
				return specError("linux.resources.cpu.quota", fmt.Sprint(*cpu.Quota),
					fmt.Sprintf("asks for %d CPUs (period %d), more than Jailhouse can address", n, period))
			}
			req.NumCPUs = int(n)
		}
	}

	if mem := res.Memory; mem != nil && mem.Limit != nil {
		switch limit := *mem.Limit; {
		case limit < -1:
			return specError("linux.resources.memory.limit", fmt.Sprint(limit), "a negative limit other than -1 (unlimited)")
		case limit > 0:
			if uint64(limit) > ^uint64(0)-b.Granule {
				return specError("linux.resources.memory.limit", fmt.Sprint(limit), "does not fit any address space")
			}
			req.Memory = alignUp(uint64(limit), b.Granule)
			req.explicitMemory = true
		}
	}
	return nil
}

// partitionCPUList parses a cpulist that must name partition CPUs of b,
// each once; fail turns a problem into the error naming the field.
func partitionCPUList(value string, b *Board, fail func(problem string) error) ([]int, error) {
	var cpus []int
	// Item by item: ParseCPUList folds "3,3" into "3", and a list naming a
	// CPU twice is a typo for some other list, not a request for CPU 3.
	for _, item := range strings.Split(value, ",") {
		got, err := jailhouse.ParseCPUList(item)
		if err != nil {
			return nil, fail(err.Error())
		}
		for _, c := range got {
			if slices.Contains(cpus, c) {
				return nil, fail(fmt.Sprintf("names CPU %d twice", c))
			}
		}
		cpus = append(cpus, got...)
	}
	if len(cpus) == 0 {
		return nil, fail("names no CPU")
	}
	slices.Sort(cpus)
	for _, c := range cpus {
		if !slices.Contains(b.PartitionCPUs, c) {
			return nil, fail(fmt.Sprintf("CPU %d is not available to partitions on board %s (partitions may use %s; the others stay with root Linux)",
				c, b.Name, jailhouse.FormatCPUList(b.PartitionCPUs)))
		}
	}
	return cpus, nil
}

// readAnnotations applies the runphi.io/ annotations.
func (req *Request) readAnnotations(ann map[string]string, b *Board) error {
	keys := make([]string, 0, len(ann))
	for k := range ann {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := ann[k]
		if addressValue.MatchString(v) || addressKey.MatchString(strings.TrimPrefix(k, AnnotationPrefix)) {
			return fmt.Errorf("annotation %s=%q: partitions ask for sizes and options, never addresses; the allocator places everything: %w",
				k, v, errdefs.ErrPermissionDenied)
		}
		if !slices.Contains(annotations, k) {
			return annotationError(k, v, fmt.Sprintf("unknown runphi annotation (known: %s)", strings.Join(annotations, ", ")))
		}
		switch k {
		case AnnotationCPUs:
			cpus, err := partitionCPUList(v, b, func(problem string) error { return annotationError(k, v, problem) })
			if err != nil {
				return err
			}
			req.CPUs, req.NumCPUs = cpus, len(cpus)
		case AnnotationUART:
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "shared":
				req.UART = UARTShared
			case "dedicated":
				req.UART = UARTDedicated
			case "none":
				req.UART = UARTNone
			default:
				return annotationError(k, v, `want "shared", "dedicated" or "none"`)
			}
		case AnnotationNetwork:
			switch strings.ToLower(strings.TrimSpace(v)) {
			case "on", "true", "yes":
				req.Network = NetworkOn
			case "off", "false", "no", "none":
				req.Network = NetworkOff
			default:
				return annotationError(k, v, `want "on" or "off"`)
			}
		case AnnotationShmemLink:
			for _, peer := range strings.Split(v, ",") {
				peer = strings.TrimSpace(peer)
				if peer == "" {
					continue
				}
				if slices.Contains(req.Links, peer) {
					return annotationError(k, v, fmt.Sprintf("names %q twice", peer))
				}
				req.Links = append(req.Links, peer)
			}
			if len(req.Links) == 0 {
				return annotationError(k, v, "names no container")
			}
		}
	}
	return nil
}

func annotationError(key, value, problem string) error {
	return fmt.Errorf("annotation %s=%q: %s: %w", key, value, problem, errdefs.ErrInvalidArgument)
}

func specError(field, value, problem string) error {
	return fmt.Errorf("spec %s %q: %s: %w", field, value, problem, errdefs.ErrInvalidArgument)
}

// resolveNetwork decides whether the partition gets an ivshmem-net link to
// the root cell: runphi.io/network when set, else the boot description's
// net key (absent means on, as in runPHI). A board without an ivshmem
// window gives none, which is an error only when the annotation asked.
func resolveNetwork(ctx context.Context, b *Board, req Request, d *BootDescription) (bool, error) {
	switch req.Network {
	case NetworkOff:
		return false, nil
	case NetworkOn:
		if b.IVSHMEM.Slots == 0 {
			return false, fmt.Errorf("annotation %s=on: board %s has no ivshmem window for network links: %w",
				AnnotationNetwork, b.Name, errdefs.ErrInvalidArgument)
		}
		return true, nil
	}
	if d != nil && !d.NetEnabled {
		return false, nil
	}
	if b.IVSHMEM.Slots == 0 {
		log.G(ctx).WithField("board", b.Name).Info("board has no ivshmem window: the partition gets no network link")
		return false, nil
	}
	return true, nil
}
