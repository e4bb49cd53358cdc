package jailhouse

import (
	"fmt"
	"math/bits"
	"slices"
)

// CPUSetFromList builds a cpu bitmap of setSize bytes (bit n of byte n/8 is
// CPU n) with the given CPUs set. setSize must be a positive multiple of 8,
// because the hypervisor reads the set as 64-bit words; upstream configs
// use 8 (__u64 cpus[1]).
func CPUSetFromList(cpus []int, setSize int) ([]byte, error) {
	if setSize <= 0 || setSize%8 != 0 {
		return nil, fmt.Errorf("cpu set size %d bytes: want a positive multiple of 8: %w", setSize, ErrBadCount)
	}
	set := make([]byte, setSize)
	for _, cpu := range cpus {
		if cpu < 0 || cpu >= setSize*8 {
			return nil, fmt.Errorf("cpu %d does not fit a %d-byte cpu set (cpus 0-%d): %w",
				cpu, setSize, setSize*8-1, ErrBadCount)
		}
		set[cpu/8] |= 1 << (cpu % 8)
	}
	return set, nil
}

// CPUs lists the CPUs in c.CPUSet in ascending order.
func (c *Cell) CPUs() []int {
	var cpus []int
	for i, b := range c.CPUSet {
		for b != 0 {
			bit := bits.TrailingZeros8(b)
			cpus = append(cpus, i*8+bit)
			b &^= 1 << bit
		}
	}
	return cpus
}

// SetCPUs replaces c.CPUSet with a bitmap of exactly cpus. It keeps the
// current set size when that is a multiple of 8 and large enough, and
// otherwise uses the smallest multiple of 8 bytes that holds the highest CPU.
func (c *Cell) SetCPUs(cpus []int) error {
	size := len(c.CPUSet)
	if size%8 != 0 {
		size = 0
	}
	if len(cpus) > 0 {
		need := (slices.Max(cpus)/64 + 1) * 8
		size = max(size, need)
	}
	size = max(size, 8)
	set, err := CPUSetFromList(cpus, size)
	if err != nil {
		return fmt.Errorf("cell %q: %w", c.Name, err)
	}
	c.CPUSet = set
	return nil
}
