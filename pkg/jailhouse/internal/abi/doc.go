// Package abi owns the binary interface of /dev/jailhouse: the ioctl request
// numbers and the little-endian encoding of their argument structs, as
// declared in driver/jailhouse.h of siemens/jailhouse (master e57d1eff,
// config revision 14; see jailhouse-abi §1.1 and §1.2).
//
// It only computes numbers and bytes; it performs no system calls and knows
// nothing about cells beyond the name rule of struct jailhouse_cell_id.
// Argument structs are built as []byte rather than Go structs so that their
// layout is explicit and identical on every GOARCH; tests pin every size and
// offset against the ABI table.
//
// Invariant: struct fields that carry user virtual addresses
// (config_address, source_address) are plain integers here. Whoever encodes
// an address must keep the memory it points to alive and unmoved until the
// ioctl returns.
package abi
