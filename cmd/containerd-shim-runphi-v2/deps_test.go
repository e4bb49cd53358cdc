package main

import (
	"os/exec"
	"strings"
	"testing"
)

// releaseTags are the build tags of the shipped shim (Makefile BUILD_TAGS).
const releaseTags = "no_grpc"

// TestReleaseBuildLeavesOutGRPC keeps the shipped shim small. Every shim
// process maps nearly all of its binary, so the binary's size is most of
// its RSS; gRPC and what it pulls in (TLS, HTTP/2, html/template, whose
// reflection makes the linker keep every exported method) doubled it once,
// through containerd's generated task v3 stubs. containerd builds its own
// shims with no_grpc for the same reason.
func TestReleaseBuildLeavesOutGRPC(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	out, err := exec.Command(goBin, "list", "-tags", releaseTags, "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -tags %s -deps: %v\n%s", releaseTags, err, out)
	}
	banned := map[string]string{
		"google.golang.org/grpc": "the gRPC runtime (the shim serves ttrpc only)",
		"net/http":               "an HTTP stack",
		"html/template":          "templates, whose reflection keeps every exported method",
		"crypto/tls":             "TLS",
	}
	for _, pkg := range strings.Fields(string(out)) {
		if why, ok := banned[pkg]; ok {
			t.Errorf("the release shim links %s (%s); find the import with `go list -tags %s -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/containerd-shim-runphi-v2`",
				pkg, why, releaseTags)
		}
	}
}
