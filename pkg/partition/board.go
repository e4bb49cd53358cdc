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
	"path/filepath"
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

// Board flavours: the Jailhouse tree a board runs, which decides details of
// the binary ABI beyond the config revision.
const (
	// FlavourUpstream is siemens/jailhouse.
	FlavourUpstream = "upstream"
	// FlavourOmnivisor is the Omnivisor fork (DanieleOttaviano/jailhouse)
	// of the ZynqMP boards, with Cortex-R5 RPUs. Its cell layout adds
	// fields this package does not write yet; the simulator takes the
	// upstream layout.
	FlavourOmnivisor = "omnivisor"
)

// Board is a board profile: what partitions may use on one kind of machine,
// the fixed parts of every partition's cell, and the root cell system
// configuration the hypervisor is enabled with. A Board is immutable after
// LoadBoard; SystemConfig returns a fresh copy. docs/boards.md describes the
// file format.
type Board struct {
	// Name is the profile name (the built-in name or the file's name key).
	Name        string
	Description string
	// Source is where the profile came from: "builtin:<name>" or a file path.
	Source string

	Arch     jailhouse.Arch
	Revision jailhouse.Revision
	// Flavour is FlavourUpstream or FlavourOmnivisor.
	Flavour string

	// PartitionCPUs are the CPUs partitions may get, ascending. The other
	// CPUs of the root cell stay with root Linux.
	PartitionCPUs []int
	// Pools are the physical RAM ranges partitions are carved from,
	// ascending and disjoint.
	Pools []Range
	// Pool is Pools[0], for callers that know boards with one pool.
	Pool Range
	// Granule is the unit of partition RAM: sizes are rounded up to it and
	// blocks start at multiples of it (a power of two, at least 4 KiB).
	Granule uint64
	// LoaderArea is the size of the loader RAM ("RAM0") a partition gets
	// at cell address 0 when its main RAM starts elsewhere: the Jailhouse
	// loader stubs run at 0. Zero when the board needs none.
	LoaderArea uint64
	// LinuxLoader is the host path of the board's Jailhouse
	// linux-loader.bin (partitions.linux_loader), which Linux inmates boot
	// through; "" when the board boots no Linux partitions.
	LinuxLoader string
	// CPUResetAddress is the cell address a partition starts at, and where a
	// raw binary is loaded, when the boot description gives no
	// starting_vaddress.
	CPUResetAddress uint64
	// CommRegion is the cell address of the communication page.
	CommRegion uint64
	// VPCIIRQBase is the vpci_irq_base of a cell without virtual PCI
	// devices; cells with devices get one that puts their INTx lines on
	// allocated SPIs.
	VPCIIRQBase uint32
	// MsgReplyTimeout is the msg_reply_timeout of cells whose inmate
	// answers shutdown requests (comm_region "active"): the hypervisor's
	// poll iterations before it gives up on an answer, fails the cell and
	// lets the shutdown through. Never 0, which would mean "wait forever
	// with the root cell frozen".
	MsgReplyTimeout uint64
	// GICAddress is the address of the interrupt controller (GIC
	// distributor) named by the cell's irqchip entries.
	GICAddress uint64
	// SPIs are the interrupts (GIC INTIDs) partitions may receive for
	// their virtual PCI devices, ascending.
	SPIs []uint32
	// UARTs are the serial ports a partition may map.
	UARTs []UART
	// Console is the console of the first UART shared with the root cell
	// (zero when there is none), and ConsoleSPI its interrupt: the default
	// console of a partition.
	Console    jailhouse.Console
	ConsoleSPI uint32
	// IVSHMEM is the window of root↔partition ivshmem-net links.
	IVSHMEM IVSHMEMWindow
	// LinkDevices are the PCI device numbers (bus 0) partition↔partition
	// shared-memory links use, ascending.
	LinkDevices []int
	// RPUs are the Cortex-R5 ids partitions may get (Omnivisor boards).
	RPUs []int
	// SystemConfigPath is the system config file the profile names with
	// system_config, "" when the profile carries its own [system].
	SystemConfigPath string

	system *jailhouse.System
	// slots are the root cell's regions of each ivshmem slot.
	slots []slotRegions
}

