package jailhouse

// The JSON form of a configuration: what `runphi config inspect --json`
// prints and `runphi config encode` reads (docs/cli-config.md). Keys are the
// C field names of include/jailhouse/cell-config.h, and the trailing arrays
// take the names the C config files give them (cpus, mem_regions,
// irqchips, …), so a config written in C translates key by key.
//
// The form is exact: CellToJSON/SystemToJSON followed by
// UnmarshalConfigJSON gives back an equal Cell/System, so a file survives
// inspect --json | encode byte for byte. Two rules keep that true:
//   - Flags and enums are numbers. Each has a sibling holding names
//     ("flags_names": "READ|WRITE", "type_name": "PL011") for people. On
//     input a sibling may stand in for an absent number; when both are given
//     they must agree, so editing one without the other is an error instead
//     of a silently ignored edit.
//   - Integers are read from JSON numbers or from strings holding a decimal
//     or 0x-prefixed hexadecimal number. Addresses, sizes, masks and flags
//     are written as "0x…" strings: they read better, and tools that parse
//     JSON numbers as doubles would round 64-bit addresses.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Errors returned by UnmarshalConfigJSON and the Cell/System methods of
// CellJSON and SystemJSON, wrapped in a *JSONError. The sentinels of
// DecodeCell (ErrBadSignature, ErrUnsupportedRevision, ErrArchitecture,
// ErrBadCount, ErrBadName) are used where they fit.
var (
	// ErrInvalidJSON means the text is not JSON, or not of the shape of a
	// configuration: a syntax error, a value of the wrong JSON type, an
	// unknown key, or data after the object.
	ErrInvalidJSON = errors.New("invalid JSON configuration")
	// ErrInvalidValue means a value is not an unsigned integer, does not
	// fit its C field, is an unknown name, or contradicts its sibling.
	ErrInvalidValue = errors.New("invalid value")
)

// JSONError describes a JSON configuration that cannot be read, or a
// configuration that cannot be written as JSON.
type JSONError struct {
	// Field is the path of the offending value in C names
	// ("root_cell.mem_regions[2].flags"). The json package reports values
	// it cannot parse without array indexes ("root_cell.mem_regions.flags").
	Field string
	// Offset, Line and Column locate the error in the JSON text, when the
	// json package reports a position; Line is 0 otherwise.
	Offset       int64
	Line, Column int
	Err          error // ErrInvalidJSON, ErrInvalidValue or one of the codec's sentinels
	Detail       string
}

func (e *JSONError) Error() string {
	msg := "jailhouse config JSON"
	if e.Line > 0 {
		msg += fmt.Sprintf(": line %d, column %d (offset %d)", e.Line, e.Column, e.Offset)
	}
	if e.Field != "" {
		msg += ": " + e.Field
	}
	msg += ": " + e.Err.Error()
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap returns the sentinel.
func (e *JSONError) Unwrap() error { return e.Err }

// JSONUint is an unsigned integer of the JSON form, written as a JSON
// number. On input it also accepts a string holding a decimal or
// 0x-prefixed hexadecimal number. The C field's width is checked when the
// form is converted to a Cell or System.
type JSONUint uint64

// MarshalJSON writes v as a JSON number.
func (v JSONUint) MarshalJSON() ([]byte, error) { return strconv.AppendUint(nil, uint64(v), 10), nil }

// UnmarshalJSON accepts a number or a numeric string.
func (v *JSONUint) UnmarshalJSON(b []byte) error {
	n, err := parseJSONUint(b)
	*v = JSONUint(n)
	return err
}

// JSONHex is JSONUint written as a "0x…" string.
type JSONHex uint64

// MarshalJSON writes v as a "0x…" string.
func (v JSONHex) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, "0x"+strconv.FormatUint(uint64(v), 16)), nil
}

// UnmarshalJSON accepts a number or a numeric string.
func (v *JSONHex) UnmarshalJSON(b []byte) error {
	n, err := parseJSONUint(b)
	*v = JSONHex(n)
	return err
}

// valueError marks an UnmarshalTypeError raised by this file's value types,
// as opposed to the json package's own type mismatches. The json package
// fills in the field path of an UnmarshalTypeError an Unmarshaler returns.
var valueError = reflect.TypeFor[JSONUint]()

func badValue(b []byte, want string) error {
	return &json.UnmarshalTypeError{Value: fmt.Sprintf("%s is not %s", b, want), Type: valueError}
}

const wantUint = "an unsigned integer (a number, or a string holding a decimal or 0x-prefixed hex number)"

func parseJSONUint(b []byte) (uint64, error) {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return 0, badValue(b, wantUint)
		}
		n, err := parseUintText(s)
		if err != nil {
			return 0, badValue(b, wantUint)
		}
		return n, nil
	}
	// A JSON number, but only plain digits: no sign, fraction or exponent.
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, badValue(b, wantUint)
		}
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, badValue(b, wantUint)
	}
	return n, nil
}

// parseUintText parses "123" or "0x7b".
func parseUintText(s string) (uint64, error) {
	if h, ok := strings.CutPrefix(s, "0x"); ok {
		return strconv.ParseUint(h, 16, 64)
	}
	if h, ok := strings.CutPrefix(s, "0X"); ok {
		return strconv.ParseUint(h, 16, 64)
	}
	return strconv.ParseUint(s, 10, 64)
}

// JSONBool is a C bitfield of one bit: written as true/false, read from
// true/false or 0/1 (as C initialisers write it).
type JSONBool bool

// UnmarshalJSON accepts true, false, 0 and 1.
func (v *JSONBool) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "true", "1":
		*v = true
	case "false", "0":
		*v = false
	default:
		return badValue(b, "true, false, 0 or 1")
	}
	return nil
}

// JSONArch is the architecture byte: written as "x86", "arm" or "arm64",
// read from those names (and the others ParseArch accepts) or 0, 1, 2.
type JSONArch Arch

// MarshalJSON writes the architecture's name.
func (a JSONArch) MarshalJSON() ([]byte, error) {
	if Arch(a) > ArchARM64 {
		return nil, fmt.Errorf("architecture %v has no JSON form", Arch(a))
	}
	return strconv.AppendQuote(nil, Arch(a).String()), nil
}

// UnmarshalJSON accepts a name or 0–2.
func (a *JSONArch) UnmarshalJSON(b []byte) error {
	const want = `an architecture ("x86", "arm", "arm64", or 0, 1, 2)`
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return badValue(b, want)
		}
		arch, err := ParseArch(s)
		if err != nil {
			return badValue(b, want)
		}
		*a = JSONArch(arch)
		return nil
	}
	n, err := parseJSONUint(b)
	if err != nil || n > uint64(ArchARM64) {
		return badValue(b, want)
	}
	*a = JSONArch(n)
	return nil
}

