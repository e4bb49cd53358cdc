// Package hostview is the operator's read-only view of runphi on one host.
// It joins what different processes leave behind, none of which alone says
// what runs here: the runphi configuration file (the same keys and the same
// precedence as the shim's), the node-wide resource ledger, the Jailhouse
// sysfs tree (real or simulated), the shim's per-task state files in the
// containerd bundles, and the containerd and shim processes in /proc.
//
// It backs `runphi ps`, `runphi cells`, `runphi stats` and `runphi doctor`.
// It never creates, changes or destroys a cell, a ledger entry or a state
// file; the only writes it can cause are the simulator's own bookkeeping
// when its cells are listed (a simulated sysfs read advances the scripted
// inmates to now, as a real state read is a hypercall that sees the inmate
// as it is). It does not import package shim: the configuration and the
// task state file are read through packages config and taskstate, the
// same code the shim uses.
//
// A ledger that cannot be read does not blind the view: Partitions and
// CellOwners still say what the task state files, runphi's saved cell
// configurations and the hypervisor show, and return the ledger's error
// beside it, because a damaged host is when the operator needs them most.
//
// Everything that reads the host takes its roots (/proc, sysfs) from
// Options, so tests run on fabricated trees.
package hostview