// UART is one serial port partitions may map.
type UART struct {
	// Name names the port in the ledger and in errors ("uart1").
	Name string
	// Region is the I/O mapping: physical address = cell address, size and
	// the access flags (MemIO and any of MemIO8…MemIO64 for sub-page
	// ports). MemRootShared is added when the port is Shared.
	Region jailhouse.Memory
	// Console is the cell's console field when the partition uses the port.
	Console jailhouse.Console
	// SPI is the port's interrupt.
	SPI uint32
	// Shared ports stay with the root cell too: any number of partitions
	// map them, and none gets the interrupt, which root Linux keeps. A
	// dedicated port (Shared false) goes to one partition at a time, with
	// its interrupt.
	Shared bool
}

// IVSHMEMWindow is where root↔partition ivshmem-net links live: Slots equal
// slots of Size/Slots bytes from Base, slot k being the link of PCI device
// FirstDevice+k on bus 0. The root cell has one end of every link.
type IVSHMEMWindow struct {
	Base        uint64
	Size        uint64
	Slots       int
	FirstDevice int
}

// SlotSize is the bytes of one slot.
func (w IVSHMEMWindow) SlotSize() uint64 {
	if w.Slots == 0 {
		return 0
	}
	return w.Size / uint64(w.Slots)
}

// Device is the PCI device number of slot k.
func (w IVSHMEMWindow) Device(k int) int { return w.FirstDevice + k }

// slotRegions are a link's four ivshmem regions as the root cell declares
// them: state table, R/W section (possibly empty), output of peer 0 (the
// root), output of peer 1 (the partition).
type slotRegions [4]jailhouse.Memory

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

func memRange(m jailhouse.Memory) Range { return Range{m.PhysStart, m.PhysStart + m.Size} }

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

// BuiltinBoardSource returns the TOML of a built-in profile.
func BuiltinBoardSource(name string) ([]byte, error) {
	b, err := builtinBoards.ReadFile(path.Join("boards", name+".toml"))
	if err != nil {
		return nil, fmt.Errorf("no built-in board profile %q (built-in: %s; or give a path to a .toml file)",
			name, strings.Join(BuiltinBoards(), ", "))
	}
	return b, nil
}

// LoadBoard loads a board profile: a built-in name ("qemu-arm64") or the
// path of a TOML file (anything containing a '/' or ending in ".toml"). The
// profile is checked against its root cell before it is returned, so a bad
// profile fails here and not at the first container (see CheckSystemConfig).
func LoadBoard(nameOrPath string) (*Board, error) {
	if strings.Contains(nameOrPath, "/") || strings.HasSuffix(nameOrPath, ".toml") {
		b, err := os.ReadFile(nameOrPath)
		if err != nil {
			return nil, boardError(nameOrPath, "", err)
		}
		return ParseBoard(nameOrPath, b)
	}
	b, err := BuiltinBoardSource(nameOrPath)
	if err != nil {
		return nil, boardError("builtin:"+nameOrPath, "", err)
	}
	return ParseBoard("builtin:"+nameOrPath, b)
}

// ParseBoard parses and checks a board profile in TOML; source names it in
// errors. A relative system_config path is taken relative to the directory
// of source.
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
		{"partitions", "cpus"}, {"partitions", "pools"}, {"partitions", "granule"},
		{"partitions", "comm_region"}, {"partitions", "gic"},
	} {
		if !md.IsDefined(k...) {
			return nil, boardError(source, strings.Join(k, "."), errors.New("missing"))
		}
	}
	hasSystem, hasFile := md.IsDefined("system"), f.SystemConfig != ""
	switch {
	case hasSystem && hasFile:
		return nil, boardError(source, "system_config", errors.New("give either system_config or a [system] table, not both"))
	case !hasSystem && !hasFile:
		return nil, boardError(source, "system", errors.New("missing: give a [system] table or system_config"))
	case hasSystem:
		for _, k := range [][]string{{"system", "hypervisor_memory"}, {"system", "root_cell", "cpus"}} {
			if !md.IsDefined(k...) {
				return nil, boardError(source, strings.Join(k, "."), errors.New("missing"))
			}
		}
	}
	b, err := f.board(source)
	if err != nil {
		return nil, err
	}
	if err := b.checkProfile(); err != nil {
		return nil, err
	}
	if errs := b.checkAgainst(b.system, b.Source); len(errs) > 0 {
		return nil, errs[0]
	}
	b.slots, _ = b.rootSlots(b.system, b.Source)
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

// CheckSystemConfig checks the profile against a system configuration,
// normally the one the board's hypervisor was enabled with (`jailhouse
// enable FILE`): architecture and revision match, the partition CPUs are
// the root cell's and leave it one, every pool lies in root RAM and outside
// the hypervisor memory, the GIC address matches, every UART and SPI
// belongs to the root cell, and the root cell has its end of every ivshmem
// slot. Each problem is a *BoardError; several are joined (errors.Join).
func (b *Board) CheckSystemConfig(sys *jailhouse.System, source string) error {
	return errors.Join(b.checkAgainst(sys, source)...)
}

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

