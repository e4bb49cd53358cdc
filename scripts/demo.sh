#!/bin/bash
# Runs the demo partitioned container end to end under a private containerd:
# builds the image from examples/demo, imports it, runs it with
# `ctr run --rm --runtime io.containerd.runphi.v2` on the Jailhouse simulator,
# and shows the inmate's console output and the exit status.
#
# Everything lives under $RUNPHI_DEMO_DIR (default /tmp/runphi-demo, kept short
# because unix socket paths are limited to 108 bytes). The daemon is stopped
# by its PID on exit, on failure too, and nothing stays mounted or running.
#
# Environment:
#   RUNPHI_DEMO_DIR     work directory (wiped at start)
#   CONTAINERD_BIN_DIR  where containerd and ctr are (default /usr/bin: 1.6.20;
#                       /opt/runphi-tools/bin runs the demo on 2.4.2)
#   RUNPHI_BIN_DIR      where containerd-shim-runphi-v2 and runphi are (default bin/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${RUNPHI_DEMO_DIR:-/tmp/runphi-demo}
CBIN=${CONTAINERD_BIN_DIR:-/usr/bin}
RBIN=${RUNPHI_BIN_DIR:-$ROOT/bin}
IMAGE=docker.io/runphi/demo:latest
RUNTIME=io.containerd.runphi.v2
SOCK=$W/containerd.sock

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B= N=; fi
say() { printf '%sdemo:%s %s\n' "$B" "$N" "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (containerd mounts the container's rootfs)"
for b in "$CBIN/containerd" "$CBIN/ctr" "$RBIN/containerd-shim-runphi-v2" "$RBIN/runphi"; do
	[ -x "$b" ] || die "$b not found (run 'make deps build' first)"
done
CTR=("$CBIN/ctr" -a "$SOCK" -n runphi-demo)

# unmount_under DIR unmounts every mount point under DIR, deepest first.
unmount_under() {
	local dir=$1
	awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
}

# kill_shims ends the shims this demo's daemon started, found by their
# -address argument (they outlive the daemon when a task is left running).
kill_shims() {
	local f pid
	for f in /proc/[0-9]*/cmdline; do
		pid=${f#/proc/}; pid=${pid%/cmdline}
		if [[ "$( { tr '\0' ' ' <"$f"; } 2>/dev/null)" == *"-address $SOCK "* ]]; then
			kill -9 "$pid" 2>/dev/null || true
		fi
	done
}

# delete_leftover_tasks runs the shim's own `delete` (what containerd runs
# after a shim died) for every bundle still on disk, so a partition whose shim
# had to be killed is destroyed and its resources freed.
delete_leftover_tasks() {
	local b ns id
	for b in "$W"/state/io.containerd.runtime.v2.task/*/*; do
		[ -d "$b" ] || continue
		id=${b##*/}; ns=${b%/*}; ns=${ns##*/}
		(cd "$b" && RUNPHI_CONFIG="$W/runphi.toml" "$RBIN/containerd-shim-runphi-v2" \
			-namespace "$ns" -address "$SOCK" -id "$id" -bundle "$b" delete >/dev/null 2>&1)
	done
}

CPID=
cleanup() {
	local rc=$?
	set +e
	if [ -n "$CPID" ] && kill -0 "$CPID" 2>/dev/null; then
		# Tasks first, so the shims destroy their cells and release resources.
		for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
			"${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1
			"${CTR[@]}" tasks rm -f "$t" >/dev/null 2>&1
		done
		for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do
			"${CTR[@]}" containers rm "$c" >/dev/null 2>&1
		done
		kill "$CPID" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$CPID" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$CPID" 2>/dev/null
		wait "$CPID" 2>/dev/null
	fi
	kill_shims
	delete_leftover_tasks
	unmount_under "$W"
	[ "$rc" = 0 ] || echo "demo: failed (exit $rc); containerd log: $W/containerd.log" >&2
	exit "$rc"
}

# A previous demo that was killed hard may have left a daemon or mounts.
if [ -f "$W/containerd.pid" ]; then
	old=$(cat "$W/containerd.pid")
	if [ -n "$old" ] && grep -qs "$W/config.toml" "/proc/$old/cmdline"; then
		kill "$old" 2>/dev/null || true
		sleep 0.5
	fi
fi
kill_shims
unmount_under "$W"
rm -rf "$W"
mkdir -p "$W"/{root,state,fifo,runphi/state,runphi/sim}

# runphi's configuration: the simulator backend with everything under $W.
cat > "$W/runphi.toml" <<EOF
backend = "sim"
state_dir = "$W/runphi/state"
sim_dir = "$W/runphi/sim"
board = "qemu-arm64"
EOF

VER=$("$CBIN/containerd" --version | awk '{print $3}')
case "$VER" in
1.*)
	cat > "$W/config.toml" <<EOF
version = 2
root = "$W/root"
state = "$W/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
EOF
	;;
*)
	cat > "$W/config.toml" <<EOF
version = 3
root = "$W/root"
state = "$W/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
EOF
	;;
esac

trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting containerd $VER (private: $W)"
# The shim is found on the daemon's PATH; a 2.x daemon must also find its own
# runc shim before Debian's, hence its directory first.
# setsid: a Ctrl-C on this script must not reach the daemon before the
# cleanup has asked it to remove the tasks.
setsid env PATH="$CBIN:$RBIN:$PATH" RUNPHI_CONFIG="$W/runphi.toml" \
	"$CBIN/containerd" --config "$W/config.toml" >"$W/containerd.log" 2>&1 &
CPID=$!
echo "$CPID" >"$W/containerd.pid"
for _ in $(seq 100); do [ -S "$SOCK" ] && break; kill -0 "$CPID" 2>/dev/null || break; sleep 0.1; done
[ -S "$SOCK" ] || die "containerd did not create $SOCK; see $W/containerd.log"
"${CTR[@]}" version >/dev/null 2>&1 || die "containerd does not answer on $SOCK"

say "building the image from examples/demo"
"$RBIN/runphi" image build "$ROOT/examples/demo" -o "$W/demo.tar" --ref "$IMAGE"
"${CTR[@]}" images import "$W/demo.tar" >/dev/null 2>&1 || die "ctr images import $W/demo.tar failed"

say "ctr run --rm --runtime $RUNTIME $IMAGE demo"
echo "----- inmate console -----"
set +e
timeout 60 "${CTR[@]}" run --rm --fifo-dir "$W/fifo" --runtime "$RUNTIME" "$IMAGE" demo
status=$?
set -e
echo "--------------------------"
say "the partition exited with status $status"
# The configuration stays in $W (the daemon does not): check it with doctor.
say "check this setup: PATH=$RBIN:\$PATH $RBIN/runphi doctor --config $W/runphi.toml --containerd-config $W/config.toml"
say "$W keeps this demo's configuration and containerd log for that (rm -rf $W when done)"
exit "$status"
