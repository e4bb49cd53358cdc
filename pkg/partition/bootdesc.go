package partition

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// The image paths a boot description is looked for at, in this order.
// runPHI's code reads /boot/config.json; its READMEs say
// /boot/configuration.json, so both are accepted.
var bootDescriptionPaths = []string{"/boot/config.json", "/boot/configuration.json"}

// DefaultInmate is the payload loaded when the boot description names none.
const DefaultInmate = "/boot/boot.bin"

// maxBootDescriptionSize bounds the JSON file: a boot description is a
// handful of keys, and the file comes from an untrusted image.
const maxBootDescriptionSize = 1 << 20

// Errors returned by FindBootDescription and ReadBootDescription.
var (
	// ErrNoBootDescription means the image has neither /boot/config.json nor
	// /boot/configuration.json: it is not a partitioned-container image.
	ErrNoBootDescription = errors.New("no boot description: the image has neither /boot/config.json nor /boot/configuration.json")
)

// CommRegionMode says whether the inmate takes part in the comm-region
// shutdown handshake.
type CommRegionMode int

const (
	// CommRegionPassive (the default) gives the cell PASSIVE_COMMREG: the
	// hypervisor never asks the inmate for permission to stop it. This is
	// right for any inmate that does not poll the comm region, which would
	// otherwise freeze the root cell on every shutdown (jailhouse-abi §8.8).
	CommRegionPassive CommRegionMode = iota
	// CommRegionActive clears PASSIVE_COMMREG: the inmate answers
	// SHUTDOWN_REQUEST itself and may deny it.
	CommRegionActive
)

// String returns the boot-description spelling of the mode.
func (m CommRegionMode) String() string {
	if m == CommRegionActive {
		return "active"
	}
	return "passive"
}

// BootDescription is the boot description an image ships in
// /boot/config.json, with runPHI's keys (runphi-original.md §2) and the
// runphi-specific comm_region key. Every payload path is absolute in the
// image and has been checked to exist inside the rootfs.
type BootDescription struct {
	// File is the image path the description was read from.
	File string

	// OSVar is os_var: "linux" selects the Linux boot path; anything else
	// ("zephyr", "baremetal", empty) loads Inmate as a raw binary.
	OSVar string
	// Inmate is the payload (inmate), DefaultInmate when absent or empty.
	Inmate string
	// StartingVAddress is starting_vaddress: the cell address the raw
	// binary is loaded at and started from. HasStartingVAddress is false
	// when the key is absent, and the board's cpu_reset_address applies.
	StartingVAddress    uint64
	HasStartingVAddress bool
	// Net is the raw net value ("" when absent); NetEnabled is its meaning.
	// "none", "no", "off", "false" and false (any case) disable networking;
	// absent, empty, true and any other string enable it, as in runPHI
	// (which only knew "none" and so treated "no" as enabled: that bug is
	// not reproduced).
	Net        string
	NetEnabled bool
	// RPUReq is rpu_req: run on a Cortex-R5 RPU (Omnivisor boards).
	RPUReq bool
	// Linux boot files (kernel, dtb, cpio, initrd, ramdisk), image paths.
	Kernel, DTB, CPIO, Initrd, Ramdisk string
	// Netconf is netconf, kept verbatim and unused by the Jailhouse path.
	Netconf string
	// CommRegion is comm_region: "passive" (default) or "active".
	CommRegion CommRegionMode
	// Console is console: where the partition's console output comes from,
	// "ivshmem" (default), "virtual" or "none" (docs/console.md).
	// HasConsole is false when the key is absent.
	Console    ConsoleKind
	HasConsole bool
	// Cmdline is cmdline: the Linux kernel command line, written to the
	// device tree's /chosen bootargs. HasCmdline is false when the key is
	// absent, and the device tree's own bootargs stay.
	Cmdline    string
	HasCmdline bool
	// Cell is cell: the image path of a prebuilt cell configuration
	// (.cell) to use instead of a generated one, accepted only inside what
	// the allocator may grant (prebuilt.go); "" to generate the cell.
	Cell string

	// Unknown holds keys this version does not know, kept verbatim and
	// ignored. The caller logs their names (UnknownKeys).
	Unknown map[string]json.RawMessage
}

