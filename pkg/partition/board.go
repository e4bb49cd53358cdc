package partition

import (
	"bytes"
	"cmp"
	"embed"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
)

//go:embed boards/*.toml
var builtinBoards embed.FS

// pageSize is the smallest unit the hypervisor maps (every architecture).
const pageSize = 0x1000

// Errors returned by LoadBoard.
var (
	// ErrInvalidBoard means a board profile is missing, malformed or does
	// not fit its own root cell (see BoardError).
	ErrInvalidBoard = errors.New("invalid board profile")
)

// Board is a board profile: what partitions may use on one kind of machine,
// the fixed parts of every partition's cell, and the root cell system
// configuration the hypervisor is enabled with. A Board is immutable after
// LoadBoard; SystemConfig returns a fresh copy.
type Board struct {
	// Name is the profile name (the built-in name or the file's name key).
	Name        string
	Description string
	// Source is where the profile came from: "builtin:<name>" or a file path.
	Source string

	Arch     jailhouse.Arch
	Revision jailhouse.Revision

	// PartitionCPUs are the CPUs partitions may get, ascending. The other
	// CPUs of the root cell stay with root Linux.
	PartitionCPUs []int
	// Pool is the physical RAM partitions are carved from.
	Pool Range
	// Granule is the unit of partition RAM: sizes are rounded up to it and
	// blocks start at multiples of it (a power of two, at least 4 KiB).
	Granule uint64
	// CPUResetAddress is the cell address a partition starts at, and where a
	// raw binary is loaded, when the boot description gives no
	// starting_vaddress.
	CPUResetAddress uint64
	// CommRegion is the cell address of the communication page.
	CommRegion uint64
	// VPCIIRQBase is the cell's vpci_irq_base.
	VPCIIRQBase uint32
	// GICAddress is the address of the interrupt controller (GIC
	// distributor) named by the cell's irqchip entry.
	GICAddress uint64
	// Console is the UART a cell may use; it is shared with the root cell.
	Console jailhouse.Console
	// ConsoleSPI is the interrupt (GIC INTID) of that UART.
	ConsoleSPI uint32

	system *jailhouse.System
}

// Range is the half-open physical address range [Start, End).
type Range struct {
	Start uint64 `json:"start"`
	End   uint64 `json:"end"`
}

// Size is End - Start.
func (r Range) Size() uint64 { return r.End - r.Start }

// Overlaps reports whether r and o share at least one byte.
func (r Range) Overlaps(o Range) bool { return r.Start < o.End && o.Start < r.End }

// Contains reports whether o lies entirely inside r.
func (r Range) Contains(o Range) bool { return r.Start <= o.Start && o.End <= r.End }

// String renders the range as "0x70000000-0x7f800000" (end exclusive).
func (r Range) String() string { return fmt.Sprintf("%#x-%#x", r.Start, r.End) }

// BuiltinBoards lists the names of the embedded board profiles.
func BuiltinBoards() []string {
	entries, _ := builtinBoards.ReadDir("boards")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".toml"))
	}
	sort.Strings(names)
	return names
}

// LoadBoard loads a board profile: a built-in name ("qemu-arm64") or the
// path of a TOML file (anything containing a '/' or ending in ".toml"). The
// profile is checked against its own root cell before it is returned, so a
// bad profile fails here and not at the first container: the pool must lie in
// root RAM and outside hypervisor memory, the partition CPUs must belong to
// the root cell (and leave it at least one), the console UART and its
// interrupt must be the root cell's, and the GIC address must match.
func LoadBoard(nameOrPath string) (*Board, error) {
	var data []byte
	var source string
	if strings.Contains(nameOrPath, "/") || strings.HasSuffix(nameOrPath, ".toml") {
		b, err := os.ReadFile(nameOrPath)
		if err != nil {
			return nil, boardError(nameOrPath, "", err)
		}
		data, source = b, nameOrPath
	} else {
		b, err := builtinBoards.ReadFile(path.Join("boards", nameOrPath+".toml"))
		if err != nil {
			return nil, boardError("builtin:"+nameOrPath, "",
				fmt.Errorf("no built-in board profile %q (built-in: %s; or give a path to a .toml file)",
					nameOrPath, strings.Join(BuiltinBoards(), ", ")))
		}
		data, source = b, "builtin:"+nameOrPath
	}
	return ParseBoard(source, data)
}