// CellJSON is a cell configuration: struct jailhouse_cell_desc with its
// header and trailing arrays.
type CellJSON struct {
	Signature    string    `json:"signature,omitempty"`    // "JHCLL" (rev 14) or "JHCELL"; optional on input
	Architecture *JSONArch `json:"architecture,omitempty"` // required for revision 14, absent in 12/13 unless known
	Revision     JSONUint  `json:"revision,omitempty"`     // 14 when absent
	CellDescJSON
}

// SystemJSON is a system configuration: struct jailhouse_system with the
// root cell's arrays.
type SystemJSON struct {
	Signature        string       `json:"signature,omitempty"` // "JHSYS" (rev 14) or "JHSYST"; optional on input
	Architecture     *JSONArch    `json:"architecture,omitempty"`
	Revision         JSONUint     `json:"revision,omitempty"`
	Flags            *JSONHex     `json:"flags,omitempty"`
	FlagsNames       string       `json:"flags_names,omitempty"`
	HypervisorMemory MemoryJSON   `json:"hypervisor_memory"`
	DebugConsole     ConsoleJSON  `json:"debug_console"`
	PlatformInfo     PlatformJSON `json:"platform_info"`
	RootCell         CellDescJSON `json:"root_cell"`
}

// CellDescJSON is the part of a cell_desc shared by cell files and the
// embedded root cell, with the arrays. The num_* counts are not written:
// each array carries its length. They are accepted on input, and must then
// match the array.
type CellDescJSON struct {
	Name            string      `json:"name"`
	ID              JSONUint    `json:"id"`
	Flags           *JSONHex    `json:"flags,omitempty"`
	FlagsNames      string      `json:"flags_names,omitempty"`
	CPUSetSize      *JSONUint   `json:"cpu_set_size,omitempty"` // bytes; when absent, the smallest multiple of 8 that holds the highest CPU
	VPCIIRQBase     JSONUint    `json:"vpci_irq_base"`
	CPUResetAddress JSONHex     `json:"cpu_reset_address"`
	MsgReplyTimeout JSONUint    `json:"msg_reply_timeout"`
	Console         ConsoleJSON `json:"console"`

	CPUs         []JSONUint          `json:"cpus"` // CPU numbers, ascending
	MemRegions   []MemoryJSON        `json:"mem_regions"`
	CacheRegions []CacheJSON         `json:"cache_regions"`
	IRQChips     []IRQChipJSON       `json:"irqchips"`
	PIORegions   []PIOJSON           `json:"pio_regions"`
	PCIDevices   []PCIDeviceJSON     `json:"pci_devices"`
	PCICaps      []PCICapabilityJSON `json:"pci_caps"`
	StreamIDs    []JSONHex           `json:"stream_ids"`

	NumMemoryRegions *JSONUint `json:"num_memory_regions,omitempty"`
	NumCacheRegions  *JSONUint `json:"num_cache_regions,omitempty"`
	NumIRQChips      *JSONUint `json:"num_irqchips,omitempty"`
	NumPIORegions    *JSONUint `json:"num_pio_regions,omitempty"`
	NumPCIDevices    *JSONUint `json:"num_pci_devices,omitempty"`
	NumPCICaps       *JSONUint `json:"num_pci_caps,omitempty"`
	NumStreamIDs     *JSONUint `json:"num_stream_ids,omitempty"`
}

// MemoryJSON is struct jailhouse_memory.
type MemoryJSON struct {
	PhysStart  JSONHex  `json:"phys_start"`
	VirtStart  JSONHex  `json:"virt_start"`
	Size       JSONHex  `json:"size"`
	Flags      *JSONHex `json:"flags,omitempty"`
	FlagsNames string   `json:"flags_names,omitempty"`
}

// CacheJSON is struct jailhouse_cache.
type CacheJSON struct {
	Start      JSONUint  `json:"start"`
	Size       JSONUint  `json:"size"`
	Type       *JSONUint `json:"type,omitempty"`
	TypeName   string    `json:"type_name,omitempty"`
	Flags      *JSONHex  `json:"flags,omitempty"`
	FlagsNames string    `json:"flags_names,omitempty"`
}

// IRQChipJSON is struct jailhouse_irqchip.
type IRQChipJSON struct {
	Address   JSONHex   `json:"address"`
	ID        JSONHex   `json:"id"`
	PinBase   JSONUint  `json:"pin_base"`
	PinBitmap []JSONHex `json:"pin_bitmap"` // up to 4 words; missing ones are 0
}

// PIOJSON is struct jailhouse_pio.
type PIOJSON struct {
	Base   JSONHex `json:"base"`
	Length JSONHex `json:"length"`
}

// PCIDeviceJSON is struct jailhouse_pci_device.
type PCIDeviceJSON struct {
	Type              *JSONUint `json:"type,omitempty"`
	TypeName          string    `json:"type_name,omitempty"`
	IOMMU             JSONUint  `json:"iommu"`
	Domain            JSONUint  `json:"domain"`
	BDF               JSONHex   `json:"bdf"`
	BARMask           []JSONHex `json:"bar_mask"` // up to 6; missing ones are 0
	CapsStart         JSONUint  `json:"caps_start"`
	NumCaps           JSONUint  `json:"num_caps"`
	NumMSIVectors     JSONUint  `json:"num_msi_vectors"`
	MSI64Bits         JSONBool  `json:"msi_64bits"`
	MSIMaskable       JSONBool  `json:"msi_maskable"`
	NumMSIXVectors    JSONUint  `json:"num_msix_vectors"`
	MSIXRegionSize    JSONHex   `json:"msix_region_size"`
	MSIXAddress       JSONHex   `json:"msix_address"`
	ShmemRegionsStart JSONUint  `json:"shmem_regions_start"`
	ShmemDevID        JSONUint  `json:"shmem_dev_id"`
	ShmemPeers        JSONUint  `json:"shmem_peers"`
	ShmemProtocol     JSONHex   `json:"shmem_protocol"`
}

// PCICapabilityJSON is struct jailhouse_pci_capability.
type PCICapabilityJSON struct {
	ID         JSONHex  `json:"id"`
	Start      JSONHex  `json:"start"`
	Len        JSONUint `json:"len"`
	Flags      *JSONHex `json:"flags,omitempty"`
	FlagsNames string   `json:"flags_names,omitempty"`
}