// UnknownKeys returns the names of the ignored keys, sorted.
func (d *BootDescription) UnknownKeys() []string {
	keys := make([]string, 0, len(d.Unknown))
	for k := range d.Unknown {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// IsLinux reports whether the image asks for the Linux boot path.
func (d *BootDescription) IsLinux() bool { return d.OSVar == "linux" }

// BootDescriptionError is a boot description that cannot be used. File is
// the image path of the description, Key the offending key ("" for the file
// as a whole). It matches errdefs.ErrInvalidArgument, and Err (for example
// fs.ErrNotExist for a missing payload) through errors.Is.
type BootDescriptionError struct {
	File string
	Key  string
	Err  error
}

func (e *BootDescriptionError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("boot description %s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("boot description %s: key %q: %v", e.File, e.Key, e.Err)
}

// Unwrap returns the errdefs class and the cause.
func (e *BootDescriptionError) Unwrap() []error {
	return []error{errdefs.ErrInvalidArgument, e.Err}
}

// FindBootDescription returns the image path of the boot description in the
// rootfs at the host path rootfs: /boot/config.json, else
// /boot/configuration.json. found is false (with a nil error) when neither
// exists. A candidate that exists but is not a regular file, or is a symlink
// leaving the rootfs, is an error rather than "not found", so a broken image
// is not silently treated as an ordinary container.
func FindBootDescription(rootfs string) (string, bool, error) {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return "", false, fmt.Errorf("open rootfs %s: %w", rootfs, err)
	}
	defer root.Close()
	return findBootDescription(root)
}

func findBootDescription(root *os.Root) (string, bool, error) {
	for _, p := range bootDescriptionPaths {
		fi, err := root.Stat(imageRel(p))
		if errors.Is(err, fs.ErrNotExist) {
			// A dangling symlink is "not there" as well; a path through a
			// non-directory (ENOTDIR) is not, and is reported below.
			continue
		}
		if err != nil {
			return p, false, &BootDescriptionError{File: p, Err: imageFileError(err)}
		}
		if !fi.Mode().IsRegular() {
			return p, false, &BootDescriptionError{File: p, Err: errNotRegular(fi)}
		}
		return p, true, nil
	}
	return "", false, nil
}

// ReadBootDescription finds, parses and validates the boot description of
// the rootfs at the host path rootfs. It returns ErrNoBootDescription when
// the image has none, and a *BootDescriptionError for anything wrong with
// it: invalid JSON (with line and column), a key of the wrong type, a
// relative path or one leaving the rootfs, a missing payload, a
// starting_vaddress no board can load at (checkStartingVAddress).
func ReadBootDescription(rootfs string) (*BootDescription, error) {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, fmt.Errorf("open rootfs %s: %w", rootfs, err)
	}
	defer root.Close()
	return readBootDescription(root)
}

func readBootDescription(root *os.Root) (*BootDescription, error) {
	file, found, err := findBootDescription(root)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNoBootDescription
	}
	data, err := readImageFile(root, file, maxBootDescriptionSize)
	if err != nil {
		return nil, &BootDescriptionError{File: file, Err: err}
	}
	d, err := ParseBootDescription(file, data)
	if err != nil {
		return nil, err
	}
	if err := d.checkPayloads(root); err != nil {
		return nil, err
	}
	if err := d.checkStartingVAddress(root); err != nil {
		return nil, err
	}
	return d, nil
}

// duplicateTopLevelKey reports the first key that appears twice in the
// top-level object of data (already known to be valid JSON), with the offset
// just after its second occurrence. encoding/json keeps the last value of a
// duplicate silently, so {"inmate":"/a","inmate":"/b"} would boot /b while
// a reader of the file may well believe /a.
func duplicateTopLevelKey(data []byte) (string, int64, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", 0, false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", 0, false
		}
		key, _ := t.(string)
		if seen[key] {
			return key, dec.InputOffset(), true
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", 0, false
		}
	}
	return "", 0, false
}