// ParseBoard parses and checks a board profile in TOML; source names it in
// errors.
func ParseBoard(source string, data []byte) (*Board, error) {
	var f boardFile
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&f)
	if err != nil {
		return nil, boardError(source, "", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, boardError(source, "", fmt.Errorf("unknown keys: %s", strings.Join(keys, ", ")))
	}
	for _, k := range [][]string{
		{"name"}, {"arch"}, {"revision"},
		{"partitions", "cpus"}, {"partitions", "pool"}, {"partitions", "granule"},
		{"partitions", "comm_region"}, {"partitions", "gic"}, {"partitions", "console"},
		{"partitions", "console_spi"},
		{"system", "hypervisor_memory"}, {"system", "root_cell", "cpus"},
	} {
		if !md.IsDefined(k...) {
			return nil, boardError(source, strings.Join(k, "."), errors.New("missing"))
		}
	}
	b, err := f.board(source)
	if err != nil {
		return nil, err
	}
	if err := b.check(); err != nil {
		return nil, err
	}
	return b, nil
}

// SystemConfig returns the root cell system configuration of the board (a
// copy the caller may change), the configuration the hypervisor (or the
// simulator) is enabled with.
func (b *Board) SystemConfig() *jailhouse.System {
	s := *b.system
	s.RootCell = cloneCell(&b.system.RootCell)
	return &s
}

// RootCPUs returns the CPUs of the root cell's configuration.
func (b *Board) RootCPUs() []int { return b.system.RootCell.CPUs() }

func cloneCell(c *jailhouse.Cell) jailhouse.Cell {
	n := *c
	n.CPUSet = slices.Clone(c.CPUSet)
	n.MemoryRegions = slices.Clone(c.MemoryRegions)
	n.CacheRegions = slices.Clone(c.CacheRegions)
	n.IRQChips = slices.Clone(c.IRQChips)
	n.PIORegions = slices.Clone(c.PIORegions)
	n.PCIDevices = slices.Clone(c.PCIDevices)
	n.PCICaps = slices.Clone(c.PCICaps)
	n.StreamIDs = slices.Clone(c.StreamIDs)
	return n
}

