package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/partition"
)

func init() {
	register(&command{
		name:    "board",
		summary: "list, show and check board profiles",
		usage: "board list\n" +
			"       runphi board show PROFILE [--json]\n" +
			"       runphi board check PROFILE SYSCONFIG\n" +
			"       runphi board system PROFILE -o FILE",
		run: runBoard,
	})
}

// A PROFILE is a built-in name (`runphi board list`) or the path of a TOML
// profile (docs/boards.md); SYSCONFIG is the system configuration (.cell)
// given to `jailhouse enable`.
func runBoard(env *cmdEnv, args []string) error {
	if len(args) == 0 {
		return usagef("missing subcommand (list, show, check, system)")
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "list":
		if len(rest) != 0 {
			return usagef("board list takes no arguments")
		}
		return boardList(env)
	case "show":
		return boardShow(env, rest)
	case "check":
		return boardCheck(env, rest)
	case "system":
		return boardSystem(env, rest)
	case "-h", "-help", "--help":
		fmt.Fprintf(env.stdout, "usage: runphi %s\n", commands["board"].usage)
		return nil
	default:
		return usagef("unknown subcommand %q (list, show, check, system)", sub)
	}
}

func boardList(env *cmdEnv) error {
	w := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tARCH\tCPUS\tPOOL\tDESCRIPTION")
	for _, name := range partition.BuiltinBoards() {
		b, err := partition.LoadBoard(name)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", b.Name, archName(b.Arch), jailhouse.FormatCPUList(b.PartitionCPUs),
			poolsText(b.Pools), b.Description)
	}
	return w.Flush()
}

// boardSummary is `runphi board show --json`.
type boardSummary struct {
	Name             string            `json:"name"`
	Source           string            `json:"source"`
	Description      string            `json:"description"`
	Arch             string            `json:"arch"`
	Revision         int               `json:"revision"`
	Flavour          string            `json:"flavour"`
	PartitionCPUs    []int             `json:"partition_cpus"`
	RootCPUs         []int             `json:"root_cpus"`
	Pools            []partition.Range `json:"pools"`
	Granule          uint64            `json:"granule"`
	LoaderArea       uint64            `json:"loader_area"`
	CPUResetAddress  uint64            `json:"cpu_reset_address"`
	CommRegion       uint64            `json:"comm_region"`
	VPCIIRQBase      uint32            `json:"vpci_irq_base"`
	GIC              uint64            `json:"gic"`
	SPIs             []uint32          `json:"spis"`
	UARTs            []uartSummary     `json:"uarts"`
	IVSHMEM          ivshmemSummary    `json:"ivshmem"`
	LinkDevices      []int             `json:"link_devices"`
	RPUs             []int             `json:"rpus"`
	SystemConfig     string            `json:"system_config"`
	SystemConfigSize int               `json:"system_config_size"`
}

type uartSummary struct {
	Name    string `json:"name"`
	Address uint64 `json:"address"`
	Size    uint64 `json:"size"`
	Type    string `json:"type"`
	SPI     uint32 `json:"spi"`
	Shared  bool   `json:"shared"`
}

type ivshmemSummary struct {
	Base        uint64 `json:"base"`
	Size        uint64 `json:"size"`
	Slots       int    `json:"slots"`
	SlotSize    uint64 `json:"slot_size"`
	FirstDevice int    `json:"first_device"`
}

func summarize(b *partition.Board) (boardSummary, error) {
	sys, err := b.SystemConfig().MarshalBinary()
	if err != nil {
		return boardSummary{}, fmt.Errorf("encode the system config of board %s: %w", b.Name, err)
	}
	s := boardSummary{
		Name: b.Name, Source: b.Source, Description: b.Description,
		Arch: archName(b.Arch), Revision: int(b.Revision), Flavour: b.Flavour,
		PartitionCPUs: b.PartitionCPUs, RootCPUs: b.RootCPUs(), Pools: b.Pools, Granule: b.Granule, LoaderArea: b.LoaderArea,
		CPUResetAddress: b.CPUResetAddress, CommRegion: b.CommRegion, VPCIIRQBase: b.VPCIIRQBase,
		GIC: b.GICAddress, SPIs: b.SPIs, UARTs: []uartSummary{},
		IVSHMEM: ivshmemSummary{Base: b.IVSHMEM.Base, Size: b.IVSHMEM.Size, Slots: b.IVSHMEM.Slots,
			SlotSize: b.IVSHMEM.SlotSize(), FirstDevice: b.IVSHMEM.FirstDevice},
		LinkDevices: b.LinkDevices, RPUs: b.RPUs, SystemConfig: b.SystemConfigPath, SystemConfigSize: len(sys),
	}
	if s.SystemConfig == "" {
		s.SystemConfig = "embedded"
	}
	for _, u := range b.UARTs {
		s.UARTs = append(s.UARTs, uartSummary{Name: u.Name, Address: u.Region.PhysStart, Size: u.Region.Size,
			Type: jailhouse.ConsoleTypeName(u.Console.Type), SPI: u.SPI, Shared: u.Shared})
	}
	return s, nil
}