// checkProfile checks what the profile says about partitions on its own,
// before looking at any root cell.
func (b *Board) checkProfile() error {
	fail := func(key string, format string, args ...any) error {
		return boardError(b.Source, key, fmt.Errorf(format, args...))
	}
	if len(b.PartitionCPUs) == 0 {
		return fail("partitions.cpus", "no CPU for partitions")
	}
	if b.Arch == jailhouse.ArchX86 && slices.Contains(b.PartitionCPUs, 0) {
		return fail("partitions.cpus", "CPU 0 cannot leave the root cell on x86")
	}
	if b.Granule < pageSize || bits.OnesCount64(b.Granule) != 1 {
		return fail("partitions.granule", "%#x is not a power of two of at least 4 KiB", b.Granule)
	}
	if b.LoaderArea%pageSize != 0 {
		return fail("partitions.loader_area", "%#x is not a multiple of 4 KiB", b.LoaderArea)
	}
	if len(b.Pools) == 0 {
		return fail("partitions.pools", "no pool")
	}
	for i, p := range b.Pools {
		key := fmt.Sprintf("partitions.pools[%d]", i)
		if p.Start >= p.End {
			return fail(key, "%s is empty", p)
		}
		if p.Start%pageSize != 0 || p.End%pageSize != 0 {
			return fail(key, "%s is not 4 KiB aligned", p)
		}
		if alignUp(p.Start, b.Granule)+b.Granule > p.End {
			return fail(key, "%s holds no %#x-aligned block of one granule", p, b.Granule)
		}
		if i > 0 && b.Pools[i-1].End > p.Start {
			return fail(key, "%s is not above pool %d (%s); list pools ascending and disjoint", p, i-1, b.Pools[i-1])
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
	for _, p := range b.SPIs {
		if p < 32 || p >= 1020 {
			return fail("partitions.spis", "%d is not an SPI (32-1019)", p)
		}
	}
	seen := map[string]bool{}
	for i, u := range b.UARTs {
		key := fmt.Sprintf("partitions.uarts[%d]", i)
		if u.Name == "" || seen[u.Name] {
			return fail(key+".name", "%q is empty or used twice", u.Name)
		}
		seen[u.Name] = true
		if u.Region.Size == 0 || u.Region.PhysStart%pageSize != 0 && u.Region.Flags&subPageFlags == 0 {
			return fail(key, "UART %#x size %#x: give whole 4 KiB pages, or access flags (io_8 … io_64) for a sub-page port",
				u.Region.PhysStart, u.Region.Size)
		}
		if u.Region.Size%pageSize != 0 && u.Region.Flags&subPageFlags == 0 {
			return fail(key, "UART %#x size %#x is not whole 4 KiB pages and has no access flags (io_8 … io_64)",
				u.Region.PhysStart, u.Region.Size)
		}
		if u.SPI < 32 || u.SPI >= 1020 {
			return fail(key+".spi", "%d is not an SPI (32-1019)", u.SPI)
		}
		if slices.Contains(b.SPIs, u.SPI) {
			return fail("partitions.spis", "%d is the interrupt of UART %s", u.SPI, u.Name)
		}
	}
	w := b.IVSHMEM
	if w.Slots < 0 || w.Slots > 0 && (w.Size == 0 || w.Size%uint64(w.Slots) != 0 || w.SlotSize()%pageSize != 0 ||
		w.Base%pageSize != 0 || w.SlotSize() < 4*pageSize) {
		return fail("partitions.ivshmem", "base %#x size %#x slots %d: want a page-aligned window of slots of whole pages, at least 16 KiB each",
			w.Base, w.Size, w.Slots)
	}
	if w.Slots > 0 && (w.FirstDevice < 0 || w.FirstDevice+w.Slots > 32) {
		return fail("partitions.ivshmem.first_device", "devices %d-%d do not fit bus 0 (devices 0-31)", w.FirstDevice, w.FirstDevice+w.Slots-1)
	}
	for _, d := range b.LinkDevices {
		if d < 0 || d > 31 {
			return fail("partitions.link_devices", "device %d is not on bus 0 (0-31)", d)
		}
		if w.Slots > 0 && d >= w.FirstDevice && d < w.FirstDevice+w.Slots {
			return fail("partitions.link_devices", "device %d is also an ivshmem slot's device", d)
		}
	}
	if slices.ContainsFunc(b.RPUs, func(id int) bool { return id < 0 }) || len(slices.Compact(slices.Clone(b.RPUs))) != len(b.RPUs) {
		return fail("partitions.rpus", "%v: ids must be distinct and non-negative", b.RPUs)
	}
	first := Range{b.CPUResetAddress, b.CPUResetAddress + b.Granule}
	for _, f := range b.fixedCellRanges() {
		if first.Overlaps(f.r) {
			return fail("partitions.cpu_reset_address", "one granule of RAM at %#x would cover the %s at %s", b.CPUResetAddress, f.what, f.r)
		}
	}
	return nil
}

// subPageFlags are the access-width flags that let an I/O region be smaller
// than a page (the hypervisor traps and forwards each access).
const subPageFlags = jailhouse.MemIO8 | jailhouse.MemIO16 | jailhouse.MemIO32 | jailhouse.MemIO64 | jailhouse.MemIOUnaligned

// checkAgainst checks the profile against a system configuration read from
// source. It returns every problem found.
func (b *Board) checkAgainst(sys *jailhouse.System, source string) []error {
	var errs []error
	fail := func(key string, format string, args ...any) {
		errs = append(errs, boardError(source, key, fmt.Errorf(format, args...)))
	}
	root := &sys.RootCell

	if sys.Arch != b.Arch {
		fail("arch", "the system config is %v, the profile says %v", sys.Arch, b.Arch)
	}
	if sys.Revision != 0 && sys.Revision != b.Revision {
		fail("revision", "the system config is revision %d, the profile says %d", sys.Revision, b.Revision)
	}
	if len(root.Name) == 0 || len(root.Name) > 31 {
		fail("system.root_cell.name", "%q must be 1 to 31 bytes", root.Name)
	}
	rootCPUs := root.CPUs()
	if len(rootCPUs) == 0 {
		fail("system.root_cell.cpus", "the root cell has no CPU")
	}
	for _, c := range b.PartitionCPUs {
		if !slices.Contains(rootCPUs, c) {
			fail("partitions.cpus", "CPU %d is not in the root cell's CPUs %s", c, jailhouse.FormatCPUList(rootCPUs))
			break
		}
	}
	if len(rootCPUs) > 0 && !slices.ContainsFunc(rootCPUs, func(c int) bool { return !slices.Contains(b.PartitionCPUs, c) }) {
		fail("partitions.cpus", "%s would leave root Linux no CPU", jailhouse.FormatCPUList(b.PartitionCPUs))
	}

	hv := memRange(sys.HypervisorMemory)
	if hv.Size() == 0 {
		fail("system.hypervisor_memory", "size is 0")
	}
	ram := rootRAM(root)
	for i, p := range b.Pools {
		key := fmt.Sprintf("partitions.pools[%d]", i)
		if hv.Size() != 0 && p.Overlaps(hv) {
			fail(key, "%s overlaps the hypervisor memory %s", p, hv)
			continue
		}
		if !covered(p, ram) {
			fail(key, "%s is not inside the root cell's RAM (%s)", p, formatRanges(ram))
			continue
		}
		for j, m := range root.MemoryRegions {
			if r := memRange(m); m.Size != 0 && !isRAM(m) && r.Overlaps(p) {
				fail(key, "%s overlaps root cell memory region %d (%s, flags %v), which is not RAM", p, j, r, m.Flags)
				break
			}
		}
	}

	if isARM(b.Arch) && b.GICAddress != sys.Platform.ARM.GICDBase {
		fail("partitions.gic", "%#x is not the GIC distributor of the system config (%#x)", b.GICAddress, sys.Platform.ARM.GICDBase)
	}
	io := rootIO(root)
	for i, u := range b.UARTs {
		key := fmt.Sprintf("partitions.uarts[%d]", i)
		if r := memRange(u.Region); !covered(r, io) {
			fail(key, "UART %s %s is not in an I/O region of the root cell", u.Name, r)
		}
		if !rootHasPin(root, b.GICAddress, u.SPI) {
			fail(key+".spi", "interrupt %d of UART %s is not the root cell's (no irqchip at %#x has its bit)", u.SPI, u.Name, b.GICAddress)
		}
	}
	rootVPCI := map[uint32]int{}
	for _, d := range root.PCIDevices {
		rootVPCI[32+root.VPCIIRQBase+uint32((d.BDF>>3)&3)] = int(d.BDF >> 3)
	}
	for _, p := range b.SPIs {
		if !rootHasPin(root, b.GICAddress, p) {
			fail("partitions.spis", "interrupt %d is not the root cell's (no irqchip at %#x has its bit)", p, b.GICAddress)
			break
		}
		if dev, ok := rootVPCI[p]; ok {
			fail("partitions.spis", "interrupt %d is the INTx line of the root cell's virtual PCI device %02x (vpci_irq_base %d)", p, dev, root.VPCIIRQBase)
			break
		}
	}

	_, slotErrs := b.rootSlots(sys, source)
	errs = append(errs, slotErrs...)
	w := b.IVSHMEM
	if w.Slots > 0 {
		win := Range{w.Base, w.Base + w.Size}
		if win.Overlaps(hv) {
			fail("partitions.ivshmem", "window %s overlaps the hypervisor memory %s", win, hv)
		}
		for i, p := range b.Pools {
			if win.Overlaps(p) {
				fail("partitions.ivshmem", "window %s overlaps pool %d (%s)", win, i, p)
			}
		}
	}
	for _, d := range b.LinkDevices {
		if i := slices.IndexFunc(root.PCIDevices, func(p jailhouse.PCIDevice) bool { return int(p.BDF>>3) == d && p.BDF>>8 == 0 }); i >= 0 {
			fail("partitions.link_devices", "device %d is the root cell's PCI device %d", d, i)
			break
		}
	}
	return errs
}

// rootSlots finds the root cell's end of every ivshmem slot: an ivshmem
// VETH device at the slot's device number with two peers, dev id 0, and
// the four regions of JAILHOUSE_SHMEM_NET_REGIONS inside the slot.
func (b *Board) rootSlots(sys *jailhouse.System, source string) ([]slotRegions, []error) {
	w := b.IVSHMEM
	root := &sys.RootCell
	var slots []slotRegions
	var errs []error
	for k := range w.Slots {
		key := fmt.Sprintf("partitions.ivshmem (slot %d)", k)
		fail := func(format string, args ...any) {
			errs = append(errs, boardError(source, key, fmt.Errorf(format, args...)))
		}
		dev := w.Device(k)
		base := w.Base + uint64(k)*w.SlotSize()
		slot := Range{base, base + w.SlotSize()}
		i := slices.IndexFunc(root.PCIDevices, func(p jailhouse.PCIDevice) bool {
			return p.Type == jailhouse.PCITypeIVSHMEM && int(p.BDF>>3) == dev && p.BDF>>8 == 0 && p.BDF&7 == 0
		})
		if i < 0 {
			fail("the root cell has no ivshmem device 00:%02x.0 for the slot at %s", dev, slot)
			continue
		}
		p := root.PCIDevices[i]
		if p.ShmemProtocol != jailhouse.ShmemProtoVETH || p.ShmemPeers != 2 || p.ShmemDevID != 0 {
			fail("root ivshmem device 00:%02x.0 has protocol %#x, %d peers, dev id %d; want VETH (0x1), 2 peers, dev id 0",
				dev, p.ShmemProtocol, p.ShmemPeers, p.ShmemDevID)
			continue
		}
		start := int(p.ShmemRegionsStart)
		if start+4 > len(root.MemoryRegions) {
			fail("root ivshmem device 00:%02x.0 names regions %d-%d, the root cell has %d", dev, start, start+3, len(root.MemoryRegions))
			continue
		}
		var s slotRegions
		copy(s[:], root.MemoryRegions[start:start+4])
		ok := true
		for j, m := range s {
			if m.Size == 0 {
				if j == 1 {
					continue // an empty R/W section
				}
				ok = false
			}
			if !slot.Contains(memRange(m)) || m.Flags&jailhouse.MemIO != 0 {
				ok = false
			}
		}
		if !ok || s[2].Size != s[3].Size || s[0].Size == 0 {
			fail("root ivshmem device 00:%02x.0: regions %d-%d are not a state table, R/W section and two equal output sections inside the slot %s",
				dev, start, start+3, slot)
			continue
		}
		slots = append(slots, s)
	}
	return slots, errs
}

func isARM(a jailhouse.Arch) bool { return a == jailhouse.ArchARM || a == jailhouse.ArchARM64 }

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
			rs = append(rs, memRange(m))
		}
	}
	return rs
}