// ParseBootDescription parses the JSON of a boot description read from the
// image path file. It checks syntax, types and path forms but not that the
// payloads exist (ReadBootDescription does).
func ParseBootDescription(file string, data []byte) (*BootDescription, error) {
	fail := func(key string, err error) error {
		return &BootDescriptionError{File: file, Key: key, Err: err}
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return nil, fail("", jsonError(data, err))
	}
	if raw == nil {
		return nil, fail("", errors.New("top level is null, want a JSON object"))
	}
	// Trailing content after the object ("{} {}", "{}x") is an error, not
	// something to ignore: the file was probably cut or concatenated.
	if _, err := dec.Token(); err == nil {
		return nil, fail("", fmt.Errorf("invalid JSON at %s: data after the top-level object", location(data, dec.InputOffset())))
	} else if !errors.Is(err, io.EOF) {
		return nil, fail("", jsonError(data, err))
	}

	if key, off, dup := duplicateTopLevelKey(data); dup {
		return nil, fail(key, fmt.Errorf("duplicate key at %s: each key may appear once", location(data, off)))
	}

	d := &BootDescription{File: file, NetEnabled: true}
	var err error
	for key, v := range raw {
		if isNull(v) {
			// null means "not set", like an absent key.
			continue
		}
		switch key {
		case "os_var":
			err = decodeString(v, &d.OSVar)
		case "inmate":
			err = decodeString(v, &d.Inmate)
		case "starting_vaddress":
			d.StartingVAddress, err = decodeAddress(v)
			d.HasStartingVAddress = err == nil
		case "net":
			d.Net, d.NetEnabled, err = decodeNet(v)
		case "rpu_req":
			err = decodeBool(v, &d.RPUReq)
		case "kernel":
			err = decodeString(v, &d.Kernel)
		case "dtb":
			err = decodeString(v, &d.DTB)
		case "cpio":
			err = decodeString(v, &d.CPIO)
		case "initrd":
			err = decodeString(v, &d.Initrd)
		case "ramdisk":
			err = decodeString(v, &d.Ramdisk)
		case "netconf":
			err = decodeString(v, &d.Netconf)
		case "cell":
			err = decodeString(v, &d.Cell)
		case "console":
			var s string
			if err = decodeString(v, &s); err == nil {
				d.Console, err = ParseConsoleKind(s)
				d.HasConsole = err == nil
			}
		case "cmdline":
			err = decodeString(v, &d.Cmdline)
			d.HasCmdline = err == nil
		case "comm_region":
			var s string
			if err = decodeString(v, &s); err == nil {
				switch s {
				case "", "passive":
					d.CommRegion = CommRegionPassive
				case "active":
					d.CommRegion = CommRegionActive
				default:
					err = fmt.Errorf("%q is not a comm-region mode, want \"passive\" or \"active\"", s)
				}
			}
		default:
			if d.Unknown == nil {
				d.Unknown = make(map[string]json.RawMessage)
			}
			d.Unknown[key] = v
		}
		if err != nil {
			return nil, fail(key, err)
		}
	}
	if d.Inmate == "" {
		d.Inmate = DefaultInmate
	}
	for _, p := range d.paths() {
		if _, err := imageRelChecked(*p.value); err != nil {
			return nil, fail(p.key, err)
		}
	}
	return d, nil
}

type pathKey struct {
	key   string
	value *string
}

// paths lists the set path-valued keys.
func (d *BootDescription) paths() []pathKey {
	all := []pathKey{
		{"inmate", &d.Inmate}, {"kernel", &d.Kernel}, {"dtb", &d.DTB},
		{"cpio", &d.CPIO}, {"initrd", &d.Initrd}, {"ramdisk", &d.Ramdisk},
		{"cell", &d.Cell},
	}
	var set []pathKey
	for _, p := range all {
		if *p.value != "" {
			set = append(set, p)
		}
	}
	return set
}

// checkPayloads checks that every payload the description names exists in
// the image as a regular file. The default inmate is not required of a
// Linux image, which boots from kernel instead.
func (d *BootDescription) checkPayloads(root *os.Root) error {
	for _, p := range d.paths() {
		if p.key == "inmate" && d.IsLinux() {
			continue
		}
		fi, err := root.Stat(imageRel(*p.value))
		if err != nil {
			return &BootDescriptionError{File: d.File, Key: p.key, Err: fmt.Errorf("payload %s: %w", *p.value, imageFileError(err))}
		}
		if !fi.Mode().IsRegular() {
			return &BootDescriptionError{File: d.File, Key: p.key, Err: fmt.Errorf("payload %s %w", *p.value, errNotRegular(fi))}
		}
	}
	return nil
}

