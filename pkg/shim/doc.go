// Package shim owns the containerd boundary of runphi and nothing below it:
// the shim v2 binary protocol (the start handshakes of containerd 1.6 to 2.2
// and of 2.3+, the delete cleanup, -info and -v), the ttrpc task service
// registered as both containerd.task.v2.Task and containerd.task.v3.Task,
// the ordered /tasks/* events forwarded to containerd, the per-task state
// file in the bundle, and the runphi configuration file.
//
// It does not plan, generate or drive cells (package partition does), nor
// decide exit statuses or pump consoles (package caronte does). Errors from
// those packages already wrap errdefs sentinels; this package adds its own
// (NotFound, AlreadyExists, FailedPrecondition, NotImplemented) and turns
// them into gRPC statuses only at the RPC edge, in task.go.
//
// Invariants:
//   - During `start` nothing but the bootstrap answer reaches stdout or
//     stderr: containerd 1.6 parses their combined output as the address.
//   - A task's events leave the shim in the order create, start, exit,
//     delete, and publishing never blocks an RPC.
//   - Everything `delete` needs to tear a partition down after the shim
//     died is in <bundle>/runphi.json, written before the cell exists.
//   - State, Pids, Connect and Wait answer from memory; they never wait for
//     the hypervisor (containerd gives State 2 seconds).
package shim
