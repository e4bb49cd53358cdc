package hostview

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DefaultProcRoot is where procfs is mounted.
const DefaultProcRoot = "/proc"

// ShimBinary is the name containerd derives from io.containerd.runphi.v2.
const ShimBinary = "containerd-shim-runphi-v2"

// Process is one live process as /proc shows it.
type Process struct {
	PID int
	// Args is the command line. Zombies (empty cmdline) are never listed.
	Args []string
	// Exe is where /proc/<pid>/exe points; empty when it cannot be read
	// (another user's process without privileges).
	Exe string
	// Cwd is where /proc/<pid>/cwd points; empty when unreadable.
	Cwd string
}

// Name is the base name of the executable: of Exe when known (argv[0] can
// be anything), else of argv[0].
func (p Process) Name() string {
	if p.Exe != "" {
		return filepath.Base(strings.TrimSuffix(p.Exe, " (deleted)"))
	}
	if len(p.Args) == 0 {
		return ""
	}
	return filepath.Base(p.Args[0])
}

// Flag returns the value of a command-line flag in any of the spellings Go's
// flag package and urfave/cli accept: -name v, --name v, -name=v, --name=v.
// Several names (a long and a short form) may be given; the first occurrence
// of any wins.
func (p Process) Flag(names ...string) (string, bool) {
	for i := 1; i < len(p.Args); i++ {
		a := p.Args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		key, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !slices.Contains(names, key) {
			continue
		}
		if hasValue {
			return value, true
		}
		if i+1 < len(p.Args) {
			return p.Args[i+1], true
		}
		return "", true
	}
	return "", false
}

// ListProcesses returns the live processes under procRoot for which keep
// returns true, by ascending pid. Processes that exit while they are read
// are left out.
func ListProcesses(procRoot string, keep func(Process) bool) ([]Process, error) {
	if procRoot == "" {
		procRoot = DefaultProcRoot
	}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		p, ok := readProcess(procRoot, pid)
		if ok && keep(p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b Process) int { return a.PID - b.PID })
	return out, nil
}

// ReadProcess returns the process pid; ok is false when it does not exist
// or is a zombie.
func ReadProcess(procRoot string, pid int) (Process, bool) {
	if procRoot == "" {
		procRoot = DefaultProcRoot
	}
	return readProcess(procRoot, pid)
}

func readProcess(procRoot string, pid int) (Process, bool) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	raw, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil || len(raw) == 0 {
		return Process{}, false
	}
	p := Process{PID: pid, Args: strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")}
	p.Exe, _ = os.Readlink(filepath.Join(dir, "exe"))
	p.Cwd, _ = os.Readlink(filepath.Join(dir, "cwd"))
	return p, true
}

// Environ reads the environment the process was started with. It needs the
// privileges to read the process's memory (root, or the same user).
func Environ(procRoot string, pid int) (map[string]string, error) {
	if procRoot == "" {
		procRoot = DefaultProcRoot
	}
	raw, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "environ"))
	if err != nil {
		return nil, fmt.Errorf("read the environment of pid %d: %w", pid, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(raw), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			env[k] = v
		}
	}
	return env, nil
}

// IsShim reports whether p is a runphi shim's long-lived server: the
// binary without a start or delete action (those are short-lived).
func IsShim(p Process) bool {
	if p.Name() != ShimBinary && filepath.Base(p.Args[0]) != ShimBinary {
		return false
	}
	last := p.Args[len(p.Args)-1]
	return last != "start" && last != "delete"
}

// ShimProcesses lists the live runphi shim servers.
func ShimProcesses(procRoot string) ([]Process, error) {
	return ListProcesses(procRoot, IsShim)
}