// check verifies the profile against its own root cell.
func (b *Board) check() error {
	fail := func(key string, format string, args ...any) error {
		return boardError(b.Source, key, fmt.Errorf(format, args...))
	}
	sys := b.system
	root := &sys.RootCell

	if len(root.Name) == 0 || len(root.Name) > 31 {
		return fail("system.root_cell.name", "%q must be 1 to 31 bytes", root.Name)
	}
	rootCPUs := root.CPUs()
	if len(rootCPUs) == 0 {
		return fail("system.root_cell.cpus", "the root cell has no CPU")
	}
	if len(b.PartitionCPUs) == 0 {
		return fail("partitions.cpus", "no CPU for partitions")
	}
	for _, c := range b.PartitionCPUs {
		if !slices.Contains(rootCPUs, c) {
			return fail("partitions.cpus", "CPU %d is not in the root cell's CPUs %s", c, jailhouse.FormatCPUList(rootCPUs))
		}
	}
	if len(b.PartitionCPUs) == len(rootCPUs) {
		return fail("partitions.cpus", "%s would leave root Linux no CPU", jailhouse.FormatCPUList(b.PartitionCPUs))
	}

	if b.Granule < pageSize || bits.OnesCount64(b.Granule) != 1 {
		return fail("partitions.granule", "%#x is not a power of two of at least 4 KiB", b.Granule)
	}
	if b.Pool.Start >= b.Pool.End {
		return fail("partitions.pool", "%s is empty", b.Pool)
	}
	if b.Pool.Start%pageSize != 0 || b.Pool.End%pageSize != 0 {
		return fail("partitions.pool", "%s is not 4 KiB aligned", b.Pool)
	}
	if alignUp(b.Pool.Start, b.Granule)+b.Granule > b.Pool.End {
		return fail("partitions.pool", "%s holds no %#x-aligned block of one granule", b.Pool, b.Granule)
	}
	hv := Range{sys.HypervisorMemory.PhysStart, sys.HypervisorMemory.PhysStart + sys.HypervisorMemory.Size}
	if hv.Size() == 0 {
		return fail("system.hypervisor_memory", "size is 0")
	}
	if b.Pool.Overlaps(hv) {
		return fail("partitions.pool", "%s overlaps the hypervisor memory %s", b.Pool, hv)
	}
	if !covered(b.Pool, rootRAM(root)) {
		return fail("partitions.pool", "%s is not inside the root cell's RAM (%s)", b.Pool, formatRanges(rootRAM(root)))
	}
	for i, m := range root.MemoryRegions {
		r := Range{m.PhysStart, m.PhysStart + m.Size}
		if m.Size != 0 && !isRAM(m) && r.Overlaps(b.Pool) {
			return fail("partitions.pool", "%s overlaps root cell memory region %d (%s, flags %#x), which is not RAM", b.Pool, i, r, uint64(m.Flags))
		}
	}

	for _, a := range []struct {
		key string
		v   uint64
	}{{"partitions.cpu_reset_address", b.CPUResetAddress}, {"partitions.comm_region", b.CommRegion}} {
		if a.v%pageSize != 0 {
			return fail(a.key, "%#x is not 4 KiB aligned", a.v)
		}
	}

	first := Range{b.CPUResetAddress, b.CPUResetAddress + b.Granule}
	for _, f := range b.fixedCellRanges() {
		if first.Overlaps(f.r) {
			return fail("partitions.cpu_reset_address", "one granule of RAM at %#x would cover the %s at %s", b.CPUResetAddress, f.what, f.r)
		}
	}

	if b.GICAddress != sys.Platform.ARM.GICDBase {
		return fail("partitions.gic", "%#x is not the GIC distributor of the system config (%#x)", b.GICAddress, sys.Platform.ARM.GICDBase)
	}
	con := Range{b.Console.Address, b.Console.Address + uint64(b.Console.Size)}
	if b.Console.Size == 0 || b.Console.Address%pageSize != 0 || b.Console.Size%pageSize != 0 {
		return fail("partitions.console", "UART %#x size %#x must be whole 4 KiB pages", b.Console.Address, b.Console.Size)
	}
	if !covered(con, rootIO(root)) {
		return fail("partitions.console", "UART %s is not in an I/O region of the root cell", con)
	}
	if b.ConsoleSPI < 32 || b.ConsoleSPI >= 1020 {
		return fail("partitions.console_spi", "%d is not an SPI (32-1019)", b.ConsoleSPI)
	}
	if !rootHasPin(root, b.GICAddress, b.ConsoleSPI) {
		return fail("partitions.console_spi", "interrupt %d is not the root cell's (no irqchip at %#x has its bit)", b.ConsoleSPI, b.GICAddress)
	}
	return nil
}

// isRAM reports whether a root cell region is plain RAM: readable, writable,
// not device memory, not the comm page, not shared with other cells.
func isRAM(m jailhouse.Memory) bool {
	return m.Flags&(jailhouse.MemRead|jailhouse.MemWrite) == jailhouse.MemRead|jailhouse.MemWrite &&
		m.Flags&(jailhouse.MemIO|jailhouse.MemCommRegion|jailhouse.MemRootShared) == 0 && m.Size != 0
}

func rootRAM(c *jailhouse.Cell) []Range {
	var rs []Range
	for _, m := range c.MemoryRegions {
		if isRAM(m) {
			rs = append(rs, Range{m.PhysStart, m.PhysStart + m.Size})
		}
	}
	return rs
}

