package main

// runphi config: the operator's view of Jailhouse .cell files, without gcc
// or Jailhouse's headers (docs/cli-config.md).
//
//	runphi config inspect FILE [--json] [--arch ARCH]
//	runphi config encode FILE.json -o FILE.cell
//	runphi config check SYSCONFIG [CELL…] [--json] [--arch ARCH]
//
// Exit status: 0 success; 1 check found errors, or the output could not be
// written; 2 a usage mistake or an input file that cannot be read, decoded
// or encoded.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/runphi/runphi/pkg/jailhouse"
)

const configUsage = "config inspect FILE [--json] [--arch ARCH] | " +
	"config encode FILE.json -o FILE.cell | " +
	"config check SYSCONFIG [CELL...] [--json] [--arch ARCH]"

func init() {
	register(&command{
		name:    "config",
		summary: "inspect, encode and check Jailhouse cell and system configurations",
		usage:   configUsage,
		run:     runConfig,
	})
}

// exitBadInput is runphi config's exit code for an input file that cannot
// be read, decoded or encoded (0 is success, 1 "check found errors").
const exitBadInput = 2

// badInput marks an error in an input file: exit 2, like jailhouse's own
// tools for an unreadable file, so that 1 keeps meaning "check found errors".
func badInput(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &codeError{code: exitBadInput, err: err} // already names the file
	}
	return &codeError{code: exitBadInput, err: fmt.Errorf("%s: %w", displayPath(path), err)}
}

func displayPath(path string) string {
	if path == "-" {
		return "<stdin>"
	}
	return path
}

func runConfig(env *cmdEnv, args []string) error {
	if len(args) == 0 {
		return usagef("missing subcommand (inspect, encode or check)")
	}
	switch args[0] {
	case "inspect":
		return runConfigInspect(env, args[1:])
	case "encode":
		return runConfigEncode(env, args[1:])
	case "check":
		return runConfigCheck(env, args[1:])
	case "-h", "-help", "--help":
		fmt.Fprintf(env.stderr, "usage: runphi %s\n", strings.ReplaceAll(configUsage, " | ", "\n       runphi "))
		return flag.ErrHelp
	}
	return usagef("unknown subcommand %q (want inspect, encode or check)", args[0])
}

// archFlag is --arch: the architecture of a revision 12/13 file, which does
// not record it. For revision 14 it must match the file.
func archFlag(fs *flag.FlagSet) *string {
	return fs.String("arch", "", "architecture `ARCH` (x86, arm, arm64) of a revision 12/13 file, which does not record it;\n"+
		"for revision 14 the file's must match")
}

func parseArchFlag(s string) (jailhouse.Arch, error) {
	if s == "" {
		return jailhouse.ArchUnknown, nil
	}
	a, err := jailhouse.ParseArch(s)
	if err != nil {
		return 0, usagef("--arch: %v", err)
	}
	return a, nil
}

// readInput reads path, or standard input for "-" (so that
// "inspect --json X | encode - -o Y" works).
func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// loadedConfig is one decoded .cell file: exactly one of cell and sys is set.
type loadedConfig struct {
	path string
	size int
	cell *jailhouse.Cell
	sys  *jailhouse.System
	// archNote says where the architecture came from when the file does
	// not record it (revisions 12 and 13).
	archNote string
}

// loadConfig reads and decodes a cell or system configuration, telling
// them apart by the signature. arch is --arch, ArchUnknown when not given.
func loadConfig(env *cmdEnv, path string, arch jailhouse.Arch) (*loadedConfig, error) {
	b, err := readInput(path)
	if err != nil {
		return nil, badInput(path, err)
	}
	lc := &loadedConfig{path: path, size: len(b)}
	if bytes.HasPrefix(b, []byte("JHSYS")) {
		if arch == jailhouse.ArchUnknown {
			lc.sys, err = jailhouse.DecodeSystem(b)
		} else {
			lc.sys, err = jailhouse.DecodeSystemArch(b, arch)
		}
		if err != nil {
			return nil, badInput(path, err)
		}
		if lc.sys.Revision != jailhouse.Revision14 {
			lc.archNote = archNote(lc.sys.Revision, lc.sys.Arch, arch, true)
		}
		return lc, nil
	}
	if lc.cell, err = jailhouse.DecodeCell(b); err != nil {
		return nil, badInput(path, err)
	}
	c := lc.cell
	switch {
	case c.Revision != jailhouse.Revision14:
		c.Arch = arch
		lc.archNote = archNote(c.Revision, c.Arch, arch, false)
	case arch != jailhouse.ArchUnknown && c.Arch != arch:
		return nil, badInput(path, &jailhouse.FormatError{Offset: 5, Field: "architecture", Revision: c.Revision,
			Err: jailhouse.ErrArchitecture, Detail: fmt.Sprintf("file is %v, --arch says %v", c.Arch, arch)})
	}
	return lc, nil
}

