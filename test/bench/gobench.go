//go:build bench

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// goBenchResult is one Go benchmark over its -count runs.
type goBenchResult struct {
	pkg, name      string
	nsOp           samples
	bytesOp, alloc float64 // the same in every run
}

// goBenchPackages hold the P3 benchmarks (*_bench_test.go).
var goBenchPackages = []string{"./pkg/partition/", "./pkg/jailhouse/"}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op(?:\s+[0-9.]+ MB/s)?\s+([0-9.]+) B/op\s+([0-9.]+) allocs/op`)

// runGoBenchmarks runs the P3 benchmarks count times each and keeps every
// run's ns/op.
func runGoBenchmarks(root string, count int) ([]goBenchResult, error) {
	args := append([]string{"test", "-run", "^$", "-bench", ".", "-benchmem", "-count", strconv.Itoa(count), "-benchtime", "300ms"}, goBenchPackages...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	var res []goBenchResult
	index := map[string]int{}
	pkg := ""
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = path.Base(p)
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := pkg + "." + m[1]
		i, ok := index[key]
		if !ok {
			i = len(res)
			index[key] = i
			res = append(res, goBenchResult{pkg: pkg, name: strings.TrimPrefix(m[1], "Benchmark")})
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		res[i].nsOp = append(res[i].nsOp, ns)
		res[i].bytesOp, _ = strconv.ParseFloat(m[3], 64)
		res[i].alloc, _ = strconv.ParseFloat(m[4], 64)
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("go %s printed no benchmark results:\n%s", strings.Join(args, " "), out.String())
	}
	return res, nil
}