func rootIO(c *jailhouse.Cell) []Range {
	var rs []Range
	for _, m := range c.MemoryRegions {
		if m.Flags&jailhouse.MemIO != 0 && m.Size != 0 {
			rs = append(rs, Range{m.PhysStart, m.PhysStart + m.Size})
		}
	}
	return rs
}

// covered reports whether r lies inside the union of rs.
func covered(r Range, rs []Range) bool {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b Range) int { return cmp.Compare(a.Start, b.Start) })
	at := r.Start
	for _, s := range sorted {
		if s.Start <= at && at < s.End {
			at = s.End
		}
		if at >= r.End {
			return true
		}
	}
	return at >= r.End
}

func formatRanges(rs []Range) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

func rootHasPin(c *jailhouse.Cell, gic uint64, pin uint32) bool {
	for _, ic := range c.IRQChips {
		if ic.Address != gic || pin < ic.PinBase || pin >= ic.PinBase+128 {
			continue
		}
		off := pin - ic.PinBase
		if ic.PinBitmap[off/32]&(1<<(off%32)) != 0 {
			return true
		}
	}
	return false
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// BoardError is a board profile that cannot be used. Source is the profile
// ("builtin:<name>" or its file path), Key the dotted TOML key at fault (""
// for the file as a whole). It matches ErrInvalidBoard,
// errdefs.ErrFailedPrecondition (the node is misconfigured, not the
// container) and Err through errors.Is.
type BoardError struct {
	Source string
	Key    string
	Err    error
}

func (e *BoardError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("board profile %s: %v", e.Source, e.Err)
	}
	return fmt.Sprintf("board profile %s: %s: %v", e.Source, e.Key, e.Err)
}

// Unwrap returns the sentinels and the cause.
func (e *BoardError) Unwrap() []error {
	return []error{ErrInvalidBoard, errdefs.ErrFailedPrecondition, e.Err}
}

func boardError(source, key string, err error) error {
	return &BoardError{Source: source, Key: key, Err: err}
}

// The TOML schema (docs/boards.md).
type boardFile struct {
	Name        string         `toml:"name"`
	Description string         `toml:"description"`
	Arch        string         `toml:"arch"`
	Revision    int            `toml:"revision"`
	Partitions  partitionsFile `toml:"partitions"`
	System      systemFile     `toml:"system"`
}

type partitionsFile struct {
	CPUs            string      `toml:"cpus"`
	Pool            rangeFile   `toml:"pool"`
	Granule         uint64      `toml:"granule"`
	CPUResetAddress uint64      `toml:"cpu_reset_address"`
	CommRegion      uint64      `toml:"comm_region"`
	VPCIIRQBase     uint32      `toml:"vpci_irq_base"`
	GIC             uint64      `toml:"gic"`
	Console         consoleFile `toml:"console"`
	ConsoleSPI      uint32      `toml:"console_spi"`
}

type rangeFile struct {
	Start uint64 `toml:"start"`
	End   uint64 `toml:"end"`
}

type consoleFile struct {
	Address  uint64   `toml:"address"`
	Size     uint32   `toml:"size"`
	Type     string   `toml:"type"`
	Flags    []string `toml:"flags"`
	Divider  uint32   `toml:"divider"`
	GateNr   uint32   `toml:"gate_nr"`
	ClockReg uint64   `toml:"clock_reg"`
}

type systemFile struct {
	Flags            []string     `toml:"flags"`
	HypervisorMemory memFile      `toml:"hypervisor_memory"`
	DebugConsole     consoleFile  `toml:"debug_console"`
	Platform         platformFile `toml:"platform"`
	RootCell         rootCellFile `toml:"root_cell"`
}

type platformFile struct {
	PCIMMConfigBase   uint64  `toml:"pci_mmconfig_base"`
	PCIMMConfigEndBus uint8   `toml:"pci_mmconfig_end_bus"`
	PCIIsVirtual      uint8   `toml:"pci_is_virtual"`
	PCIDomain         uint16  `toml:"pci_domain"`
	ARM               armFile `toml:"arm"`
}

