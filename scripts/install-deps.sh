#!/bin/bash
# Installs what `make demo` and `make test` need on a Debian 12 machine, as
# root, and nothing that is already there:
#   - containerd 1.6.20, ctr and runc from Debian (the daemon most users have);
#   - containerd, ctr and containerd-shim-runc-v2 v2.4.2 built with
#     `go install` into $RUNPHI_TOOLS_BIN (default /opt/runphi-tools/bin),
#     about 100 s on 2 cores the first time;
#   - nerdctl v2.2.1 built from the Go module proxy into the same directory
#     (about 60 s more), for the nerdctl test and docs/nerdctl.md;
#   - CNI plugins from Debian and crictl v1.37.0 from the Go module proxy
#     (about 30 s), for the CRI tests, and critest v1.37.0 (about 25 s) for
#     `make critest`.
# Idempotent and quiet: it prints one line per thing it installs, nothing
# when everything is present.
set -euo pipefail

CONTAINERD2_VERSION=${CONTAINERD2_VERSION:-v2.4.2}
CRI_TOOLS_VERSION=${CRI_TOOLS_VERSION:-v1.37.0}
NERDCTL_VERSION=${NERDCTL_VERSION:-v2.2.1}
TOOLS_BIN=${RUNPHI_TOOLS_BIN:-/opt/runphi-tools/bin}
export PATH=/usr/local/go/bin:$PATH
# Never let go download another toolchain: the one at /usr/local/go is new
# enough for containerd v2.4.2 (it needs go 1.26.6).
export GOTOOLCHAIN=local

say() { echo "install-deps: $*"; }
die() { echo "install-deps: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs Debian packages)"
command -v go >/dev/null || die "go not found (expected at /usr/local/go/bin/go)"

# 1. Debian packages.
missing=()
[ -x /usr/bin/containerd ] && [ -x /usr/bin/ctr ] || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /bin/busybox ] || missing+=(busybox-static)
# CNI plugins in /usr/lib/cni: the e2e daemons run CRI with a loopback
# network (host-network pods), `make critest` with a bridge.
[ -x /usr/lib/cni/loopback ] && [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
if [ ${#missing[@]} -gt 0 ]; then
	say "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. containerd v2 from the Go module proxy.
want=${CONTAINERD2_VERSION#v}
# Versions are captured before matching: `cmd | grep -q` under pipefail fails
# whenever grep exits before cmd has finished writing (SIGPIPE).
have_v2() {
	local out
	[ -x "$TOOLS_BIN/containerd" ] && [ -x "$TOOLS_BIN/ctr" ] && [ -x "$TOOLS_BIN/containerd-shim-runc-v2" ] || return 1
	out=$("$TOOLS_BIN/containerd" --version 2>/dev/null) && [[ $out == *" $want"* ]] || return 1
	out=$("$TOOLS_BIN/ctr" --version 2>/dev/null) && [[ $out == *" $want"* ]] || return 1
	out=$("$TOOLS_BIN/containerd-shim-runc-v2" -v 2>/dev/null) && [[ $out =~ Version:\ *$want ]]
}
if ! have_v2; then
	say "go install containerd $CONTAINERD2_VERSION into $TOOLS_BIN (about 100 s the first time)"
	mkdir -p "$TOOLS_BIN"
	# Run outside any module so the repository's go.mod plays no part.
	(cd / && GOBIN=$TOOLS_BIN GOFLAGS= go install \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD2_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD2_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD2_VERSION")
	have_v2 || die "containerd $CONTAINERD2_VERSION in $TOOLS_BIN does not report its version"
fi

# 3. nerdctl from the Go module proxy. `go install …@version` refuses it:
# nerdctl's go.mod replaces its test framework (mod/tigron) with a directory
# that the published module leaves out. So the module is downloaded, copied
# to a scratch directory, and built there without the one file outside
# *_test.go that imports that framework (cmd/nerdctl/helpers/testing_linux.go:
# test helpers, unused by the binary).
have_nerdctl() {
	local out
	[ -x "$TOOLS_BIN/nerdctl" ] || return 1
	out=$("$TOOLS_BIN/nerdctl" --version 2>/dev/null) && [[ $out == *" ${NERDCTL_VERSION#v}" || $out == *" $NERDCTL_VERSION" ]]
}
if ! have_nerdctl; then
	say "build nerdctl $NERDCTL_VERSION into $TOOLS_BIN (about 60 s the first time)"
	mkdir -p "$TOOLS_BIN"
	src=$(cd / && GOFLAGS= go mod download -json "github.com/containerd/nerdctl/v2@$NERDCTL_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$src" ] && [ -d "$src" ] || die "go mod download github.com/containerd/nerdctl/v2@$NERDCTL_VERSION gave no source directory"
	work=$(mktemp -d /tmp/runphi-nerdctl.XXXXXX)
	cp -r "$src/." "$work/"
	chmod -R u+w "$work"
	rm -f "$work/cmd/nerdctl/helpers/testing_linux.go"
	(cd "$work" && CGO_ENABLED=0 GOFLAGS= go build -trimpath \
		-ldflags "-s -w -X github.com/containerd/nerdctl/v2/pkg/version.Version=$NERDCTL_VERSION" \
		-o "$TOOLS_BIN/nerdctl" ./cmd/nerdctl) || { rm -rf "$work"; die "building nerdctl $NERDCTL_VERSION failed"; }
	rm -rf "$work"
	have_nerdctl || die "nerdctl $NERDCTL_VERSION in $TOOLS_BIN does not report its version"
fi

# 4. crictl from the Go module proxy (module path sigs.k8s.io/cri-tools, not
# github.com/kubernetes-sigs/…), about 30 s the first time. `go install`
# leaves its version "unknown", so the version is linked in as cri-tools'
# own Makefile does.
have_crictl() {
	local out
	[ -x "$TOOLS_BIN/crictl" ] || return 1
	out=$("$TOOLS_BIN/crictl" --version 2>/dev/null) && [[ $out == *" ${CRI_TOOLS_VERSION#v}" || $out == *" $CRI_TOOLS_VERSION" ]]
}
if ! have_crictl; then
	say "go install crictl $CRI_TOOLS_VERSION into $TOOLS_BIN (about 30 s the first time)"
	mkdir -p "$TOOLS_BIN"
	(cd / && GOBIN=$TOOLS_BIN GOFLAGS= go install \
		-ldflags "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION" \
		"sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION")
	have_crictl || die "crictl $CRI_TOOLS_VERSION in $TOOLS_BIN does not report its version"
fi

# 5. critest, for `make critest`: it is a Go test binary, so `go test -c` in
# the module's directory builds it (about 25 s); `go install` cannot.
have_critest() {
	[ -x "$TOOLS_BIN/critest" ] && [ "$(cat "$TOOLS_BIN/critest.version" 2>/dev/null)" = "$CRI_TOOLS_VERSION" ]
}
if ! have_critest; then
	say "build critest $CRI_TOOLS_VERSION into $TOOLS_BIN (about 25 s the first time)"
	mkdir -p "$TOOLS_BIN"
	src=$(cd / && GOFLAGS= go mod download -json "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$src" ] && [ -d "$src" ] || die "go mod download sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION gave no source directory"
	(cd "$src" && GOFLAGS= go test -c -o "$TOOLS_BIN/critest" ./cmd/critest) ||
		die "building critest $CRI_TOOLS_VERSION failed"
	echo "$CRI_TOOLS_VERSION" > "$TOOLS_BIN/critest.version"
fi
