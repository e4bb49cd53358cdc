// Package shim owns the containerd boundary of runphi and nothing below it:
// the shim v2 binary protocol (the start handshakes of containerd 1.6 to 2.2
// and of 2.3+, grouping a pod's containers into one shim, the delete
// cleanup, -info and -v), the ttrpc task service registered as both
// containerd.task.v2.Task and containerd.task.v3.Task, the dispatcher that
// routes each container to the partition service or to containerd's own
// runc task service (a pod's pause container, sidecars, images without a
// boot description), the ordered /tasks/* events forwarded to containerd,
// the per-task state file in the bundle, and the runphi configuration file.
//
// It does not plan, generate or drive cells (package partition does), nor
// decide exit statuses or pump consoles (package caronte does), nor manage
// host processes (containerd's runc task service does, unchanged). Errors
// from those packages already wrap errdefs sentinels; this package adds its
// own (NotFound, AlreadyExists, FailedPrecondition, NotImplemented) and
// turns them into gRPC statuses only at the RPC edge (task.go, and the
// dispatcher for its own errors); the runc task service answers with gRPC
// statuses itself, which pass through.
//
// Invariants:
//   - During `start` nothing but the bootstrap answer reaches stdout or
//     stderr: containerd 1.6 parses their combined output as the address.
//   - A task's events leave the shim in the order create, start, exit,
//     delete, and publishing never blocks an RPC; both kinds of container
//     share one forwarder.
//   - Everything `delete` needs to tear a container down after the shim
//     died is in <bundle>/runphi.json (and, for runc, runc's own files),
//     written before the cell or the runc container exists.
//   - The shim process lives while any container of either kind exists.
//   - State, Pids, Connect, Stats and Wait of a partition answer from
//     memory; they never wait for the hypervisor (containerd gives State 2
//     seconds). Kill and Delete, which do, answer DeadlineExceeded at their
//     deadline and let the request finish in the background; a retried
//     Delete joins it (docs/reliability.md).
//   - `delete` after a shim died always succeeds once the rootfs is
//     unmounted: a cell it cannot destroy is left orphaned in the ledger,
//     never a bundle containerd cannot remove.
package shim