type armFile struct {
	MaintenanceIRQ uint8  `toml:"maintenance_irq"`
	GICVersion     uint8  `toml:"gic_version"`
	GICDBase       uint64 `toml:"gicd_base"`
	GICCBase       uint64 `toml:"gicc_base"`
	GICHBase       uint64 `toml:"gich_base"`
	GICVBase       uint64 `toml:"gicv_base"`
	GICRBase       uint64 `toml:"gicr_base"`
}

type rootCellFile struct {
	Name        string        `toml:"name"`
	CPUs        string        `toml:"cpus"`
	CPUSetSize  int           `toml:"cpu_set_size"`
	VPCIIRQBase uint32        `toml:"vpci_irq_base"`
	Memory      []memFile     `toml:"memory"`
	IRQChips    []irqchipFile `toml:"irqchips"`
	PCIDevices  []pciFile     `toml:"pci_devices"`
}

type memFile struct {
	PhysStart uint64   `toml:"phys_start"`
	VirtStart uint64   `toml:"virt_start"`
	Size      uint64   `toml:"size"`
	Flags     []string `toml:"flags"`
}

type irqchipFile struct {
	Address   uint64   `toml:"address"`
	ID        uint32   `toml:"id"`
	PinBase   uint32   `toml:"pin_base"`
	PinBitmap []uint32 `toml:"pin_bitmap"`
}

type pciFile struct {
	Type              string   `toml:"type"`
	IOMMU             uint8    `toml:"iommu"`
	Domain            uint16   `toml:"domain"`
	BDF               uint16   `toml:"bdf"`
	BARMask           []uint32 `toml:"bar_mask"`
	CapsStart         uint16   `toml:"caps_start"`
	NumCaps           uint16   `toml:"num_caps"`
	NumMSIVectors     uint8    `toml:"num_msi_vectors"`
	MSI64Bits         bool     `toml:"msi_64bits"`
	MSIMaskable       bool     `toml:"msi_maskable"`
	NumMSIXVectors    uint16   `toml:"num_msix_vectors"`
	MSIXRegionSize    uint16   `toml:"msix_region_size"`
	MSIXAddress       uint64   `toml:"msix_address"`
	ShmemRegionsStart uint32   `toml:"shmem_regions_start"`
	ShmemDevID        uint8    `toml:"shmem_dev_id"`
	ShmemPeers        uint8    `toml:"shmem_peers"`
	ShmemProtocol     uint16   `toml:"shmem_protocol"`
}

var archNames = map[string]jailhouse.Arch{"arm": jailhouse.ArchARM, "arm64": jailhouse.ArchARM64}

var memFlagNames = map[string]jailhouse.MemFlags{
	"read": jailhouse.MemRead, "write": jailhouse.MemWrite, "execute": jailhouse.MemExecute,
	"dma": jailhouse.MemDMA, "io": jailhouse.MemIO, "comm_region": jailhouse.MemCommRegion,
	"loadable": jailhouse.MemLoadable, "rootshared": jailhouse.MemRootShared,
	"no_hugepages": jailhouse.MemNoHugepages, "io_unaligned": jailhouse.MemIOUnaligned,
	"io_8": jailhouse.MemIO8, "io_16": jailhouse.MemIO16, "io_32": jailhouse.MemIO32, "io_64": jailhouse.MemIO64,
}

var consoleTypeNames = map[string]uint16{
	"none": jailhouse.ConsoleNone, "efifb": jailhouse.ConsoleEFIFB, "8250": jailhouse.Console8250,
	"pl011": jailhouse.ConsolePL011, "xuartps": jailhouse.ConsoleXUARTPS, "mvebu": jailhouse.ConsoleMVEBU,
	"hscif": jailhouse.ConsoleHSCIF, "scifa": jailhouse.ConsoleSCIFA, "imx": jailhouse.ConsoleIMX,
	"imx-lpuart": jailhouse.ConsoleIMXLPUART, "scif": jailhouse.ConsoleSCIF,
}