func boardShow(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "board show", "board show PROFILE [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("board show takes one PROFILE")
	}
	b, err := partition.LoadBoard(pos[0])
	if err != nil {
		return err
	}
	s, err := summarize(b)
	if err != nil {
		return err
	}
	if *asJSON {
		return emitJSON(env, s)
	}
	w := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "%s\t%s (%s)\n", s.Name, s.Description, s.Source)
	fmt.Fprintf(w, "architecture\t%s, config revision %d, %s Jailhouse\n", s.Arch, s.Revision, s.Flavour)
	fmt.Fprintf(w, "partition CPUs\t%s (root Linux keeps %s)\n", jailhouse.FormatCPUList(s.PartitionCPUs), linuxCPUs(s))
	fmt.Fprintf(w, "RAM pools\t%s, granule %s", poolsText(s.Pools), sizeText(s.Granule))
	if s.LoaderArea > 0 {
		fmt.Fprintf(w, ", loader area %s at cell address 0", sizeText(s.LoaderArea))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "cell layout\tcpu_reset_address %#x, comm region %#x, vpci_irq_base %d\n", s.CPUResetAddress, s.CommRegion, s.VPCIIRQBase)
	fmt.Fprintf(w, "interrupts\tGIC %#x, SPIs %s for virtual PCI INTx lines\n", s.GIC, interruptsText(s.SPIs))
	for _, u := range s.UARTs {
		how := "dedicated, one partition at a time, with its interrupt"
		if u.Shared {
			how = "shared with root Linux, interrupt stays with root"
		}
		fmt.Fprintf(w, "UART %s\t%#x (%s, %s, interrupt %d), %s\n", u.Name, u.Address, u.Type, sizeText(u.Size), u.SPI, how)
	}
	if v := s.IVSHMEM; v.Slots > 0 {
		fmt.Fprintf(w, "ivshmem window\t%#x-%#x: %d network links of %s, devices 00:%02x.0-00:%02x.0\n",
			v.Base, v.Base+v.Size, v.Slots, sizeText(v.SlotSize), v.FirstDevice, v.FirstDevice+v.Slots-1)
	}
	fmt.Fprintf(w, "link devices\t%s\n", dash(jailhouse.FormatCPUList(s.LinkDevices)))
	fmt.Fprintf(w, "RPUs\t%s\n", dash(jailhouse.FormatCPUList(s.RPUs)))
	fmt.Fprintf(w, "system config\t%s (%d bytes)\n", s.SystemConfig, s.SystemConfigSize)
	return w.Flush()
}

// boardCheck checks a profile against the system configuration a board
// runs: exit 0 when it fits, 1 with every problem otherwise.
func boardCheck(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "board check", "board check PROFILE SYSCONFIG")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("board check takes PROFILE and SYSCONFIG")
	}
	b, err := partition.LoadBoard(pos[0])
	if err != nil {
		return err
	}
	data, err := os.ReadFile(pos[1])
	if err != nil {
		return err
	}
	sys, err := jailhouse.DecodeSystem(data)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[1], err)
	}
	err = b.CheckSystemConfig(sys, pos[1])
	if err == nil {
		fmt.Fprintf(env.stdout, "board profile %s fits %s (root cell %q, CPUs %s; partitions get CPUs %s, pools %s, %d ivshmem slots)\n",
			b.Name, pos[1], sys.RootCell.Name, jailhouse.FormatCPUList(sys.RootCell.CPUs()),
			jailhouse.FormatCPUList(b.PartitionCPUs), poolsText(b.Pools), b.IVSHMEM.Slots)
		return nil
	}
	var problems []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		problems = j.Unwrap()
	} else {
		problems = []error{err}
	}
	for _, p := range problems {
		var be *partition.BoardError
		if errors.As(p, &be) {
			fmt.Fprintf(env.stdout, "FAIL %s: %v\n", be.Key, be.Err)
		} else {
			fmt.Fprintf(env.stdout, "FAIL %v\n", p)
		}
	}
	return fmt.Errorf("board profile %s does not fit %s: %d problems", b.Name, pos[1], len(problems))
}

// boardSystem writes the profile's root cell system configuration, the
// file to give `jailhouse enable` on a board run with the profile.
func boardSystem(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "board system", "board system PROFILE -o FILE")
	out := fs.String("o", "", "write the system config (.cell) to `file`")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *out == "" {
		return usagef("board system takes one PROFILE and -o FILE")
	}
	b, err := partition.LoadBoard(pos[0])
	if err != nil {
		return err
	}
	data, err := b.SystemConfig().MarshalBinary()
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "wrote %s (%d bytes, root cell %q)\n", *out, len(data), b.SystemConfig().RootCell.Name)
	return nil
}

func archName(a jailhouse.Arch) string {
	switch a {
	case jailhouse.ArchARM64:
		return "arm64"
	case jailhouse.ArchARM:
		return "arm"
	case jailhouse.ArchX86:
		return "x86"
	}
	return fmt.Sprintf("arch(%d)", a)
}

func poolsText(rs []partition.Range) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%#x-%#x (%s)", r.Start, r.End, sizeText(r.Size()))
	}
	return strings.Join(parts, ", ")
}

func linuxCPUs(s boardSummary) string {
	var keep []int
	for _, c := range s.RootCPUs {
		if !slices.Contains(s.PartitionCPUs, c) {
			keep = append(keep, c)
		}
	}
	return jailhouse.FormatCPUList(keep)
}
