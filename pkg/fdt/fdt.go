package fdt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Magic opens every flattened device tree (big-endian).
const Magic = 0xd00dfeed

// MaxSize bounds the blobs Parse accepts.
const MaxSize = 16 << 20

// maxDepth bounds node nesting; real trees stay below ten levels.
const maxDepth = 64

// headerSize is the size of the version 17 header.
const headerSize = 40

// Structure block tokens.
const (
	tokenBeginNode = 0x1
	tokenEndNode   = 0x2
	tokenProp      = 0x3
	tokenNop       = 0x4
	tokenEnd       = 0x9
)

var be = binary.BigEndian

// Errors returned by Parse.
var (
	// ErrFormat is matched by every *FormatError.
	ErrFormat = errors.New("malformed device tree")
	// ErrVersion is a tree of a version this package does not read.
	ErrVersion = errors.New("unsupported device tree version")
)

// FormatError is a blob Parse cannot read. Offset is the byte offset of the
// bad field or token from the start of the blob.
type FormatError struct {
	Offset int
	Msg    string
	Err    error // ErrFormat or ErrVersion
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("device tree at byte %d: %s", e.Offset, e.Msg)
}

func (e *FormatError) Unwrap() error { return e.Err }

func formatErr(off int, format string, args ...any) error {
	return &FormatError{Offset: off, Msg: fmt.Sprintf(format, args...), Err: ErrFormat}
}

// Tree is a parsed device tree.
type Tree struct {
	// Version and LastCompVersion are the header's; MarshalBinary writes
	// them back (at least 16 and at most 17 for last_comp_version).
	Version         uint32
	LastCompVersion uint32
	// BootCPUIDPhys is the header's boot_cpuid_phys.
	BootCPUIDPhys uint32
	// Reserved is the memory reservation block, without its terminator.
	Reserved []Reservation
	// Root is the root node (its name is "").
	Root *Node
}

// Reservation is one entry of the memory reservation block.
type Reservation struct {
	Address, Size uint64
}

// Node is one device tree node.
type Node struct {
	// Name is the node name with its unit address ("memory@40000000").
	Name       string
	Properties []Property
	Children   []*Node
}

// Property is one property; Value is its raw big-endian bytes.
type Property struct {
	Name  string
	Value []byte
}

// Parse reads a flattened device tree.
func Parse(b []byte) (*Tree, error) {
	if len(b) < headerSize {
		return nil, formatErr(0, "%d bytes, shorter than the %d-byte header", len(b), headerSize)
	}
	if len(b) > MaxSize {
		return nil, formatErr(0, "%d bytes, more than the %d accepted", len(b), MaxSize)
	}
	if m := be.Uint32(b); m != Magic {
		return nil, formatErr(0, "magic %#x, want %#x", m, uint32(Magic))
	}
	h := struct {
		total, offStruct, offStrings, offRsv, version, lastComp, bootCPU, sizeStrings, sizeStruct uint32
	}{
		be.Uint32(b[4:]), be.Uint32(b[8:]), be.Uint32(b[12:]), be.Uint32(b[16:]), be.Uint32(b[20:]),
		be.Uint32(b[24:]), be.Uint32(b[28:]), be.Uint32(b[32:]), be.Uint32(b[36:]),
	}
	if h.version < 17 || h.lastComp > 17 {
		return nil, &FormatError{Offset: 20, Err: ErrVersion,
			Msg: fmt.Sprintf("version %d, last_comp_version %d: want version 17 or later, readable as 17", h.version, h.lastComp)}
	}
	if uint64(h.total) > uint64(len(b)) || h.total < headerSize {
		return nil, formatErr(4, "totalsize %d, but the blob has %d bytes", h.total, len(b))
	}
	b = b[:h.total]
	inBlob := func(field int, name string, off, size uint32) error {
		if uint64(off)+uint64(size) > uint64(len(b)) || off < headerSize {
			return formatErr(field, "%s %d+%d lies outside the %d-byte blob", name, off, size, len(b))
		}
		return nil
	}
	if err := inBlob(8, "structure block", h.offStruct, h.sizeStruct); err != nil {
		return nil, err
	}
	if err := inBlob(12, "strings block", h.offStrings, h.sizeStrings); err != nil {
		return nil, err
	}
	if err := inBlob(16, "reservation block", h.offRsv, 0); err != nil {
		return nil, err
	}
	t := &Tree{Version: h.version, LastCompVersion: h.lastComp, BootCPUIDPhys: h.bootCPU}

	// The reservation block: (address, size) pairs up to a (0, 0).
	for off := int(h.offRsv); ; off += 16 {
		if off+16 > len(b) {
			return nil, formatErr(off, "reservation block runs past the blob without its (0, 0) terminator")
		}
		r := Reservation{be.Uint64(b[off:]), be.Uint64(b[off+8:])}
		if r == (Reservation{}) {
			break
		}
		t.Reserved = append(t.Reserved, r)
	}

	p := &parser{
		b:       b,
		off:     int(h.offStruct),
		end:     int(h.offStruct + h.sizeStruct),
		strings: b[h.offStrings : h.offStrings+h.sizeStrings],
		strOff:  int(h.offStrings),
	}
	p.skipNops()
	tok, err := p.token()
	if err != nil {
		return nil, err
	}
	if tok != tokenBeginNode {
		return nil, formatErr(p.off-4, "structure block starts with token %#x, want FDT_BEGIN_NODE", tok)
	}
	if t.Root, err = p.node(0); err != nil {
		return nil, err
	}
	p.skipNops()
	at := p.off
	if tok, err = p.token(); err != nil {
		return nil, err
	}
	if tok != tokenEnd {
		return nil, formatErr(at, "token %#x after the root node, want FDT_END", tok)
	}
	return t, nil
}

