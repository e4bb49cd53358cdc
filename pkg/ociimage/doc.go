// Package ociimage turns a directory into a single-layer OCI image-layout
// tarball that `ctr images import` loads without a registry.
//
// It owns the byte format of what it writes and nothing else: it does not
// know what a partitioned container is (callers validate /boot/config.json
// before building) and never talks to containerd.
//
// Invariant: the output is a pure function of the directory's names, file
// contents, symlink targets and executable bits plus the Options. Entries are
// sorted, every timestamp is the Unix epoch, owners are 0:0 with no names,
// permissions are normalised the way git stores them (0755 for directories and
// executables, 0644 for other files), and gzip streams carry no name or time.
// Building the same tree twice, on any machine, gives the same digests.
package ociimage
