// Package e2e runs partitioned containers through real containerd daemons
// (Debian's 1.6.20 and 2.4.2 built from the Go module proxy) with the shim
// and runphi binaries from `make build`, on the Jailhouse simulator.
//
// Every test file carries the build tag e2e, so `go test ./...` stays fast
// and needs no root; `make e2e` runs the suite (see docs/testing.md). Each
// test runs once per daemon as a subtest named after the daemon's version,
// and afterwards the harness checks that nothing is left: no shim process,
// no mount, no cell besides the root cell, no ledger entry.
package e2e