type parser struct {
	b        []byte
	off, end int
	strings  []byte
	strOff   int
}

func (p *parser) token() (uint32, error) {
	if p.off+4 > p.end {
		return 0, formatErr(p.off, "structure block ends inside a token")
	}
	v := be.Uint32(p.b[p.off:])
	p.off += 4
	return v, nil
}

func (p *parser) skipNops() {
	for p.off+4 <= p.end && be.Uint32(p.b[p.off:]) == tokenNop {
		p.off += 4
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

// node reads a node whose FDT_BEGIN_NODE was just consumed.
func (p *parser) node(depth int) (*Node, error) {
	if depth >= maxDepth {
		return nil, formatErr(p.off, "nodes nested more than %d deep", maxDepth)
	}
	nameEnd := bytes.IndexByte(p.b[p.off:p.end], 0)
	if nameEnd < 0 {
		return nil, formatErr(p.off, "node name runs past the structure block")
	}
	n := &Node{Name: string(p.b[p.off : p.off+nameEnd])}
	p.off = align4(p.off + nameEnd + 1)
	for {
		at := p.off
		tok, err := p.token()
		if err != nil {
			return nil, err
		}
		switch tok {
		case tokenNop:
		case tokenProp:
			if len(n.Children) > 0 {
				return nil, formatErr(at, "property in node %q after its first subnode", n.Name)
			}
			if p.off+8 > p.end {
				return nil, formatErr(p.off, "property header runs past the structure block")
			}
			size, nameOff := int(be.Uint32(p.b[p.off:])), be.Uint32(p.b[p.off+4:])
			p.off += 8
			if size > p.end-p.off {
				return nil, formatErr(p.off-8, "property of %d bytes runs past the structure block", size)
			}
			name, err := p.string(nameOff, p.off-4)
			if err != nil {
				return nil, err
			}
			n.Properties = append(n.Properties, Property{Name: name, Value: slices.Clone(p.b[p.off : p.off+size])})
			p.off = align4(p.off + size)
		case tokenBeginNode:
			child, err := p.node(depth + 1)
			if err != nil {
				return nil, err
			}
			n.Children = append(n.Children, child)
		case tokenEndNode:
			return n, nil
		default:
			return nil, formatErr(at, "token %#x inside node %q", tok, n.Name)
		}
	}
}

// string reads a name from the strings block; field is where its offset
// was read, for errors.
func (p *parser) string(off uint32, field int) (string, error) {
	if uint64(off) >= uint64(len(p.strings)) {
		return "", formatErr(field, "property name offset %d is outside the %d-byte strings block", off, len(p.strings))
	}
	end := bytes.IndexByte(p.strings[off:], 0)
	if end < 0 {
		return "", formatErr(p.strOff+int(off), "property name runs past the strings block")
	}
	return string(p.strings[off : int(off)+end]), nil
}

// MarshalBinary writes the tree as a blob: header, reservation block,
// structure block, strings block (names shared).
func (t *Tree) MarshalBinary() ([]byte, error) {
	if t.Root == nil {
		return nil, errors.New("fdt: tree has no root node")
	}
	var strs bytes.Buffer
	names := map[string]uint32{}
	var st bytes.Buffer
	var put func(n *Node, depth int) error
	put = func(n *Node, depth int) error {
		if depth >= maxDepth {
			return fmt.Errorf("fdt: nodes nested more than %d deep", maxDepth)
		}
		if strings.IndexByte(n.Name, 0) >= 0 {
			return fmt.Errorf("fdt: node name %q contains a NUL", n.Name)
		}
		binary.Write(&st, be, uint32(tokenBeginNode))
		st.WriteString(n.Name)
		st.WriteByte(0)
		pad(&st)
		for _, pr := range n.Properties {
			if pr.Name == "" || strings.IndexByte(pr.Name, 0) >= 0 {
				return fmt.Errorf("fdt: node %q: property name %q is empty or contains a NUL", n.Name, pr.Name)
			}
			off, ok := names[pr.Name]
			if !ok {
				// Share the tail of a longer name, as dtc does.
				if i := bytes.Index(strs.Bytes(), append([]byte(pr.Name), 0)); i >= 0 {
					off = uint32(i)
				} else {
					off = uint32(strs.Len())
					strs.WriteString(pr.Name)
					strs.WriteByte(0)
				}
				names[pr.Name] = off
			}
			binary.Write(&st, be, [3]uint32{tokenProp, uint32(len(pr.Value)), off})
			st.Write(pr.Value)
			pad(&st)
		}
		for _, c := range n.Children {
			if err := put(c, depth+1); err != nil {
				return err
			}
		}
		binary.Write(&st, be, uint32(tokenEndNode))
		return nil
	}
	if err := put(t.Root, 0); err != nil {
		return nil, err
	}
	binary.Write(&st, be, uint32(tokenEnd))

	rsv := make([]byte, 16*(len(t.Reserved)+1))
	for i, r := range t.Reserved {
		be.PutUint64(rsv[16*i:], r.Address)
		be.PutUint64(rsv[16*i+8:], r.Size)
	}
	offRsv := headerSize
	offStruct := offRsv + len(rsv)
	offStrings := offStruct + st.Len()
	total := offStrings + strs.Len()
	if total > MaxSize {
		return nil, fmt.Errorf("fdt: tree of %d bytes is more than %d", total, MaxSize)
	}
	version, lastComp := t.Version, t.LastCompVersion
	if version < 17 {
		version = 17
	}
	if lastComp < 16 || lastComp > 17 {
		lastComp = 16
	}
	out := make([]byte, 0, total)
	for _, v := range []uint32{Magic, uint32(total), uint32(offStruct), uint32(offStrings), uint32(offRsv),
		version, lastComp, t.BootCPUIDPhys, uint32(strs.Len()), uint32(st.Len())} {
		out = be.AppendUint32(out, v)
	}
	out = append(out, rsv...)
	out = append(out, st.Bytes()...)
	out = append(out, strs.Bytes()...)
	return out, nil
}

func pad(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

// Node returns the node at path ("/", "/chosen", "/soc/uart@9000000"), or
// nil. A component without a unit address also matches a node that has one
// when it is the only such node ("memory" finds "memory@40000000").
func (t *Tree) Node(path string) *Node {
	if t.Root == nil || !strings.HasPrefix(path, "/") {
		return nil
	}
	n := t.Root
	for _, c := range strings.Split(strings.Trim(path, "/"), "/") {
		if c == "" {
			continue
		}
		if n = n.Child(c); n == nil {
			return nil
		}
	}
	return n
}

// Child returns the subnode called name: an exact match, or else the only
// subnode whose name without its unit address is name.
func (n *Node) Child(name string) *Node {
	var base *Node
	count := 0
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
		if b, _, _ := strings.Cut(c.Name, "@"); b == name && !strings.Contains(name, "@") {
			base = c
			count++
		}
	}
	if count == 1 {
		return base
	}
	return nil
}

// EnsureNode returns the node at path, adding any missing nodes on the way.
func (t *Tree) EnsureNode(path string) *Node {
	if t.Root == nil {
		t.Root = &Node{}
	}
	n := t.Root
	for _, c := range strings.Split(strings.Trim(path, "/"), "/") {
		if c == "" {
			continue
		}
		next := n.Child(c)
		if next == nil {
			next = &Node{Name: c}
			n.Children = append(n.Children, next)
		}
		n = next
	}
	return n
}

// Property returns the value of the named property.
func (n *Node) Property(name string) ([]byte, bool) {
	for _, p := range n.Properties {
		if p.Name == name {
			return p.Value, true
		}
	}
	return nil, false
}

// SetProperty sets the named property, adding it after the others if the
// node has none of that name.
func (n *Node) SetProperty(name string, value []byte) {
	for i := range n.Properties {
		if n.Properties[i].Name == name {
			n.Properties[i].Value = value
			return
		}
	}
	n.Properties = append(n.Properties, Property{Name: name, Value: value})
}

// Uint32 returns a one-cell property, such as #address-cells.
func (n *Node) Uint32(name string) (uint32, bool) {
	v, ok := n.Property(name)
	if !ok || len(v) != 4 {
		return 0, false
	}
	return be.Uint32(v), true
}

// String encodes a string property (with its NUL).
func String(s string) []byte { return append([]byte(s), 0) }

// Cells appends v as a number of cells (1 or 2 32-bit words, big-endian),
// as a #address-cells or #size-cells wide field of "reg". It fails if v
// does not fit.
func Cells(dst []byte, v uint64, cells uint32) ([]byte, error) {
	switch cells {
	case 1:
		if v > 0xffffffff {
			return nil, fmt.Errorf("fdt: %#x does not fit one cell", v)
		}
		return be.AppendUint32(dst, uint32(v)), nil
	case 2:
		return be.AppendUint64(dst, v), nil
	}
	return nil, fmt.Errorf("fdt: %d cells per number is not supported (1 or 2)", cells)
}
