// Package taskstate owns the per-task state file, <bundle>/runphi.json:
// its schema (State), its version, and reading and writing it.
//
// The shim writes it when it creates a task, so that `delete` can tear the
// task down after the shim that created it died; hostview reads it to show
// what runs on a host. The file is root-only (0600) because it names host
// paths and the cell's resources, and it is replaced atomically, so a crash
// leaves the old or the new state, never half of one. The package is a
// leaf (it imports only package config, for the resolved configuration a
// task was created with) so that the shim and hostview share one schema
// without importing each other.
package taskstate
