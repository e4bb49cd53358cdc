package hostview

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// IOMemRange is one top-level resource of /proc/iomem.
type IOMemRange struct {
	Start, End uint64 // inclusive end, as the kernel prints it
	Name       string
}

// ReadSystemRAM returns the "System RAM" ranges of /proc/iomem (the RAM
// Linux manages). hidden is set when every address reads as zero: the
// kernel shows real addresses to root (CAP_SYS_ADMIN) only.
func ReadSystemRAM(path string) (ram []IOMemRange, hidden bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	all, err := ParseIOMem(string(data))
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	hidden = len(all) > 0
	for _, r := range all {
		if r.Start != 0 || r.End != 0 {
			hidden = false
		}
		if r.Name == "System RAM" {
			ram = append(ram, r)
		}
	}
	return ram, hidden, nil
}

// ParseIOMem parses the top-level lines of /proc/iomem
// ("40000000-bfffffff : System RAM"); nested (indented) lines are skipped.
func ParseIOMem(text string) ([]IOMemRange, error) {
	var out []IOMemRange
	for i, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == ' ' {
			continue
		}
		span, name, ok := strings.Cut(line, " : ")
		lo, hi, ok2 := strings.Cut(span, "-")
		if !ok || !ok2 {
			return nil, fmt.Errorf("line %d %q: want START-END : NAME", i+1, line)
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("line %d %q: addresses are not hexadecimal", i+1, line)
		}
		out = append(out, IOMemRange{Start: start, End: end, Name: name})
	}
	return out, nil
}