func archNote(rev jailhouse.Revision, got, flagArch jailhouse.Arch, system bool) string {
	switch {
	case flagArch != jailhouse.ArchUnknown:
		return fmt.Sprintf("from --arch; revision %d does not record it", rev)
	case !system:
		return fmt.Sprintf("not recorded in revision %d; give --arch", rev)
	case got == jailhouse.ArchX86:
		return fmt.Sprintf("inferred from the platform_info layout; revision %d does not record it", rev)
	}
	return fmt.Sprintf("arm or arm64, inferred from the platform_info layout; revision %d does not record which, give --arch", rev)
}

// ---- inspect ----

func runConfigInspect(env *cmdEnv, args []string) error {
	const synopsis = "config inspect FILE [--json] [--arch ARCH]"
	fs := newFlagSet(env, "config inspect", synopsis)
	asJSON := fs.Bool("json", false, "print the JSON form that 'runphi config encode' reads back into the identical file")
	archName := archFlag(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one FILE (\"-\" for standard input), got %d arguments", len(pos))
	}
	arch, err := parseArchFlag(*archName)
	if err != nil {
		return err
	}
	lc, err := loadConfig(env, pos[0], arch)
	if err != nil {
		return err
	}
	if *asJSON {
		var v any
		if lc.sys != nil {
			v, err = jailhouse.SystemToJSON(lc.sys)
		} else {
			v, err = jailhouse.CellToJSON(lc.cell)
		}
		if err != nil {
			return badInput(lc.path, err)
		}
		return emitJSON(env, v)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	p := &cfgPrinter{w: tw}
	p.file(lc)
	return tw.Flush()
}

// cfgPrinter prints the human form of a configuration. Each line is a key
// and a value separated by a tab, indented by two spaces per level, so the
// tabwriter aligns the values of each block; headers have no tab and end
// the block above them.
type cfgPrinter struct {
	w io.Writer
}

func (p *cfgPrinter) kv(indent int, key, format string, args ...any) {
	fmt.Fprintf(p.w, "%s%s\t%s\n", strings.Repeat("  ", indent), key, fmt.Sprintf(format, args...))
}

func (p *cfgPrinter) header(indent int, title string) {
	fmt.Fprintf(p.w, "%s%s\n", strings.Repeat("  ", indent), title)
}

// row prints one table row of tab-separated cells.
func (p *cfgPrinter) row(indent int, cells ...string) {
	for len(cells) > 0 && cells[len(cells)-1] == "" {
		cells = cells[:len(cells)-1]
	}
	fmt.Fprintf(p.w, "%s%s\n", strings.Repeat("  ", indent), strings.Join(cells, "\t"))
}

func hex(v uint64) string { return fmt.Sprintf("%#x", v) }

// withNames prints a number and, when it has any, its names.
func withNames(v uint64, names string) string {
	if v == 0 || names == "" {
		return hex(v)
	}
	return hex(v) + "  " + names
}

// names is the names column of a table: empty for no flags.
func names(v uint64, names string) string {
	if v == 0 {
		return ""
	}
	return names
}

// enumText prints an enum's number and name ("3  PL011").
func enumText(v uint64, name string) string {
	if name == fmt.Sprint(v) {
		return name
	}
	return fmt.Sprintf("%d  %s", v, name)
}

func (p *cfgPrinter) file(lc *loadedConfig) {
	if s := lc.sys; s != nil {
		p.header(0, fmt.Sprintf("%s: system configuration, %d bytes", displayPath(lc.path), lc.size))
		p.kv(0, "signature", "%s", signature(s.Revision, true))
		p.arch(s.Arch, s.Revision, lc.archNote)
		p.kv(0, "revision", "%d", s.Revision)
		p.kv(0, "flags", "%s", withNames(uint64(s.Flags), s.Flags.String()))
		p.header(0, "hypervisor_memory:")
		p.memory(1, &s.HypervisorMemory)
		p.header(0, "debug_console:")
		p.console(1, &s.DebugConsole)
		p.platform(s)
		p.header(0, "root_cell:")
		p.cell(1, &s.RootCell)
		return
	}
	c := lc.cell
	p.header(0, fmt.Sprintf("%s: cell configuration, %d bytes", displayPath(lc.path), lc.size))
	p.kv(0, "signature", "%s", signature(c.Revision, false))
	p.arch(c.Arch, c.Revision, lc.archNote)
	p.kv(0, "revision", "%d", c.Revision)
	p.cell(0, c)
}

func signature(rev jailhouse.Revision, system bool) string {
	switch {
	case system && rev == jailhouse.Revision14:
		return "JHSYS"
	case system:
		return "JHSYST"
	case rev == jailhouse.Revision14:
		return "JHCLL"
	}
	return "JHCELL"
}

func (p *cfgPrinter) arch(a jailhouse.Arch, rev jailhouse.Revision, note string) {
	switch {
	case note == "":
		p.kv(0, "architecture", "%d  %v", a, a)
	case a == jailhouse.ArchUnknown:
		p.kv(0, "architecture", "(%s)", note)
	default:
		p.kv(0, "architecture", "%v  (%s)", a, note)
	}
}

func (p *cfgPrinter) memory(indent int, m *jailhouse.Memory) {
	p.kv(indent, "phys_start", "%s", hex(m.PhysStart))
	p.kv(indent, "virt_start", "%s", hex(m.VirtStart))
	p.kv(indent, "size", "%s", hex(m.Size))
	p.kv(indent, "flags", "%s", withNames(uint64(m.Flags), m.Flags.String()))
}

func (p *cfgPrinter) console(indent int, c *jailhouse.Console) {
	p.kv(indent, "address", "%s", hex(c.Address))
	p.kv(indent, "size", "%s", hex(uint64(c.Size)))
	p.kv(indent, "type", "%s", enumText(uint64(c.Type), jailhouse.ConsoleTypeName(c.Type)))
	p.kv(indent, "flags", "%s", withNames(uint64(c.Flags), jailhouse.ConsoleFlagsString(c.Flags)))
	p.kv(indent, "divider", "%s", hex(uint64(c.Divider)))
	p.kv(indent, "gate_nr", "%d", c.GateNr)
	p.kv(indent, "clock_reg", "%s", hex(c.ClockReg))
}

func (p *cfgPrinter) platform(s *jailhouse.System) {
	pi := &s.Platform
	p.header(0, "platform_info:")
	p.kv(1, "pci_mmconfig_base", "%s", hex(pi.PCIMMConfigBase))
	p.kv(1, "pci_mmconfig_end_bus", "%d", pi.PCIMMConfigEndBus)
	p.kv(1, "pci_is_virtual", "%d", pi.PCIIsVirtual)
	p.kv(1, "pci_domain", "%d", pi.PCIDomain)
	used := 0
	for _, u := range pi.IOMMUUnits {
		if u != (jailhouse.IOMMU{}) {
			used++
		}
	}
	p.kv(1, "iommu_units", "%d of %d in use", used, len(pi.IOMMUUnits))
	if s.Arch == jailhouse.ArchX86 {
		x := &pi.X86
		p.header(1, "x86:")
		p.kv(2, "pm_timer_address", "%s", hex(uint64(x.PMTimerAddress)))
		p.kv(2, "apic_mode", "%s", enumText(uint64(x.APICMode), jailhouse.APICModeName(x.APICMode)))
		p.kv(2, "vtd_interrupt_limit", "%d", x.VTDInterruptLimit)
		p.kv(2, "tsc_khz", "%d", x.TSCkHz)
		p.kv(2, "apic_khz", "%d", x.APICkHz)
	} else {
		a := &pi.ARM
		p.header(1, "arm:")
		p.kv(2, "maintenance_irq", "%d", a.MaintenanceIRQ)
		p.kv(2, "gic_version", "%d", a.GICVersion)
		p.kv(2, "gicd_base", "%s", hex(a.GICDBase))
		p.kv(2, "gicc_base", "%s", hex(a.GICCBase))
		p.kv(2, "gich_base", "%s", hex(a.GICHBase))
		p.kv(2, "gicv_base", "%s", hex(a.GICVBase))
		p.kv(2, "gicr_base", "%s", hex(a.GICRBase))
	}
	for i, u := range pi.IOMMUUnits {
		if u == (jailhouse.IOMMU{}) {
			continue
		}
		p.header(1, fmt.Sprintf("iommu_units[%d]:", i))
		p.kv(2, "type", "%s", enumText(uint64(u.Type), jailhouse.IOMMUTypeName(u.Type)))
		p.kv(2, "base", "%s", hex(u.Base))
		p.kv(2, "size", "%s", hex(uint64(u.Size)))
		if u.Type == jailhouse.IOMMUPVU {
			p.kv(2, "tipvu.tlb_base", "%s", hex(u.PVUTLBBase))
			p.kv(2, "tipvu.tlb_size", "%s", hex(uint64(u.PVUTLBSize)))
		} else if u.Type == jailhouse.IOMMUAMD || u.AMDBDF != 0 || u.AMDBaseCap != 0 || u.AMDMSICap != 0 || u.AMDFeatures != 0 {
			// The union's amd member; other types leave it zero.
			p.kv(2, "amd.bdf", "%s", bdfText(u.AMDBDF))
			p.kv(2, "amd.base_cap", "%s", hex(uint64(u.AMDBaseCap)))
			p.kv(2, "amd.msi_cap", "%s", hex(uint64(u.AMDMSICap)))
			p.kv(2, "amd.features", "%s", hex(uint64(u.AMDFeatures)))
		}
	}
}

// bdfText prints a bus/device/function number as lspci does, with the
// raw value.
func bdfText(bdf uint16) string {
	return fmt.Sprintf("%#x  %s", bdf, jailhouse.FormatBDF(bdf))
}

func (p *cfgPrinter) cell(in int, c *jailhouse.Cell) {
	p.kv(in, "name", "%q", c.Name)
	p.kv(in, "id", "%d", c.ID)
	p.kv(in, "flags", "%s", withNames(uint64(c.Flags), c.Flags.String()))
	p.kv(in, "cpu_set_size", "%d", len(c.CPUSet))
	cpus := jailhouse.FormatCPUList(c.CPUs())
	if cpus == "" {
		cpus = "none"
	}
	p.kv(in, "cpus", "%s", cpus)
	p.kv(in, "num_memory_regions", "%d", len(c.MemoryRegions))
	p.kv(in, "num_cache_regions", "%d", len(c.CacheRegions))
	p.kv(in, "num_irqchips", "%d", len(c.IRQChips))
	p.kv(in, "num_pio_regions", "%d", len(c.PIORegions))
	p.kv(in, "num_pci_devices", "%d", len(c.PCIDevices))
	p.kv(in, "num_pci_caps", "%d", len(c.PCICaps))
	p.kv(in, "num_stream_ids", "%d", len(c.StreamIDs))
	p.kv(in, "vpci_irq_base", "%d", c.VPCIIRQBase)
	p.kv(in, "cpu_reset_address", "%s", hex(c.CPUResetAddress))
	p.kv(in, "msg_reply_timeout", "%d", c.MsgReplyTimeout)
	p.header(in, "console:")
	p.console(in+1, &c.Console)

	if len(c.MemoryRegions) > 0 {
		p.header(in, "mem_regions:")
		p.row(in+1, "#", "phys_start", "virt_start", "size", "flags")
		for i, m := range c.MemoryRegions {
			p.row(in+1, fmt.Sprint(i), hex(m.PhysStart), hex(m.VirtStart), hex(m.Size),
				hex(uint64(m.Flags)), names(uint64(m.Flags), m.Flags.String()))
		}
	}
	if len(c.CacheRegions) > 0 {
		p.header(in, "cache_regions:")
		p.row(in+1, "#", "start", "size", "type", "flags")
		for i, r := range c.CacheRegions {
			p.row(in+1, fmt.Sprint(i), fmt.Sprint(r.Start), fmt.Sprint(r.Size),
				enumText(uint64(r.Type), jailhouse.CacheTypeName(r.Type)),
				hex(uint64(r.Flags)), names(uint64(r.Flags), jailhouse.CacheFlagsString(r.Flags)))
		}
	}
	for i, ic := range c.IRQChips {
		p.header(in, fmt.Sprintf("irqchips[%d]:", i))
		p.kv(in+1, "address", "%s", hex(ic.Address))
		p.kv(in+1, "id", "%s", hex(uint64(ic.ID)))
		p.kv(in+1, "pin_base", "%d", ic.PinBase)
		p.kv(in+1, "pin_bitmap", "%#08x %#08x %#08x %#08x", ic.PinBitmap[0], ic.PinBitmap[1], ic.PinBitmap[2], ic.PinBitmap[3])
		p.kv(in+1, "pins", "%s", pinsText(ic))
	}
	if len(c.PIORegions) > 0 {
		p.header(in, "pio_regions:")
		p.row(in+1, "#", "base", "length", "ports")
		for i, r := range c.PIORegions {
			ports := "none"
			if r.Length > 0 {
				ports = fmt.Sprintf("%#x-%#x", r.Base, uint32(r.Base)+uint32(r.Length)-1)
			}
			p.row(in+1, fmt.Sprint(i), hex(uint64(r.Base)), hex(uint64(r.Length)), ports)
		}
	}
	for i := range c.PCIDevices {
		p.pciDevice(in, i, &c.PCIDevices[i])
	}
	if len(c.PCICaps) > 0 {
		p.header(in, "pci_caps:")
		p.row(in+1, "#", "id", "start", "len", "flags")
		for i, pc := range c.PCICaps {
			id := hex(uint64(pc.ID))
			if pc.ID&jailhouse.PCIExtCapability != 0 {
				id += fmt.Sprintf(" (extended %#x)", pc.ID&^jailhouse.PCIExtCapability)
			}
			p.row(in+1, fmt.Sprint(i), id, hex(uint64(pc.Start)), fmt.Sprint(pc.Len),
				hex(uint64(pc.Flags)), names(uint64(pc.Flags), jailhouse.PCICapFlagsString(pc.Flags)))
		}
	}
	if len(c.StreamIDs) > 0 {
		p.header(in, "stream_ids:")
		for i, id := range c.StreamIDs {
			p.row(in+1, fmt.Sprint(i), hex(uint64(id)))
		}
	}
}

// pinsText lists the interrupt pins an irqchip entry gives the cell: bit b
// of pin_bitmap[w] is pin pin_base + 32*w + b (on ARM, the GIC interrupt
// ID; on x86, the IOAPIC pin).
func pinsText(ic jailhouse.IRQChip) string {
	var pins []int
	for w, word := range ic.PinBitmap {
		for b := range 32 {
			if word&(1<<b) != 0 {
				pins = append(pins, int(ic.PinBase)+32*w+b)
			}
		}
	}
	if len(pins) == 0 {
		return "none"
	}
	return jailhouse.FormatCPUList(pins)
}

func (p *cfgPrinter) pciDevice(in, i int, d *jailhouse.PCIDevice) {
	p.header(in, fmt.Sprintf("pci_devices[%d]:", i))
	in++
	p.kv(in, "type", "%s", enumText(uint64(d.Type), jailhouse.PCITypeName(d.Type)))
	p.kv(in, "iommu", "%d", d.IOMMU)
	p.kv(in, "domain", "%d", d.Domain)
	p.kv(in, "bdf", "%s", bdfText(d.BDF))
	bars := make([]string, len(d.BARMask))
	for k, m := range d.BARMask {
		bars[k] = fmt.Sprintf("%#08x", m)
	}
	p.kv(in, "bar_mask", "%s", strings.Join(bars, " "))
	p.kv(in, "caps_start", "%d", d.CapsStart)
	p.kv(in, "num_caps", "%d", d.NumCaps)
	p.kv(in, "num_msi_vectors", "%d", d.NumMSIVectors)
	p.kv(in, "msi_64bits", "%d", b2i(d.MSI64Bits))
	p.kv(in, "msi_maskable", "%d", b2i(d.MSIMaskable))
	p.kv(in, "num_msix_vectors", "%d", d.NumMSIXVectors)
	p.kv(in, "msix_region_size", "%s", hex(uint64(d.MSIXRegionSize)))
	p.kv(in, "msix_address", "%s", hex(d.MSIXAddress))
	p.kv(in, "shmem_regions_start", "%d", d.ShmemRegionsStart)
	p.kv(in, "shmem_dev_id", "%d", d.ShmemDevID)
	p.kv(in, "shmem_peers", "%d", d.ShmemPeers)
	p.kv(in, "shmem_protocol", "%#x  %s", d.ShmemProtocol, jailhouse.ShmemProtocolName(d.ShmemProtocol))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ---- encode ----

func runConfigEncode(env *cmdEnv, args []string) error {
	const synopsis = "config encode FILE.json -o FILE.cell"
	fs := newFlagSet(env, "config encode", synopsis)
	out := fs.String("o", "", "write the binary configuration to this `file` (\"-\" for standard output) (required)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one FILE.json (\"-\" for standard input), got %d arguments", len(pos))
	}
	if *out == "" {
		return usagef("-o is required")
	}
	in := pos[0]
	text, err := readInput(in)
	if err != nil {
		return badInput(in, err)
	}
	cell, sys, err := jailhouse.UnmarshalConfigJSON(text)
	if err != nil {
		return badInput(in, err)
	}
	var b []byte
	var what string
	if sys != nil {
		b, err = sys.MarshalBinary()
		what = fmt.Sprintf("system configuration (root cell %q), revision %d", sys.RootCell.Name, sys.Revision)
	} else {
		b, err = cell.MarshalBinary()
		what = fmt.Sprintf("cell configuration %q, revision %d", cell.Name, cell.Revision)
	}
	if err != nil {
		return badInput(in, fmt.Errorf("cannot encode: %w", err))
	}
	if *out == "-" {
		_, err := env.stdout.Write(b)
		return err
	}
	if err := writeFileAtomic(*out, b); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s: %s, %d bytes\n", *out, what, len(b))
	return nil
}

// writeFileAtomic replaces path with b through a temporary file in the same
// directory, so a failed write never leaves half a configuration where a
// board would load it.
func writeFileAtomic(path string, b []byte) (retErr error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ---- check ----

// checkOutput is the --json form of runphi config check.
type checkOutput struct {
	Files    []checkedFile  `json:"files"`
	Findings []checkFinding `json:"findings"`
	Errors   int            `json:"errors"`
	Warnings int            `json:"warnings"`
}

type checkedFile struct {
	Path string `json:"path"`
	Kind string `json:"kind"` // "system" or "cell"
	Cell string `json:"cell"` // the cell's name; the root cell's for a system
}

type checkFinding struct {
	Severity string `json:"severity"` // "error" or "warning"
	Cell     string `json:"cell"`
	Field    string `json:"field"`
	Message  string `json:"message"`
}

func runConfigCheck(env *cmdEnv, args []string) error {
	const synopsis = "config check SYSCONFIG [CELL...] [--json] [--arch ARCH]"
	fs := newFlagSet(env, "config check", synopsis)
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	archName := archFlag(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want a system configuration and any number of cell configurations")
	}
	arch, err := parseArchFlag(*archName)
	if err != nil {
		return err
	}
	var (
		sys   *jailhouse.System
		cells []*jailhouse.Cell
		out   = checkOutput{Files: []checkedFile{}, Findings: []checkFinding{}}
	)
	for i, path := range pos {
		lc, err := loadConfig(env, path, arch)
		if err != nil {
			return err
		}
		switch {
		case i == 0 && lc.sys == nil:
			return badInput(path, fmt.Errorf("%w: the first file must be a system configuration (JHSYS), this is a cell configuration", jailhouse.ErrBadSignature))
		case i > 0 && lc.sys != nil:
			return badInput(path, fmt.Errorf("%w: only the first file may be a system configuration, this is one", jailhouse.ErrBadSignature))
		case lc.sys != nil:
			sys = lc.sys
			out.Files = append(out.Files, checkedFile{Path: path, Kind: "system", Cell: sys.RootCell.Name})
		default:
			if lc.cell.Arch == jailhouse.ArchUnknown && arch == jailhouse.ArchUnknown && sys.Arch != jailhouse.ArchUnknown {
				// A revision 12/13 cell records no architecture; it runs
				// on the system it is checked against.
				lc.cell.Arch = sys.Arch
			}
			cells = append(cells, lc.cell)
			out.Files = append(out.Files, checkedFile{Path: path, Kind: "cell", Cell: lc.cell.Name})
		}
	}
	findings := jailhouse.Check(sys, cells...)
	for _, f := range findings {
		out.Findings = append(out.Findings, checkFinding{Severity: f.Severity.String(), Cell: f.Cell, Field: f.Field, Message: f.Msg})
		if f.Severity == jailhouse.SeverityError {
			out.Errors++
		} else {
			out.Warnings++
		}
	}
	if *asJSON {
		if err := emitJSON(env, out); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
		if len(findings) > 0 {
			fmt.Fprintln(tw, "SEVERITY\tCELL\tFIELD\tMESSAGE")
			for _, f := range out.Findings {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Severity, f.Cell, f.Field, f.Message)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "%s, %s in %s\n", plural(out.Errors, "error"), plural(out.Warnings, "warning"),
			plural(len(out.Files), "configuration"))
	}
	if out.Errors > 0 {
		return fmt.Errorf("%s found", plural(out.Errors, "error"))
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
