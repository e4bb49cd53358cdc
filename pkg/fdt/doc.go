// Package fdt reads and writes flattened device trees (DTB, the Devicetree
// Specification v0.4, chapter 5), enough to patch the device tree a Linux
// inmate boots with: find a node by path, read, set and add properties and
// nodes, and write the tree back out.
//
// It owns the binary format only: the header, the memory reservation block,
// the structure block and the strings block. It knows nothing of bindings
// (what "reg" means is the caller's business, helped by Cells and Uint32).
//
// Parse accepts versions whose last_comp_version is at most 17, as every
// writer since 2008 produces, and rejects anything it cannot account for:
// an offset or size outside the blob, a token out of place, a name or
// property running past its block. Errors are *FormatError values naming
// the byte offset. MarshalBinary writes a fresh layout (header, reservation
// block, structure block, strings block, in that order) that any reader of
// version 16 or 17 accepts; node and property order are kept.
//
// Security: device trees come from container images. Parse never allocates
// more than the blob's size from a count it read, bounds node nesting, and
// refuses blobs larger than MaxSize.
package fdt