// ConsoleJSON is struct jailhouse_console.
type ConsoleJSON struct {
	Address    JSONHex   `json:"address"`
	Size       JSONHex   `json:"size"`
	Type       *JSONUint `json:"type,omitempty"`
	TypeName   string    `json:"type_name,omitempty"`
	Flags      *JSONHex  `json:"flags,omitempty"`
	FlagsNames string    `json:"flags_names,omitempty"`
	Divider    JSONHex   `json:"divider"`
	GateNr     JSONUint  `json:"gate_nr"`
	ClockReg   JSONHex   `json:"clock_reg"`
}

// PlatformJSON is jailhouse_system.platform_info. Exactly the member of the
// system's architecture is written; on input the other must be absent.
type PlatformJSON struct {
	PCIMMConfigBase   JSONHex          `json:"pci_mmconfig_base"`
	PCIMMConfigEndBus JSONUint         `json:"pci_mmconfig_end_bus"`
	PCIIsVirtual      JSONUint         `json:"pci_is_virtual"`
	PCIDomain         JSONUint         `json:"pci_domain"`
	IOMMUUnits        []IOMMUJSON      `json:"iommu_units"` // up to 8; written up to the last unit that is not all zero
	ARM               *ARMPlatformJSON `json:"arm,omitempty"`
	X86               *X86PlatformJSON `json:"x86,omitempty"`
}

// IOMMUJSON is struct jailhouse_iommu. Its union is amd for every type but
// PVU, and tipvu for PVU.
type IOMMUJSON struct {
	Type     *JSONUint       `json:"type,omitempty"`
	TypeName string          `json:"type_name,omitempty"`
	Base     JSONHex         `json:"base"`
	Size     JSONHex         `json:"size"`
	AMD      *AMDIOMMUJSON   `json:"amd,omitempty"`
	TIPVU    *TIPVUIOMMUJSON `json:"tipvu,omitempty"`
}

// AMDIOMMUJSON is the amd member of jailhouse_iommu's union.
type AMDIOMMUJSON struct {
	BDF      JSONHex `json:"bdf"`
	BaseCap  JSONHex `json:"base_cap"`
	MSICap   JSONHex `json:"msi_cap"`
	Features JSONHex `json:"features"`
}

// TIPVUIOMMUJSON is the tipvu member of jailhouse_iommu's union.
type TIPVUIOMMUJSON struct {
	TLBBase JSONHex `json:"tlb_base"`
	TLBSize JSONHex `json:"tlb_size"`
}

// ARMPlatformJSON is the arm member of platform_info.
type ARMPlatformJSON struct {
	MaintenanceIRQ JSONUint `json:"maintenance_irq"`
	GICVersion     JSONUint `json:"gic_version"`
	GICDBase       JSONHex  `json:"gicd_base"`
	GICCBase       JSONHex  `json:"gicc_base"`
	GICHBase       JSONHex  `json:"gich_base"`
	GICVBase       JSONHex  `json:"gicv_base"`
	GICRBase       JSONHex  `json:"gicr_base"`
}

// X86PlatformJSON is the x86 member of platform_info.
type X86PlatformJSON struct {
	PMTimerAddress    JSONHex   `json:"pm_timer_address"`
	APICMode          *JSONUint `json:"apic_mode,omitempty"`
	APICModeName      string    `json:"apic_mode_name,omitempty"`
	VTDInterruptLimit JSONUint  `json:"vtd_interrupt_limit"`
	TSCkHz            JSONUint  `json:"tsc_khz"`
	APICkHz           JSONUint  `json:"apic_khz"`
}

// ---- Cell/System → JSON ----

// CellToJSON gives the JSON form of c. It fails only for a name that is not
// valid UTF-8, which a JSON string cannot carry unchanged.
func CellToJSON(c *Cell) (*CellJSON, error) {
	rev := orDefault(c.Revision)
	j := &CellJSON{Signature: sigCellOld, Revision: JSONUint(rev)}
	if rev == Revision14 {
		j.Signature = sigCell
	}
	if c.Arch <= ArchARM64 {
		a := JSONArch(c.Arch)
		j.Architecture = &a
	}
	if err := descToJSON(&j.CellDescJSON, c, ""); err != nil {
		return nil, err
	}
	return j, nil
}

// SystemToJSON gives the JSON form of s. It fails only for a root cell name
// that is not valid UTF-8.
func SystemToJSON(s *System) (*SystemJSON, error) {
	rev := orDefault(s.Revision)
	j := &SystemJSON{
		Signature:        sigSystemOld,
		Revision:         JSONUint(rev),
		Flags:            hexPtr(uint64(s.Flags)),
		FlagsNames:       namesOrEmpty(s.Flags.String(), uint64(s.Flags)),
		HypervisorMemory: memoryToJSON(&s.HypervisorMemory),
		DebugConsole:     consoleToJSON(&s.DebugConsole),
	}
	if rev == Revision14 {
		j.Signature = sigSystem
	}
	if s.Arch <= ArchARM64 {
		a := JSONArch(s.Arch)
		j.Architecture = &a
	}
	p := &s.Platform
	j.PlatformInfo = PlatformJSON{
		PCIMMConfigBase:   JSONHex(p.PCIMMConfigBase),
		PCIMMConfigEndBus: JSONUint(p.PCIMMConfigEndBus),
		PCIIsVirtual:      JSONUint(p.PCIIsVirtual),
		PCIDomain:         JSONUint(p.PCIDomain),
		IOMMUUnits:        []IOMMUJSON{},
	}
	last := -1
	for i, u := range p.IOMMUUnits {
		if u != (IOMMU{}) {
			last = i
		}
	}
	for _, u := range p.IOMMUUnits[:last+1] {
		uj := IOMMUJSON{
			Type:     uintPtr(uint64(u.Type)),
			TypeName: knownName(u.Type, iommuTypeNames),
			Base:     JSONHex(u.Base),
			Size:     JSONHex(u.Size),
		}
		if u.Type == IOMMUPVU {
			uj.TIPVU = &TIPVUIOMMUJSON{TLBBase: JSONHex(u.PVUTLBBase), TLBSize: JSONHex(u.PVUTLBSize)}
		} else if u.Type == IOMMUAMD || u.AMDBDF != 0 || u.AMDBaseCap != 0 || u.AMDMSICap != 0 || u.AMDFeatures != 0 {
			uj.AMD = &AMDIOMMUJSON{BDF: JSONHex(u.AMDBDF), BaseCap: JSONHex(u.AMDBaseCap),
				MSICap: JSONHex(u.AMDMSICap), Features: JSONHex(u.AMDFeatures)}
		}
		j.PlatformInfo.IOMMUUnits = append(j.PlatformInfo.IOMMUUnits, uj)
	}
	if isARMFamily(s.Arch) {
		a := &p.ARM
		j.PlatformInfo.ARM = &ARMPlatformJSON{
			MaintenanceIRQ: JSONUint(a.MaintenanceIRQ),
			GICVersion:     JSONUint(a.GICVersion),
			GICDBase:       JSONHex(a.GICDBase),
			GICCBase:       JSONHex(a.GICCBase),
			GICHBase:       JSONHex(a.GICHBase),
			GICVBase:       JSONHex(a.GICVBase),
			GICRBase:       JSONHex(a.GICRBase),
		}
	} else {
		x := &p.X86
		j.PlatformInfo.X86 = &X86PlatformJSON{
			PMTimerAddress:    JSONHex(x.PMTimerAddress),
			APICMode:          uintPtr(uint64(x.APICMode)),
			APICModeName:      knownName(x.APICMode, apicModeNames),
			VTDInterruptLimit: JSONUint(x.VTDInterruptLimit),
			TSCkHz:            JSONUint(x.TSCkHz),
			APICkHz:           JSONUint(x.APICkHz),
		}
	}
	if err := descToJSON(&j.RootCell, &s.RootCell, "root_cell."); err != nil {
		return nil, err
	}
	return j, nil
}

