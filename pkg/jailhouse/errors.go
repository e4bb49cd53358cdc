package jailhouse

import (
	"errors"
	"fmt"
)

// Errors returned by DecodeCell, DecodeSystem, MarshalBinary and
// AppendBinary, always wrapped in a *FormatError that names the offset and
// field. Match them with errors.Is.
var (
	// ErrBadSignature means bytes 0–5 are not "JHCLL"+arch, "JHCELL",
	// "JHSYS"+arch or "JHSYST", or name the other kind of configuration.
	ErrBadSignature = errors.New("bad signature")
	// ErrUnsupportedRevision means the revision is not 12, 13 or 14, or does
	// not go with the signature (revision 14 uses 5-byte signatures).
	ErrUnsupportedRevision = errors.New("unsupported configuration revision")
	// ErrArchitecture means the architecture byte is not x86, arm or arm64,
	// or does not match what the caller expected.
	ErrArchitecture = errors.New("unsupported or mismatched architecture")
	// ErrSizeMismatch means the input length differs from the size computed
	// from the header's counts. Vendor forks that add fields without bumping
	// the revision fail here.
	ErrSizeMismatch = errors.New("length does not match the size computed from the header")
	// ErrTruncated means the input ends inside the fixed-size header.
	ErrTruncated = errors.New("truncated header")
	// ErrNameTooLong means a cell name has more than 31 bytes (no NUL in the
	// 32-byte field).
	ErrNameTooLong = errors.New("name longer than 31 bytes")
	// ErrBadName means a name contains a NUL byte, which the fixed,
	// NUL-padded field cannot represent.
	ErrBadName = errors.New("name contains a NUL byte")
	// ErrBadCount means an array length that cannot be encoded or is not
	// allowed (for example a cpu set that is not a multiple of 8 bytes).
	ErrBadCount = errors.New("bad element count")
	// ErrReservedNonZero means padding, reserved bits or the unused part of
	// a union are not zero. Rejecting them keeps decode→encode byte-exact.
	ErrReservedNonZero = errors.New("reserved bytes are not zero")
	// ErrUnusedField means a Go field that the chosen architecture, revision
	// or type does not put on the wire is set; encoding would drop it.
	ErrUnusedField = errors.New("field is not used by this architecture or type")
)

// FormatError describes a configuration that cannot be decoded or encoded.
// Offset is the byte offset of the offending field in the configuration
// (for a system configuration, counted from the start of the system
// header), Field its C name ("root_cell.memory_regions[2].flags").
type FormatError struct {
	Offset   int
	Field    string
	Revision Revision // 0 if the revision was not known yet
	Err      error    // one of the Err* sentinels above
	Detail   string   // optional: the bad value, the expected value
}

func (e *FormatError) Error() string {
	msg := fmt.Sprintf("jailhouse config: offset %d (%s)", e.Offset, e.Field)
	if e.Revision != 0 {
		msg += fmt.Sprintf(", revision %d", e.Revision)
	}
	msg += ": " + e.Err.Error()
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap returns the sentinel, so errors.Is(err, ErrSizeMismatch) works.
func (e *FormatError) Unwrap() error { return e.Err }