func rootIO(c *jailhouse.Cell) []Range {
	var rs []Range
	for _, m := range c.MemoryRegions {
		if m.Flags&jailhouse.MemIO != 0 && m.Size != 0 {
			rs = append(rs, memRange(m))
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
// ("builtin:<name>" or its file path) or the system config it was checked
// against, Key the dotted TOML key at fault ("" for the file as a whole). It
// matches ErrInvalidBoard, errdefs.ErrFailedPrecondition (the node is
// misconfigured, not the container) and Err through errors.Is.
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
	Name         string         `toml:"name"`
	Description  string         `toml:"description"`
	Arch         string         `toml:"arch"`
	Revision     int            `toml:"revision"`
	Flavour      string         `toml:"flavour"`
	SystemConfig string         `toml:"system_config"`
	Partitions   partitionsFile `toml:"partitions"`
	System       systemFile     `toml:"system"`
}

// DefaultMsgReplyTimeout is the msg_reply_timeout of active-comm-region
// cells on a board whose profile sets none. It counts hypervisor poll loop
// iterations, so its length in time depends on the CPU; 100 million is
// about a tenth of a second to a few seconds on the boards runphi ships.
const DefaultMsgReplyTimeout = 100_000_000

type partitionsFile struct {
	CPUs            string      `toml:"cpus"`
	Pools           []rangeFile `toml:"pools"`
	Granule         uint64      `toml:"granule"`
	LoaderArea      uint64      `toml:"loader_area"`
	LinuxLoader     string      `toml:"linux_loader"`
	CPUResetAddress uint64      `toml:"cpu_reset_address"`
	CommRegion      uint64      `toml:"comm_region"`
	VPCIIRQBase     uint32      `toml:"vpci_irq_base"`
	MsgReplyTimeout uint64      `toml:"msg_reply_timeout"`
	GIC             uint64      `toml:"gic"`
	SPIs            string      `toml:"spis"`
	UARTs           []uartFile  `toml:"uarts"`
	IVSHMEM         ivshmemFile `toml:"ivshmem"`
	LinkDevices     string      `toml:"link_devices"`
	RPUs            []int       `toml:"rpus"`
}

type rangeFile struct {
	Start uint64 `toml:"start"`
	End   uint64 `toml:"end"`
}

type uartFile struct {
	Name    string      `toml:"name"`
	Address uint64      `toml:"address"`
	Size    uint64      `toml:"size"`
	Access  []string    `toml:"access"`
	SPI     uint32      `toml:"spi"`
	Shared  bool        `toml:"shared"`
	Console consoleFile `toml:"console"`
}

type ivshmemFile struct {
	Base        uint64 `toml:"base"`
	Size        uint64 `toml:"size"`
	Slots       int    `toml:"slots"`
	FirstDevice int    `toml:"first_device"`
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
	Name        string         `toml:"name"`
	CPUs        string         `toml:"cpus"`
	CPUSetSize  int            `toml:"cpu_set_size"`
	VPCIIRQBase uint32         `toml:"vpci_irq_base"`
	Memory      []memFile      `toml:"memory"`
	IRQChips    []irqchipFile  `toml:"irqchips"`
	PCIDevices  []pciFile      `toml:"pci_devices"`
	VETHLinks   []vethLinkFile `toml:"veth_links"`
}

// vethLinkFile is the root cell's end of Count ivshmem-net links, as
// upstream configs write one with JAILHOUSE_SHMEM_NET_REGIONS(addr, 0) and
// an ivshmem VETH device: link k uses [Base+k*SlotSize, +SlotSize) and
// device FirstDevice+k on bus 0 of the platform's PCI domain.
type vethLinkFile struct {
	Base        uint64 `toml:"base"`
	SlotSize    uint64 `toml:"slot_size"`
	Count       int    `toml:"count"`
	FirstDevice int    `toml:"first_device"`
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

// accessFlagNames are the memory flags a UART's access list may name.
var accessFlagNames = map[string]jailhouse.MemFlags{
	"io_unaligned": jailhouse.MemIOUnaligned,
	"io_8":         jailhouse.MemIO8, "io_16": jailhouse.MemIO16, "io_32": jailhouse.MemIO32, "io_64": jailhouse.MemIO64,
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

// parseSPIs parses a list of interrupts in cpulist syntax ("140-159,164").
func parseSPIs(s string) ([]uint32, error) {
	ns, err := jailhouse.ParseCPUList(s)
	if err != nil {
		return nil, err
	}
	out := make([]uint32, len(ns))
	for i, n := range ns {
		out[i] = uint32(n)
	}
	return out, nil
}

// board turns the decoded file into a Board and its system config;
// checkProfile and checkAgainst do the cross-checks.
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
	p := f.Partitions
	b := &Board{
		Name: f.Name, Description: f.Description, Source: source,
		Arch: arch, Revision: rev, Flavour: f.Flavour,
		Granule:         p.Granule,
		LoaderArea:      p.LoaderArea,
		LinuxLoader:     p.LinuxLoader,
		CPUResetAddress: p.CPUResetAddress,
		CommRegion:      p.CommRegion,
		VPCIIRQBase:     p.VPCIIRQBase,
		MsgReplyTimeout: p.MsgReplyTimeout,
		GICAddress:      p.GIC,
		IVSHMEM:         IVSHMEMWindow{Base: p.IVSHMEM.Base, Size: p.IVSHMEM.Size, Slots: p.IVSHMEM.Slots, FirstDevice: p.IVSHMEM.FirstDevice},
		RPUs:            slices.Sorted(slices.Values(p.RPUs)),
	}
	if b.MsgReplyTimeout == 0 {
		b.MsgReplyTimeout = DefaultMsgReplyTimeout
	}
	if b.Name == "" {
		return fail("name", errors.New("empty"))
	}
	switch b.Flavour {
	case "":
		b.Flavour = FlavourUpstream
	case FlavourUpstream, FlavourOmnivisor:
	default:
		return fail("flavour", fmt.Errorf("%q is not a flavour (upstream, omnivisor)", b.Flavour))
	}
	var err error
	if b.PartitionCPUs, err = jailhouse.ParseCPUList(p.CPUs); err != nil {
		return fail("partitions.cpus", err)
	}
	if b.SPIs, err = parseSPIs(p.SPIs); err != nil {
		return fail("partitions.spis", err)
	}
	if b.LinkDevices, err = jailhouse.ParseCPUList(p.LinkDevices); err != nil {
		return fail("partitions.link_devices", err)
	}
	for _, r := range p.Pools {
		b.Pools = append(b.Pools, Range(r))
	}
	if len(b.Pools) > 0 {
		b.Pool = b.Pools[0]
	}
	for i, u := range p.UARTs {
		key := fmt.Sprintf("partitions.uarts[%d]", i)
		access, err := flagsOf(u.Access, accessFlagNames)
		if err != nil {
			return fail(key+".access", err)
		}
		con, err := u.Console.console()
		if err != nil {
			return fail(key+".console", err)
		}
		if con.Address == 0 {
			con.Address = u.Address
		}
		if con.Size == 0 {
			con.Size = uint32(u.Size)
		}
		flags := jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemIO | access
		if u.Shared {
			flags |= jailhouse.MemRootShared
		}
		b.UARTs = append(b.UARTs, UART{
			Name:    u.Name,
			Region:  jailhouse.Memory{PhysStart: u.Address, VirtStart: u.Address, Size: u.Size, Flags: flags},
			Console: con, SPI: u.SPI, Shared: u.Shared,
		})
	}
	if u := b.sharedUART(); u != nil {
		b.Console, b.ConsoleSPI = u.Console, u.SPI
	}

	if f.SystemConfig != "" {
		p := f.SystemConfig
		if !filepath.IsAbs(p) && !strings.HasPrefix(source, "builtin:") {
			p = filepath.Join(filepath.Dir(source), p)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return fail("system_config", err)
		}
		sys, err := jailhouse.DecodeSystem(data)
		if err != nil {
			return fail("system_config", fmt.Errorf("%s: %w", p, err))
		}
		b.system, b.SystemConfigPath = sys, p
		return b, nil
	}
	if b.system, err = f.System.system(source, arch, rev); err != nil {
		return nil, err
	}
	return b, nil
}

// system builds the root cell system configuration of the [system] table.
func (s *systemFile) system(source string, arch jailhouse.Arch, rev jailhouse.Revision) (*jailhouse.System, error) {
	fail := func(key string, err error) (*jailhouse.System, error) { return nil, boardError(source, key, err) }
	sys := &jailhouse.System{Revision: rev, Arch: arch}
	var err error
	if sys.Flags, err = flagsOf(s.Flags, systemFlagNames); err != nil {
		return fail("system.flags", err)
	}
	hv := s.HypervisorMemory
	if len(hv.Flags) != 0 {
		return fail("system.hypervisor_memory.flags", errors.New("the hypervisor memory takes no flags"))
	}
	sys.HypervisorMemory = jailhouse.Memory{PhysStart: hv.PhysStart, VirtStart: hv.VirtStart, Size: hv.Size}
	if sys.DebugConsole, err = s.DebugConsole.console(); err != nil {
		return fail("system.debug_console", err)
	}
	p := s.Platform
	sys.Platform = jailhouse.Platform{
		PCIMMConfigBase: p.PCIMMConfigBase, PCIMMConfigEndBus: p.PCIMMConfigEndBus,
		PCIIsVirtual: p.PCIIsVirtual, PCIDomain: p.PCIDomain,
		ARM: jailhouse.ARMPlatform{
			MaintenanceIRQ: p.ARM.MaintenanceIRQ, GICVersion: p.ARM.GICVersion,
			GICDBase: p.ARM.GICDBase, GICCBase: p.ARM.GICCBase, GICHBase: p.ARM.GICHBase,
			GICVBase: p.ARM.GICVBase, GICRBase: p.ARM.GICRBase,
		},
	}

	rc := s.RootCell
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
	for i, v := range rc.VETHLinks {
		key := fmt.Sprintf("system.root_cell.veth_links[%d]", i)
		if v.Count <= 0 || v.SlotSize < 4*pageSize || v.SlotSize%pageSize != 0 || v.Base%pageSize != 0 {
			return fail(key, fmt.Errorf("base %#x slot_size %#x count %d: want a positive count of page-aligned slots of at least 16 KiB", v.Base, v.SlotSize, v.Count))
		}
		if v.FirstDevice < 0 || v.FirstDevice+v.Count > 32 {
			return fail(key+".first_device", fmt.Errorf("devices %d-%d do not fit bus 0 (0-31)", v.FirstDevice, v.FirstDevice+v.Count-1))
		}
		for k := range v.Count {
			regions := netRegions(v.Base+uint64(k)*v.SlotSize, v.SlotSize, 0)
			dev := vethDevice(sys.Platform.PCIDomain, v.FirstDevice+k, 0, len(root.MemoryRegions))
			root.MemoryRegions = append(root.MemoryRegions, regions[:]...)
			root.PCIDevices = append(root.PCIDevices, dev)
		}
	}
	sys.RootCell = root
	return sys, nil
}

// netRegions are the four regions of one end of an ivshmem-net link in a
// slot of size bytes at base, as JAILHOUSE_SHMEM_NET_REGIONS(base, id)
// lays them out: a 4 KiB state table, an empty R/W section and two equal
// output sections, writable only by their own peer. Every region is
// ROOTSHARED, as in the upstream macro, so no end takes the memory from the
// root cell.
func netRegions(base, size uint64, id int) slotRegions {
	out := ((size - pageSize) / 2) &^ (pageSize - 1)
	const shared = jailhouse.MemRootShared
	r := slotRegions{
		{PhysStart: base, VirtStart: base, Size: pageSize, Flags: jailhouse.MemRead | shared},
		{},
		{PhysStart: base + pageSize, VirtStart: base + pageSize, Size: out, Flags: jailhouse.MemRead | shared},
		{PhysStart: base + pageSize + out, VirtStart: base + pageSize + out, Size: out, Flags: jailhouse.MemRead | shared},
	}
	r[2+id].Flags |= jailhouse.MemWrite
	return r
}

// ivshmemBARMaskINTX is JAILHOUSE_IVSHMEM_BAR_MASK_INTX.
var ivshmemBARMaskINTX = [6]uint32{0xfffff000, 0, 0, 0, 0, 0}

// vethDevice is an ivshmem-net (VETH) device at device number dev of bus 0,
// peer id, whose regions start at index regions.
func vethDevice(domain uint16, dev, id, regions int) jailhouse.PCIDevice {
	return jailhouse.PCIDevice{
		Type: jailhouse.PCITypeIVSHMEM, Domain: domain, BDF: uint16(dev) << 3,
		BARMask: ivshmemBARMaskINTX, ShmemRegionsStart: uint32(regions),
		ShmemDevID: uint8(id), ShmemPeers: 2, ShmemProtocol: jailhouse.ShmemProtoVETH,
	}
}

// sharedUART returns the first UART shared with the root cell, or nil.
func (b *Board) sharedUART() *UART {
	for i := range b.UARTs {
		if b.UARTs[i].Shared {
			return &b.UARTs[i]
		}
	}
	return nil
}

// uart returns the UART named name, or nil.
func (b *Board) uart(name string) *UART {
	for i := range b.UARTs {
		if b.UARTs[i].Name == name {
			return &b.UARTs[i]
		}
	}
	return nil
}