var consoleFlagNames = map[string]uint16{
	"mmio": jailhouse.ConsoleAccessMMIO, "regdist-4": jailhouse.ConsoleRegDist4,
	"fb-1920x1080": jailhouse.ConsoleFB1920x1080, "inverted-gate": jailhouse.ConsoleInvertedGate,
	"mdr-quirk": jailhouse.ConsoleMDRQuirk,
}

var systemFlagNames = map[string]jailhouse.SystemFlags{"virtual-debug-console": jailhouse.SysVirtualDebugConsole}

var pciTypeNames = map[string]uint8{
	"device": jailhouse.PCITypeDevice, "bridge": jailhouse.PCITypeBridge, "ivshmem": jailhouse.PCITypeIVSHMEM,
}

// flagsOf ORs the named flags, refusing unknown names.
func flagsOf[T ~uint16 | ~uint32 | ~uint64](names []string, table map[string]T) (T, error) {
	var v T
	for _, n := range names {
		f, ok := table[n]
		if !ok {
			known := make([]string, 0, len(table))
			for k := range table {
				known = append(known, k)
			}
			sort.Strings(known)
			return 0, fmt.Errorf("unknown flag %q (known: %s)", n, strings.Join(known, ", "))
		}
		v |= f
	}
	return v, nil
}

func (c consoleFile) console() (jailhouse.Console, error) {
	t, ok := consoleTypeNames[c.Type]
	if !ok && c.Type != "" {
		return jailhouse.Console{}, fmt.Errorf("unknown console type %q", c.Type)
	}
	flags, err := flagsOf(c.Flags, consoleFlagNames)
	if err != nil {
		return jailhouse.Console{}, err
	}
	return jailhouse.Console{
		Address: c.Address, Size: c.Size, Type: t, Flags: flags,
		Divider: c.Divider, GateNr: c.GateNr, ClockReg: c.ClockReg,
	}, nil
}

