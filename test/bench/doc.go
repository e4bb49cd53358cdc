//go:build bench

// Command bench is `make bench` (issue 8): it starts one private containerd
// 1.6.20 with CRI, runs partitions on the simulator and busybox containers
// on io.containerd.runc.v2 side by side, interleaved A B A B, and writes
// what it measured into docs/performance.md between the markers
// "<!-- make bench: begin -->" and "<!-- make bench: end -->", leaving the
// rest of the file (the analysis written by hand) alone.
//
// It measures P1 start latency (ctr run -d, the task API without ctr, and
// CRI through crictl when it is installed), P2 the shims' RSS and PSS (one
// task, and grouped shims of 1, 4 and 8), P4 churn (create → start → kill →
// delete cycles through the task API), P5 console throughput and the RSS of
// a shim whose reader stalls, and the shim's own phase timing log (debug
// level) for one partition start. P3 is the Go benchmarks of pkg/partition
// and pkg/jailhouse, which it runs too.
//
// It needs root, `make build` and `make deps`, and the machine to itself as
// far as possible: it reports the load average it saw. Nothing is asserted;
// a failure to measure is an error.
package main