func hexPtr(v uint64) *JSONHex   { h := JSONHex(v); return &h }
func uintPtr(v uint64) *JSONUint { u := JSONUint(v); return &u }

// namesOrEmpty drops a names sibling that says nothing the number does
// not: "0" for no flags.
func namesOrEmpty(names string, v uint64) string {
	if v == 0 {
		return ""
	}
	return names
}

// knownName is the name of v, or "" when the table has none.
func knownName[T comparable](v T, names map[T]string) string { return names[v] }

func descToJSON(j *CellDescJSON, c *Cell, prefix string) error {
	if !utf8.ValidString(c.Name) {
		return &JSONError{Field: prefix + "name", Err: ErrBadName,
			Detail: fmt.Sprintf("%q is not valid UTF-8, which a JSON string cannot carry unchanged", c.Name)}
	}
	*j = CellDescJSON{
		Name:            c.Name,
		ID:              JSONUint(c.ID),
		Flags:           hexPtr(uint64(c.Flags)),
		FlagsNames:      namesOrEmpty(c.Flags.String(), uint64(c.Flags)),
		CPUSetSize:      uintPtr(uint64(len(c.CPUSet))),
		VPCIIRQBase:     JSONUint(c.VPCIIRQBase),
		CPUResetAddress: JSONHex(c.CPUResetAddress),
		MsgReplyTimeout: JSONUint(c.MsgReplyTimeout),
		Console:         consoleToJSON(&c.Console),
		CPUs:            []JSONUint{},
		MemRegions:      []MemoryJSON{},
		CacheRegions:    []CacheJSON{},
		IRQChips:        []IRQChipJSON{},
		PIORegions:      []PIOJSON{},
		PCIDevices:      []PCIDeviceJSON{},
		PCICaps:         []PCICapabilityJSON{},
		StreamIDs:       []JSONHex{},
	}
	for _, cpu := range c.CPUs() {
		j.CPUs = append(j.CPUs, JSONUint(cpu))
	}
	for i := range c.MemoryRegions {
		j.MemRegions = append(j.MemRegions, memoryToJSON(&c.MemoryRegions[i]))
	}
	for _, r := range c.CacheRegions {
		j.CacheRegions = append(j.CacheRegions, CacheJSON{
			Start:      JSONUint(r.Start),
			Size:       JSONUint(r.Size),
			Type:       uintPtr(uint64(r.Type)),
			TypeName:   knownName(r.Type, cacheTypeNames),
			Flags:      hexPtr(uint64(r.Flags)),
			FlagsNames: namesOrEmpty(CacheFlagsString(r.Flags), uint64(r.Flags)),
		})
	}
	for _, ic := range c.IRQChips {
		bitmap := make([]JSONHex, len(ic.PinBitmap))
		for k, w := range ic.PinBitmap {
			bitmap[k] = JSONHex(w)
		}
		j.IRQChips = append(j.IRQChips, IRQChipJSON{Address: JSONHex(ic.Address), ID: JSONHex(ic.ID),
			PinBase: JSONUint(ic.PinBase), PinBitmap: bitmap})
	}
	for _, p := range c.PIORegions {
		j.PIORegions = append(j.PIORegions, PIOJSON{Base: JSONHex(p.Base), Length: JSONHex(p.Length)})
	}
	for _, p := range c.PCIDevices {
		bars := make([]JSONHex, len(p.BARMask))
		for k, m := range p.BARMask {
			bars[k] = JSONHex(m)
		}
		j.PCIDevices = append(j.PCIDevices, PCIDeviceJSON{
			Type:              uintPtr(uint64(p.Type)),
			TypeName:          knownName(p.Type, pciTypeNames),
			IOMMU:             JSONUint(p.IOMMU),
			Domain:            JSONUint(p.Domain),
			BDF:               JSONHex(p.BDF),
			BARMask:           bars,
			CapsStart:         JSONUint(p.CapsStart),
			NumCaps:           JSONUint(p.NumCaps),
			NumMSIVectors:     JSONUint(p.NumMSIVectors),
			MSI64Bits:         JSONBool(p.MSI64Bits),
			MSIMaskable:       JSONBool(p.MSIMaskable),
			NumMSIXVectors:    JSONUint(p.NumMSIXVectors),
			MSIXRegionSize:    JSONHex(p.MSIXRegionSize),
			MSIXAddress:       JSONHex(p.MSIXAddress),
			ShmemRegionsStart: JSONUint(p.ShmemRegionsStart),
			ShmemDevID:        JSONUint(p.ShmemDevID),
			ShmemPeers:        JSONUint(p.ShmemPeers),
			ShmemProtocol:     JSONHex(p.ShmemProtocol),
		})
	}
	for _, pc := range c.PCICaps {
		j.PCICaps = append(j.PCICaps, PCICapabilityJSON{
			ID:         JSONHex(pc.ID),
			Start:      JSONHex(pc.Start),
			Len:        JSONUint(pc.Len),
			Flags:      hexPtr(uint64(pc.Flags)),
			FlagsNames: namesOrEmpty(PCICapFlagsString(pc.Flags), uint64(pc.Flags)),
		})
	}
	for _, id := range c.StreamIDs {
		j.StreamIDs = append(j.StreamIDs, JSONHex(id))
	}
	return nil
}