// checkStartingVAddress checks starting_vaddress by the rules of Create
// that hold on every board, so that `runphi image build`, which reads the
// description the same way, refuses what Create would, in the same words:
//
//   - What starts at the address must end below 2^64, as every range of a
//     cell does (address plus size may not wrap to 0): a raw inmate's bytes
//     (loaded there on any cell), and for a generated cell its RAM, at
//     least a page, which starts there whatever the payload.
//   - For a generated cell the address is 4 KiB aligned, because the RAM
//     region starts at it. A prebuilt cell's RAM does not, so a raw binary
//     may be loaded at any byte of it.
//
// The range comes first: an address with no room above it is out of range
// whatever its low bits, and "not aligned" would send the author looking
// for the wrong mistake. Where the address lands on the board (its reserved
// ranges, the partition's RAM size) is left to Create. It runs after
// checkPayloads, so the inmate is known to be a regular file.
func (d *BootDescription) checkStartingVAddress(root *os.Root) error {
	if !d.HasStartingVAddress || d.RPUReq {
		return nil
	}
	load := d.StartingVAddress
	fail := func(err error) error { return &BootDescriptionError{File: d.File, Key: "starting_vaddress", Err: err} }
	generated := d.Cell == ""
	// need is how many bytes start at the address; what says which.
	var need uint64
	var what string
	if generated {
		need, what = pageSize, "the partition RAM starting there, at least 4 KiB,"
	}
	if !d.IsLinux() {
		f, size, isELF, err := openInmate(root, d)
		if err != nil {
			return err
		}
		f.Close()
		// An ELF is loaded where it was linked, not at the address.
		if !isELF {
			payload := fmt.Sprintf("payload %s (%s)", d.Inmate, formatSize(uint64(size)))
			if generated {
				need = max(need, alignUp(uint64(size), pageSize))
				what = fmt.Sprintf("the partition RAM starting there, at least %s to hold %s,", formatSize(need), payload)
			} else {
				need, what = uint64(size), payload+" starting there"
			}
		}
	}
	if need > ^uint64(0)-load {
		return fail(fmt.Errorf("%#x is out of range: %s would wrap around the end of the 64-bit address space", load, what))
	}
	if generated && load%pageSize != 0 {
		return fail(fmt.Errorf("load address %#x is not 4 KiB aligned (the partition RAM starts at the load address)", load))
	}
	return nil
}

// imageRelChecked turns an absolute image path into a path relative to the
// rootfs, refusing relative paths and ".." components: an image names its
// payloads from its own root, and ".." has no business in such a name.
func imageRelChecked(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("path %q is not absolute; payload paths are absolute in the image (e.g. /boot/boot.bin)", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", fmt.Errorf("path %q escapes the rootfs: '..' is not allowed in image paths", p)
		}
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("path %q contains a NUL byte", p)
	}
	rel := imageRel(p)
	if rel == "." {
		return "", fmt.Errorf("path %q names the image root, not a file", p)
	}
	return rel, nil
}

// imageRel turns a checked absolute image path into an os.Root name.
func imageRel(p string) string {
	rel := strings.TrimPrefix(path.Clean(p), "/")
	if rel == "" {
		return "."
	}
	return rel
}

// errPathEscapes is what this package reports for a path the os.Root refused
// because a symlink (absolute, or relative with too many "..") leads out of
// the rootfs.
var errPathEscapes = errors.New("escapes the rootfs (symlinks must be relative and stay inside the image)")

// errNotInImage is a missing image file; it matches fs.ErrNotExist.
var errNotInImage error = notInImage{}

type notInImage struct{}

func (notInImage) Error() string        { return "does not exist in the image" }
func (notInImage) Is(target error) bool { return target == fs.ErrNotExist }