// board turns the decoded file into a Board and its system config; check
// does the cross-checks.
func (f *boardFile) board(source string) (*Board, error) {
	fail := func(key string, err error) (*Board, error) { return nil, boardError(source, key, err) }

	arch, ok := archNames[f.Arch]
	if !ok {
		return fail("arch", fmt.Errorf("%q is not supported (want arm or arm64)", f.Arch))
	}
	rev := jailhouse.Revision(f.Revision)
	if rev < jailhouse.Revision12 || rev > jailhouse.Revision14 {
		return fail("revision", fmt.Errorf("%d is not a supported config revision (12 to 14)", f.Revision))
	}
	b := &Board{
		Name: f.Name, Description: f.Description, Source: source,
		Arch: arch, Revision: rev,
		Pool:            Range{f.Partitions.Pool.Start, f.Partitions.Pool.End},
		Granule:         f.Partitions.Granule,
		CPUResetAddress: f.Partitions.CPUResetAddress,
		CommRegion:      f.Partitions.CommRegion,
		VPCIIRQBase:     f.Partitions.VPCIIRQBase,
		GICAddress:      f.Partitions.GIC,
		ConsoleSPI:      f.Partitions.ConsoleSPI,
	}
	if b.Name == "" {
		return fail("name", errors.New("empty"))
	}
	var err error
	if b.PartitionCPUs, err = jailhouse.ParseCPUList(f.Partitions.CPUs); err != nil {
		return fail("partitions.cpus", err)
	}
	if b.Console, err = f.Partitions.Console.console(); err != nil {
		return fail("partitions.console", err)
	}

	s := &jailhouse.System{Revision: rev, Arch: arch}
	if s.Flags, err = flagsOf(f.System.Flags, systemFlagNames); err != nil {
		return fail("system.flags", err)
	}
	hv := f.System.HypervisorMemory
	if len(hv.Flags) != 0 {
		return fail("system.hypervisor_memory.flags", errors.New("the hypervisor memory takes no flags"))
	}
	s.HypervisorMemory = jailhouse.Memory{PhysStart: hv.PhysStart, VirtStart: hv.VirtStart, Size: hv.Size}
	if s.DebugConsole, err = f.System.DebugConsole.console(); err != nil {
		return fail("system.debug_console", err)
	}
	p := f.System.Platform
	s.Platform = jailhouse.Platform{
		PCIMMConfigBase: p.PCIMMConfigBase, PCIMMConfigEndBus: p.PCIMMConfigEndBus,
		PCIIsVirtual: p.PCIIsVirtual, PCIDomain: p.PCIDomain,
		ARM: jailhouse.ARMPlatform{
			MaintenanceIRQ: p.ARM.MaintenanceIRQ, GICVersion: p.ARM.GICVersion,
			GICDBase: p.ARM.GICDBase, GICCBase: p.ARM.GICCBase, GICHBase: p.ARM.GICHBase,
			GICVBase: p.ARM.GICVBase, GICRBase: p.ARM.GICRBase,
		},
	}

	rc := f.System.RootCell
	root := jailhouse.Cell{Revision: rev, Arch: arch, Name: rc.Name, VPCIIRQBase: rc.VPCIIRQBase}
	cpus, err := jailhouse.ParseCPUList(rc.CPUs)
	if err != nil {
		return fail("system.root_cell.cpus", err)
	}
	size := rc.CPUSetSize
	if size == 0 {
		size = 8
	}
	if root.CPUSet, err = jailhouse.CPUSetFromList(cpus, size); err != nil {
		return fail("system.root_cell.cpus", err)
	}
	for i, m := range rc.Memory {
		flags, err := flagsOf(m.Flags, memFlagNames)
		if err != nil {
			return fail(fmt.Sprintf("system.root_cell.memory[%d]", i), err)
		}
		root.MemoryRegions = append(root.MemoryRegions, jailhouse.Memory{
			PhysStart: m.PhysStart, VirtStart: m.VirtStart, Size: m.Size, Flags: flags,
		})
	}
	for i, ic := range rc.IRQChips {
		if len(ic.PinBitmap) != 4 {
			return fail(fmt.Sprintf("system.root_cell.irqchips[%d].pin_bitmap", i), fmt.Errorf("has %d words, want 4", len(ic.PinBitmap)))
		}
		if ic.PinBase%32 != 0 {
			return fail(fmt.Sprintf("system.root_cell.irqchips[%d].pin_base", i), fmt.Errorf("%d is not a multiple of 32", ic.PinBase))
		}
		chip := jailhouse.IRQChip{Address: ic.Address, ID: ic.ID, PinBase: ic.PinBase}
		copy(chip.PinBitmap[:], ic.PinBitmap)
		root.IRQChips = append(root.IRQChips, chip)
	}
	for i, d := range rc.PCIDevices {
		key := fmt.Sprintf("system.root_cell.pci_devices[%d]", i)
		t, ok := pciTypeNames[d.Type]
		if !ok {
			return fail(key+".type", fmt.Errorf("unknown PCI device type %q (device, bridge, ivshmem)", d.Type))
		}
		if len(d.BARMask) != 6 {
			return fail(key+".bar_mask", fmt.Errorf("has %d words, want 6", len(d.BARMask)))
		}
		dev := jailhouse.PCIDevice{
			Type: t, IOMMU: d.IOMMU, Domain: d.Domain, BDF: d.BDF,
			CapsStart: d.CapsStart, NumCaps: d.NumCaps, NumMSIVectors: d.NumMSIVectors,
			MSI64Bits: d.MSI64Bits, MSIMaskable: d.MSIMaskable, NumMSIXVectors: d.NumMSIXVectors,
			MSIXRegionSize: d.MSIXRegionSize, MSIXAddress: d.MSIXAddress,
			ShmemRegionsStart: d.ShmemRegionsStart, ShmemDevID: d.ShmemDevID,
			ShmemPeers: d.ShmemPeers, ShmemProtocol: d.ShmemProtocol,
		}
		copy(dev.BARMask[:], d.BARMask)
		root.PCIDevices = append(root.PCIDevices, dev)
	}
	s.RootCell = root
	b.system = s
	return b, nil
}