func memoryToJSON(m *Memory) MemoryJSON {
	return MemoryJSON{
		PhysStart:  JSONHex(m.PhysStart),
		VirtStart:  JSONHex(m.VirtStart),
		Size:       JSONHex(m.Size),
		Flags:      hexPtr(uint64(m.Flags)),
		FlagsNames: namesOrEmpty(m.Flags.String(), uint64(m.Flags)),
	}
}

func consoleToJSON(c *Console) ConsoleJSON {
	return ConsoleJSON{
		Address:    JSONHex(c.Address),
		Size:       JSONHex(c.Size),
		Type:       uintPtr(uint64(c.Type)),
		TypeName:   knownName(c.Type, consoleTypeNames),
		Flags:      hexPtr(uint64(c.Flags)),
		FlagsNames: namesOrEmpty(ConsoleFlagsString(c.Flags), uint64(c.Flags)),
		Divider:    JSONHex(c.Divider),
		GateNr:     JSONUint(c.GateNr),
		ClockReg:   JSONHex(c.ClockReg),
	}
}

// ---- JSON → Cell/System ----

// UnmarshalConfigJSON reads the JSON form of a cell or a system
// configuration; exactly one of the results is non-nil. The kind is the
// signature's, or, without one, a system when the object has a root_cell.
// Unknown keys and data after the object are errors: a misspelt key must
// not silently leave a field zero. Errors are *JSONError values.
func UnmarshalConfigJSON(data []byte) (*Cell, *System, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, nil, jsonError(data, err)
	}
	system := false
	if raw, ok := probe["signature"]; ok {
		var sig string
		if err := json.Unmarshal(raw, &sig); err != nil {
			return nil, nil, &JSONError{Field: "signature", Err: ErrInvalidJSON, Detail: "not a string"}
		}
		switch sig {
		case sigSystem, sigSystemOld:
			system = true
		case sigCell, sigCellOld:
		default:
			return nil, nil, &JSONError{Field: "signature", Err: ErrBadSignature,
				Detail: fmt.Sprintf("%q; want %q or %q for a cell, %q or %q for a system", sig, sigCell, sigCellOld, sigSystem, sigSystemOld)}
		}
	} else {
		_, system = probe["root_cell"]
	}
	if system {
		var j SystemJSON
		if err := strictUnmarshal(data, &j); err != nil {
			return nil, nil, err
		}
		s, err := j.System()
		return nil, s, err
	}
	var j CellJSON
	if err := strictUnmarshal(data, &j); err != nil {
		return nil, nil, err
	}
	c, err := j.Cell()
	return c, nil, err
}

// strictUnmarshal decodes data, which json.Unmarshal has already found to
// be one valid JSON value, rejecting unknown keys.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(data, err)
	}
	return nil
}

// jsonError turns the json package's errors into a *JSONError.
func jsonError(data []byte, err error) error {
	e := &JSONError{Offset: -1, Err: ErrInvalidJSON, Detail: err.Error()}
	// The json package names a field of an embedded struct after the Go
	// type; the JSON form has no such level.
	fieldPath := func(f string) string { return strings.TrimPrefix(f, "CellDescJSON.") }
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		// The json package counts the offending byte as read.
		e.Offset = max(syn.Offset-1, 0)
		e.Detail = syn.Error()
	case errors.As(err, &typ) && typ.Type == valueError:
		e.Field, e.Err, e.Detail = fieldPath(typ.Field), ErrInvalidValue, typ.Value
	case errors.As(err, &typ):
		e.Field, e.Offset = fieldPath(typ.Field), typ.Offset
		e.Detail = fmt.Sprintf("got a JSON %s, want %s", typ.Value, jsonKind(typ.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		e.Detail = strings.TrimPrefix(err.Error(), "json: ") + " (keys are the C field names; see docs/cli-config.md)"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		e.Detail = "empty or truncated input"
	}
	if e.Offset >= 0 {
		e.Line, e.Column = lineColumn(data, e.Offset)
	} else {
		e.Offset = 0
	}
	return e
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	}
	return t.String()
}

