package sim

// What a commit changed, for the generation file (gen.go): the cells whose
// polls may now answer differently, and whether what every cell's polls
// see changed. A poll about a cell (Driver.Cell reads its sysfs directory,
// a console's look at its cell reads its state record) sees:
//
//   - its cell's record in the state (state, CPUs, failed CPUs, starts,
//     console indices, its inmate's program), and the statistics of its
//     CPUs: the cell's view (cellViews). A cell created or destroyed has a
//     view on one side only, so it changed too. The root cell, which
//     Driver.Cell also answers for, has a view of its CPUs and their
//     statistics.
//   - what the host renders for every cell or decides for all of them:
//     enabled, the architecture, nr_cpu_ids, the root's name, the system
//     flags, injected faults (sharedView). Other host-wide fields are
//     left out because no cell poll reads them: the hypervisor console
//     ring, the memory pools, the root's PCI devices and ivshmem peers
//     (which change as other cells come and go), the next serial.
//
// Views are compared as JSON, which is what the state file holds: a change
// that leaves the encoding equal changes no answer.

import (
	"bytes"
	"encoding/json"
)

// cellViews returns the view of every cell of s, root included, by name.
func cellViews(s *hostState) map[string][]byte {
	views := make(map[string][]byte, len(s.Cells)+1)
	type view struct {
		Cell  *cellState `json:"cell,omitempty"`
		CPUs  []int      `json:"cpus,omitempty"` // the root's
		Stats []*cpuStats
	}
	stats := func(cpus []int) []*cpuStats {
		out := make([]*cpuStats, len(cpus))
		for i, cpu := range cpus {
			out[i] = s.Stats[cpu]
		}
		return out
	}
	put := func(name string, v view) {
		b, err := json.Marshal(v)
		if err != nil {
			b = nil // compares unequal to anything encoded: changed
		}
		views[name] = b
	}
	if s.System != nil {
		put(s.System.RootName, view{CPUs: s.System.RootCPUs, Stats: stats(s.System.RootCPUs)})
	}
	for _, c := range s.Cells {
		put(c.Name, view{Cell: c, Stats: stats(c.CPUs)})
	}
	return views
}

// sharedView encodes what every cell's polls see of s.
func sharedView(s *hostState) []byte {
	v := *s
	v.Cells, v.Stats, v.Ring, v.NextSerial = nil, nil, ring{}, 0
	if s.System != nil {
		sys := *s.System
		sys.RootCPUs, sys.RootPCI, sys.Pool, sys.Links = nil, nil, pools{}, nil
		v.System = &sys
	}
	b, err := json.Marshal(&v)
	if err != nil {
		return nil
	}
	return b
}

// changes returns the cell slots (genSlot) whose views differ between
// prev and next, and whether their shared views differ. prev nil means
// what was before is unknown: everything changed.
func changes(prev, next *hostState) (slots []int, structural bool) {
	if prev == nil {
		return nil, true
	}
	if a, b := sharedView(prev), sharedView(next); a == nil || b == nil || !bytes.Equal(a, b) {
		return nil, true
	}
	before, after := cellViews(prev), cellViews(next)
	seen := map[int]bool{}
	add := func(name string) {
		if i := genSlot(name); !seen[i] {
			seen[i] = true
			slots = append(slots, i)
		}
	}
	for name, a := range before {
		if b, ok := after[name]; !ok || a == nil || !bytes.Equal(a, b) {
			add(name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			add(name)
		}
	}
	return slots, false
}