// imageFileError makes an os.Root error readable: the root reports escapes
// with an unexported error whose text is all there is to match on.
func imageFileError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		if strings.Contains(pe.Err.Error(), "escapes from parent") {
			return errPathEscapes
		}
		if errors.Is(pe.Err, fs.ErrNotExist) {
			return errNotInImage
		}
		return pe.Err
	}
	return err
}

// errNotRegular says what an image file that must be a regular file is
// instead, with its whole mode: the type bits alone print as "d---------".
func errNotRegular(fi fs.FileInfo) error {
	if fi.IsDir() {
		return errors.New("is a directory, not a regular file")
	}
	return fmt.Errorf("is not a regular file (%s)", fi.Mode())
}

// readImageFile reads the regular file at the image path p, refusing files
// larger than limit bytes without reading them.
func readImageFile(root *os.Root, p string, limit int64) ([]byte, error) {
	f, err := root.Open(imageRel(p))
	if err != nil {
		return nil, imageFileError(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errNotRegular(fi)
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("file is %d bytes, more than the %d allowed", fi.Size(), limit)
	}
	buf := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// jsonError turns a decoder error into one that says where in the file.
func jsonError(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		// Offset counts the bytes read, the bad one included.
		return fmt.Errorf("invalid JSON at %s: %v", location(data, se.Offset-1), se)
	case errors.As(err, &te):
		return fmt.Errorf("invalid JSON at %s: top level is a JSON %s, want an object", location(data, te.Offset-1), te.Value)
	case errors.Is(err, io.EOF):
		return errors.New("invalid JSON: the file is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("invalid JSON at %s: unexpected end of file", location(data, int64(len(data))))
	}
	return fmt.Errorf("invalid JSON: %v", err)
}

// location renders the position of the byte at offset off (from 0) as
// "line L, column C (offset O)", lines and columns counted from 1, columns
// in bytes.
func location(data []byte, off int64) string {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	before := data[:off]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return fmt.Sprintf("line %d, column %d (offset %d)", line, col, off)
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// jsonKind names the JSON type of a raw value for error messages.
func jsonKind(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func decodeString(v json.RawMessage, dst *string) error {
	if jsonKind(v) != "string" {
		return fmt.Errorf("is a JSON %s (%s), want a string", jsonKind(v), v)
	}
	return json.Unmarshal(v, dst)
}

func decodeBool(v json.RawMessage, dst *bool) error {
	if jsonKind(v) != "boolean" {
		return fmt.Errorf("is a JSON %s (%s), want true or false", jsonKind(v), v)
	}
	return json.Unmarshal(v, dst)
}

// decodeAddress accepts a string in Go integer syntax ("0x70000000",
// "1879048192", "0o17", "0b1", underscores allowed) or a non-negative JSON
// integer. runPHI passed the string verbatim to `jailhouse cell load -a`,
// which parses it with strtoll(…, 0); hex and decimal strings mean the same
// here. An octal "0…" string is refused rather than guessed.
func decodeAddress(v json.RawMessage) (uint64, error) {
	switch jsonKind(v) {
	case "string":
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return 0, err
		}
		t := strings.TrimSpace(s)
		if len(t) > 1 && t[0] == '0' && t[1] >= '0' && t[1] <= '9' {
			return 0, fmt.Errorf("%q is ambiguous (C octal?); write it as hex, 0x…", s)
		}
		n, err := strconv.ParseUint(t, 0, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not an address (want hex such as \"0x70000000\" or a decimal number)", s)
		}
		return n, nil
	case "number":
		n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s is not a non-negative integer address", v)
		}
		return n, nil
	}
	return 0, fmt.Errorf("is a JSON %s (%s), want an address string such as \"0x70000000\" or a number", jsonKind(v), v)
}

// decodeNet returns the raw value and whether networking is on.
func decodeNet(v json.RawMessage) (string, bool, error) {
	switch jsonKind(v) {
	case "boolean":
		var b bool
		if err := json.Unmarshal(v, &b); err != nil {
			return "", false, err
		}
		return strconv.FormatBool(b), b, nil
	case "string":
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", false, err
		}
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "none", "no", "off", "false":
			return s, false, nil
		}
		return s, true, nil
	}
	return "", false, fmt.Errorf("is a JSON %s (%s), want a string (\"none\" disables networking) or a boolean", jsonKind(v), v)
}