// lineColumn gives the 1-based line and column of byte offset off.
func lineColumn(data []byte, off int64) (int, int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

// Cell converts the JSON form into a Cell, checking each value against
// its C field. The result still goes through MarshalBinary's own checks
// (name length, cpu set size) when encoded.
func (j *CellJSON) Cell() (*Cell, error) {
	var cv fromJSON
	rev := cv.revision(j.Revision, j.Signature, sigCell, sigCellOld, sigSystem, sigSystemOld)
	arch := cv.arch(j.Architecture, rev)
	c := &Cell{Revision: rev, Arch: arch}
	cv.desc(&j.CellDescJSON, "", c)
	if cv.err != nil {
		return nil, cv.err
	}
	return c, nil
}

// System converts the JSON form into a System. For revisions 12 and 13
// without an architecture, the platform_info member present chooses the
// layout: x86 for the x86 member, the arm member otherwise.
func (j *SystemJSON) System() (*System, error) {
	var cv fromJSON
	rev := cv.revision(j.Revision, j.Signature, sigSystem, sigSystemOld, sigCell, sigCellOld)
	arch := cv.arch(j.Architecture, rev)
	pj := &j.PlatformInfo
	if cv.err == nil && j.Architecture == nil && pj.X86 != nil && pj.ARM == nil {
		arch = ArchX86
	}
	s := &System{Revision: rev, Arch: arch}
	s.Flags = SystemFlags(cv.flags(j.Flags, j.FlagsNames, systemFlagNames, "JAILHOUSE_SYS_", "flags", 32))
	s.HypervisorMemory = cv.memory(&j.HypervisorMemory, "hypervisor_memory")
	s.DebugConsole = cv.console(&j.DebugConsole, "debug_console")

	p := &s.Platform
	p.PCIMMConfigBase = uint64(pj.PCIMMConfigBase)
	p.PCIMMConfigEndBus = fit[uint8](&cv, uint64(pj.PCIMMConfigEndBus), "platform_info.pci_mmconfig_end_bus")
	p.PCIIsVirtual = fit[uint8](&cv, uint64(pj.PCIIsVirtual), "platform_info.pci_is_virtual")
	p.PCIDomain = fit[uint16](&cv, uint64(pj.PCIDomain), "platform_info.pci_domain")
	if len(pj.IOMMUUnits) > len(p.IOMMUUnits) {
		cv.fail("platform_info.iommu_units", ErrBadCount, "%d units; the array has %d", len(pj.IOMMUUnits), len(p.IOMMUUnits))
	}
	for i := range min(len(pj.IOMMUUnits), len(p.IOMMUUnits)) {
		cv.iommu(&pj.IOMMUUnits[i], &p.IOMMUUnits[i], fmt.Sprintf("platform_info.iommu_units[%d]", i))
	}
	switch {
	case isARMFamily(arch) && pj.X86 != nil:
		cv.fail("platform_info.x86", ErrUnusedField, "given for a %v system, whose platform_info holds the arm member", arch)
	case !isARMFamily(arch) && pj.ARM != nil:
		cv.fail("platform_info.arm", ErrUnusedField, "given for an x86 system, whose platform_info holds the x86 member")
	case isARMFamily(arch) && pj.ARM != nil:
		a := pj.ARM
		p.ARM = ARMPlatform{
			MaintenanceIRQ: fit[uint8](&cv, uint64(a.MaintenanceIRQ), "platform_info.arm.maintenance_irq"),
			GICVersion:     fit[uint8](&cv, uint64(a.GICVersion), "platform_info.arm.gic_version"),
			GICDBase:       uint64(a.GICDBase),
			GICCBase:       uint64(a.GICCBase),
			GICHBase:       uint64(a.GICHBase),
			GICVBase:       uint64(a.GICVBase),
			GICRBase:       uint64(a.GICRBase),
		}
	case !isARMFamily(arch) && pj.X86 != nil:
		x := pj.X86
		p.X86 = X86Platform{
			PMTimerAddress:    fit[uint16](&cv, uint64(x.PMTimerAddress), "platform_info.x86.pm_timer_address"),
			APICMode:          uint8(cv.enum(x.APICMode, x.APICModeName, apicModeNames, "JAILHOUSE_APIC_MODE_", "platform_info.x86.apic_mode", 8)),
			VTDInterruptLimit: fit[uint32](&cv, uint64(x.VTDInterruptLimit), "platform_info.x86.vtd_interrupt_limit"),
			TSCkHz:            fit[uint32](&cv, uint64(x.TSCkHz), "platform_info.x86.tsc_khz"),
			APICkHz:           fit[uint32](&cv, uint64(x.APICkHz), "platform_info.x86.apic_khz"),
		}
	}
	s.RootCell.Revision, s.RootCell.Arch = rev, arch
	cv.desc(&j.RootCell, "root_cell.", &s.RootCell)
	if cv.err != nil {
		return nil, cv.err
	}
	return s, nil
}

// fromJSON converts the JSON form, keeping the first error.
type fromJSON struct {
	err *JSONError
}

func (cv *fromJSON) fail(field string, sentinel error, format string, args ...any) {
	if cv.err == nil {
		cv.err = &JSONError{Field: field, Err: sentinel, Detail: fmt.Sprintf(format, args...)}
	}
}

// fit narrows v to its C field's width.
func fit[T uint8 | uint16 | uint32](cv *fromJSON, v uint64, field string) T {
	limit := uint64(^T(0))
	if v > limit {
		cv.fail(field, ErrInvalidValue, "%d (%#x) does not fit in %d bits", v, v, bitsOf(limit))
	}
	return T(v)
}

func bitsOf(limit uint64) int {
	n := 0
	for ; limit != 0; limit >>= 1 {
		n++
	}
	return n
}

func (cv *fromJSON) revision(r JSONUint, sig, sigNew, sigOld, otherNew, otherOld string) Revision {
	rev := uint64(r)
	if rev == 0 {
		if sig == sigOld {
			cv.fail("revision", ErrUnsupportedRevision, "signature %q needs a revision of 12 or 13", sig)
			return Revision13
		}
		rev = uint64(Revision14)
	}
	if rev < uint64(Revision12) || rev > uint64(Revision14) {
		cv.fail("revision", ErrUnsupportedRevision, "%d; this package writes 12, 13 and 14", rev)
		return Revision14
	}
	want := sigOld
	if Revision(rev) == Revision14 {
		want = sigNew
	}
	switch sig {
	case "", want:
	case otherNew, otherOld:
		cv.fail("signature", ErrBadSignature, "%q is the other kind of configuration", sig)
	default:
		cv.fail("signature", ErrBadSignature, "%q; revision %d uses %q", sig, rev, want)
	}
	return Revision(rev)
}

func (cv *fromJSON) arch(a *JSONArch, rev Revision) Arch {
	if a == nil {
		if rev == Revision14 {
			cv.fail("architecture", ErrArchitecture, "required for revision 14: \"x86\", \"arm\" or \"arm64\"")
		}
		return ArchUnknown
	}
	return Arch(*a)
}

// flags reads a flag set from its number, its names sibling, or both,
// which must then agree. Names are those String prints, with or without
// the C macro prefix, joined by "|"; numbers may stand among them.
func (cv *fromJSON) flags(num *JSONHex, names string, table []flagName, prefix, field string, width int) uint64 {
	var v uint64
	if num != nil {
		v = uint64(*num)
	}
	if names != "" {
		parsed, err := parseFlagNames(names, table, prefix)
		switch {
		case err != nil:
			cv.fail(field+"_names", ErrInvalidValue, "%v", err)
		case num == nil:
			v = parsed
		case parsed != v:
			cv.fail(field+"_names", ErrInvalidValue, "%q is %#x but %s is %#x; make them agree or drop one",
				names, parsed, field, v)
		}
	}
	if width < 64 && v>>width != 0 {
		cv.fail(field, ErrInvalidValue, "%#x does not fit in %d bits", v, width)
	}
	return v
}

func parseFlagNames(s string, table []flagName, prefix string) (uint64, error) {
	var v uint64
	for tok := range strings.SplitSeq(s, "|") {
		tok = strings.TrimSpace(tok)
		if n, err := parseUintText(tok); err == nil {
			v |= n
			continue
		}
		name := strings.TrimPrefix(strings.ToUpper(tok), prefix)
		i := slices.IndexFunc(table, func(f flagName) bool { return strings.EqualFold(f.name, name) })
		if i < 0 {
			known := make([]string, len(table))
			for k, f := range table {
				known[k] = f.name
			}
			return 0, fmt.Errorf("unknown flag %q (known: %s, or a number)", tok, strings.Join(known, ", "))
		}
		v |= table[i].value
	}
	return v, nil
}

// enum reads an enumerated value from its number, its name sibling, or
// both, which must then agree.
func (cv *fromJSON) enum(num *JSONUint, name string, table any, prefix, field string, width int) uint64 {
	var v uint64
	if num != nil {
		v = uint64(*num)
	}
	if name != "" {
		parsed, ok := lookupEnum(table, name, prefix)
		switch {
		case !ok:
			cv.fail(field+"_name", ErrInvalidValue, "unknown name %q", name)
		case num == nil:
			v = parsed
		case parsed != v:
			cv.fail(field+"_name", ErrInvalidValue, "%q is %d but %s is %d; make them agree or drop one", name, parsed, field, v)
		}
	}
	if v>>width != 0 {
		cv.fail(field, ErrInvalidValue, "%d does not fit in %d bits", v, width)
	}
	return v
}

// lookupEnum finds name (or a number) in one of the name tables of
// flags.go, whose key types differ.
// Names come first: the 8250 console's name is a number.
func lookupEnum(table any, name, prefix string) (uint64, bool) {
	bare := strings.TrimPrefix(strings.ToUpper(name), prefix)
	iter := reflect.ValueOf(table).MapRange()
	for iter.Next() {
		if strings.EqualFold(iter.Value().String(), bare) {
			return iter.Key().Uint(), true
		}
	}
	if n, err := parseUintText(name); err == nil {
		return n, true
	}
	return 0, false
}

func (cv *fromJSON) memory(m *MemoryJSON, field string) Memory {
	return Memory{
		PhysStart: uint64(m.PhysStart),
		VirtStart: uint64(m.VirtStart),
		Size:      uint64(m.Size),
		Flags:     MemFlags(cv.flags(m.Flags, m.FlagsNames, memFlagNames, "JAILHOUSE_MEM_", field+".flags", 64)),
	}
}

func (cv *fromJSON) console(c *ConsoleJSON, field string) Console {
	return Console{
		Address:  uint64(c.Address),
		Size:     fit[uint32](cv, uint64(c.Size), field+".size"),
		Type:     uint16(cv.enum(c.Type, c.TypeName, consoleTypeNames, "JAILHOUSE_CON_TYPE_", field+".type", 16)),
		Flags:    uint16(cv.flags(c.Flags, c.FlagsNames, consoleFlagNames, "JAILHOUSE_CON_", field+".flags", 16)),
		Divider:  fit[uint32](cv, uint64(c.Divider), field+".divider"),
		GateNr:   fit[uint32](cv, uint64(c.GateNr), field+".gate_nr"),
		ClockReg: uint64(c.ClockReg),
	}
}

func (cv *fromJSON) iommu(j *IOMMUJSON, u *IOMMU, field string) {
	u.Type = uint32(cv.enum(j.Type, j.TypeName, iommuTypeNames, "JAILHOUSE_IOMMU_", field+".type", 32))
	u.Base = uint64(j.Base)
	u.Size = fit[uint32](cv, uint64(j.Size), field+".size")
	switch {
	case u.Type == IOMMUPVU && j.AMD != nil:
		cv.fail(field+".amd", ErrUnusedField, "a PVU unit's union holds tipvu")
	case u.Type != IOMMUPVU && j.TIPVU != nil:
		cv.fail(field+".tipvu", ErrUnusedField, "only a PVU unit (type 4) has tipvu; this one is type %d", u.Type)
	}
	if a := j.AMD; a != nil {
		u.AMDBDF = fit[uint16](cv, uint64(a.BDF), field+".amd.bdf")
		u.AMDBaseCap = fit[uint8](cv, uint64(a.BaseCap), field+".amd.base_cap")
		u.AMDMSICap = fit[uint8](cv, uint64(a.MSICap), field+".amd.msi_cap")
		u.AMDFeatures = fit[uint32](cv, uint64(a.Features), field+".amd.features")
	}
	if p := j.TIPVU; p != nil {
		u.PVUTLBBase = uint64(p.TLBBase)
		u.PVUTLBSize = fit[uint32](cv, uint64(p.TLBSize), field+".tipvu.tlb_size")
	}
}

// maxJSONCPUSetSize bounds cpu_set_size on input. The hypervisor takes at
// most a page; the bound only keeps a few bytes of JSON from allocating
// gigabytes.
const maxJSONCPUSetSize = 1 << 20

func (cv *fromJSON) desc(d *CellDescJSON, prefix string, c *Cell) {
	c.Name = d.Name
	c.ID = fit[uint32](cv, uint64(d.ID), prefix+"id")
	c.Flags = CellFlags(cv.flags(d.Flags, d.FlagsNames, cellFlagNames, "JAILHOUSE_CELL_", prefix+"flags", 32))
	c.VPCIIRQBase = fit[uint32](cv, uint64(d.VPCIIRQBase), prefix+"vpci_irq_base")
	c.CPUResetAddress = uint64(d.CPUResetAddress)
	c.MsgReplyTimeout = uint64(d.MsgReplyTimeout)
	c.Console = cv.console(&d.Console, prefix+"console")
	cv.cpus(d, prefix, c)

	counts := []struct {
		num   *JSONUint
		field string
		array string
		n     int
	}{
		{d.NumMemoryRegions, "num_memory_regions", "mem_regions", len(d.MemRegions)},
		{d.NumCacheRegions, "num_cache_regions", "cache_regions", len(d.CacheRegions)},
		{d.NumIRQChips, "num_irqchips", "irqchips", len(d.IRQChips)},
		{d.NumPIORegions, "num_pio_regions", "pio_regions", len(d.PIORegions)},
		{d.NumPCIDevices, "num_pci_devices", "pci_devices", len(d.PCIDevices)},
		{d.NumPCICaps, "num_pci_caps", "pci_caps", len(d.PCICaps)},
		{d.NumStreamIDs, "num_stream_ids", "stream_ids", len(d.StreamIDs)},
	}
	for _, n := range counts {
		if n.num != nil && uint64(*n.num) != uint64(n.n) {
			cv.fail(prefix+n.field, ErrBadCount, "is %d but %s has %d entries (the count may be left out)", *n.num, n.array, n.n)
		}
	}

	for i := range d.MemRegions {
		c.MemoryRegions = append(c.MemoryRegions, cv.memory(&d.MemRegions[i], fmt.Sprintf("%smem_regions[%d]", prefix, i)))
	}
	for i, r := range d.CacheRegions {
		f := fmt.Sprintf("%scache_regions[%d]", prefix, i)
		c.CacheRegions = append(c.CacheRegions, Cache{
			Start: fit[uint32](cv, uint64(r.Start), f+".start"),
			Size:  fit[uint32](cv, uint64(r.Size), f+".size"),
			Type:  uint8(cv.enum(r.Type, r.TypeName, cacheTypeNames, "JAILHOUSE_CACHE_", f+".type", 8)),
			Flags: uint16(cv.flags(r.Flags, r.FlagsNames, cacheFlagNames, "JAILHOUSE_CACHE_", f+".flags", 16)),
		})
	}
	for i, ic := range d.IRQChips {
		f := fmt.Sprintf("%sirqchips[%d]", prefix, i)
		chip := IRQChip{
			Address: uint64(ic.Address),
			ID:      fit[uint32](cv, uint64(ic.ID), f+".id"),
			PinBase: fit[uint32](cv, uint64(ic.PinBase), f+".pin_base"),
		}
		if len(ic.PinBitmap) > len(chip.PinBitmap) {
			cv.fail(f+".pin_bitmap", ErrBadCount, "%d words; the bitmap has %d", len(ic.PinBitmap), len(chip.PinBitmap))
		}
		for k := range min(len(ic.PinBitmap), len(chip.PinBitmap)) {
			chip.PinBitmap[k] = fit[uint32](cv, uint64(ic.PinBitmap[k]), fmt.Sprintf("%s.pin_bitmap[%d]", f, k))
		}
		c.IRQChips = append(c.IRQChips, chip)
	}
	for i, p := range d.PIORegions {
		f := fmt.Sprintf("%spio_regions[%d]", prefix, i)
		c.PIORegions = append(c.PIORegions, PIO{
			Base:   fit[uint16](cv, uint64(p.Base), f+".base"),
			Length: fit[uint16](cv, uint64(p.Length), f+".length"),
		})
	}
	for i := range d.PCIDevices {
		c.PCIDevices = append(c.PCIDevices, cv.pciDevice(&d.PCIDevices[i], fmt.Sprintf("%spci_devices[%d]", prefix, i)))
	}
	for i, pc := range d.PCICaps {
		f := fmt.Sprintf("%spci_caps[%d]", prefix, i)
		c.PCICaps = append(c.PCICaps, PCICapability{
			ID:    fit[uint16](cv, uint64(pc.ID), f+".id"),
			Start: fit[uint16](cv, uint64(pc.Start), f+".start"),
			Len:   fit[uint16](cv, uint64(pc.Len), f+".len"),
			Flags: uint16(cv.flags(pc.Flags, pc.FlagsNames, pciCapFlagNames, "JAILHOUSE_PCICAPS_", f+".flags", 16)),
		})
	}
	for i, id := range d.StreamIDs {
		c.StreamIDs = append(c.StreamIDs, fit[uint32](cv, uint64(id), fmt.Sprintf("%sstream_ids[%d]", prefix, i)))
	}
}

// cpus builds the cpu bitmap from cpu_set_size and the CPU list.
func (cv *fromJSON) cpus(d *CellDescJSON, prefix string, c *Cell) {
	var size uint64
	if d.CPUSetSize != nil {
		size = uint64(*d.CPUSetSize)
		switch {
		case size%8 != 0:
			cv.fail(prefix+"cpu_set_size", ErrBadCount,
				"%d bytes; the hypervisor reads the set as 64-bit words, so it must be a multiple of 8", size)
			return
		case size > maxJSONCPUSetSize:
			cv.fail(prefix+"cpu_set_size", ErrBadCount, "%d bytes; the hypervisor takes at most a page", size)
			return
		}
	} else if len(d.CPUs) > 0 {
		highest := uint64(slices.Max(d.CPUs))
		size = min(highest/64+1, math.MaxUint64/8) * 8
		if size > maxJSONCPUSetSize {
			cv.fail(prefix+"cpus", ErrBadCount, "cpu %d needs a %d-byte set; the hypervisor takes at most a page", highest, size)
			return
		}
	}
	if size == 0 && len(d.CPUs) == 0 {
		return
	}
	set := make([]byte, size)
	for i, cpu := range d.CPUs {
		field := fmt.Sprintf("%scpus[%d]", prefix, i)
		switch {
		case uint64(cpu) >= size*8:
			cv.fail(field, ErrBadCount, "cpu %d does not fit cpu_set_size %d (cpus 0-%d)", cpu, size, size*8-1)
			return
		case set[cpu/8]&(1<<(cpu%8)) != 0:
			cv.fail(field, ErrInvalidValue, "cpu %d is listed twice", cpu)
			return
		}
		set[cpu/8] |= 1 << (cpu % 8)
	}
	c.CPUSet = set
}

func (cv *fromJSON) pciDevice(p *PCIDeviceJSON, f string) PCIDevice {
	dev := PCIDevice{
		Type:              uint8(cv.enum(p.Type, p.TypeName, pciTypeNames, "JAILHOUSE_PCI_TYPE_", f+".type", 8)),
		IOMMU:             fit[uint8](cv, uint64(p.IOMMU), f+".iommu"),
		Domain:            fit[uint16](cv, uint64(p.Domain), f+".domain"),
		BDF:               fit[uint16](cv, uint64(p.BDF), f+".bdf"),
		CapsStart:         fit[uint16](cv, uint64(p.CapsStart), f+".caps_start"),
		NumCaps:           fit[uint16](cv, uint64(p.NumCaps), f+".num_caps"),
		NumMSIVectors:     fit[uint8](cv, uint64(p.NumMSIVectors), f+".num_msi_vectors"),
		MSI64Bits:         bool(p.MSI64Bits),
		MSIMaskable:       bool(p.MSIMaskable),
		NumMSIXVectors:    fit[uint16](cv, uint64(p.NumMSIXVectors), f+".num_msix_vectors"),
		MSIXRegionSize:    fit[uint16](cv, uint64(p.MSIXRegionSize), f+".msix_region_size"),
		MSIXAddress:       uint64(p.MSIXAddress),
		ShmemRegionsStart: fit[uint32](cv, uint64(p.ShmemRegionsStart), f+".shmem_regions_start"),
		ShmemDevID:        fit[uint8](cv, uint64(p.ShmemDevID), f+".shmem_dev_id"),
		ShmemPeers:        fit[uint8](cv, uint64(p.ShmemPeers), f+".shmem_peers"),
		ShmemProtocol:     fit[uint16](cv, uint64(p.ShmemProtocol), f+".shmem_protocol"),
	}
	if len(p.BARMask) > len(dev.BARMask) {
		cv.fail(f+".bar_mask", ErrBadCount, "%d masks; a device has %d BARs", len(p.BARMask), len(dev.BARMask))
	}
	for k := range min(len(p.BARMask), len(dev.BARMask)) {
		dev.BARMask[k] = fit[uint32](cv, uint64(p.BARMask[k]), fmt.Sprintf("%s.bar_mask[%d]", f, k))
	}
	return dev
}
