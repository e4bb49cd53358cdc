#!/bin/bash
# Installs what `make demo` and `make test` need on a Debian 12 machine, as
# root, and nothing that is already there:
#   - containerd 1.6.20, ctr and runc from Debian (the daemon most users have);
#   - containerd, ctr and containerd-shim-runc-v2 v2.4.2 built with
#     `go install` into $RUNPHI_TOOLS_BIN (default /opt/runphi-tools/bin),
#     about 100 s on 2 cores the first time.
# Idempotent and quiet: it prints one line per thing it installs, nothing
# when everything is present.
set -euo pipefail

CONTAINERD2_VERSION=${CONTAINERD2_VERSION:-v2.4.2}
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
