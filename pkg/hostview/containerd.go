package hostview

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// containerd's defaults (cmd/containerd/server/config and defaults_linux.go
// of containerd 1.6 and 2.x alike).
const (
	DefaultContainerdConfig  = "/etc/containerd/config.toml"
	DefaultContainerdAddress = "/run/containerd/containerd.sock"
	DefaultContainerdState   = "/run/containerd"
	// RuntimeType is the runtime name containerd maps to ShimBinary.
	RuntimeType = "io.containerd.runphi.v2"
	// taskDir is the v2 runtime's bundle directory under containerd's
	// state dir: bundles are <state>/io.containerd.runtime.v2.task/<ns>/<id>.
	taskDir = "io.containerd.runtime.v2.task"
)

// Daemon is one running containerd, as far as its process, its command
// line and its configuration file tell.
type Daemon struct {
	Process
	// ConfigPath is the file named by --config/-c, or the default.
	ConfigPath string
	// Config is that file, parsed; its Err says why it could not be.
	Config ContainerdConfig
	// Address is the gRPC socket: --address/-a, else grpc.address of the
	// configuration, else the default.
	Address string
	// StateDir is --state, else state of the configuration, else the
	// default. Bundles live below it.
	StateDir string
}

// TaskRoot is where this daemon keeps its v2 task bundles.
func (d Daemon) TaskRoot() string { return filepath.Join(d.StateDir, taskDir) }

// ContainerdDaemons lists the running containerd daemons.
func ContainerdDaemons(procRoot string) ([]Daemon, error) {
	procs, err := ListProcesses(procRoot, func(p Process) bool { return p.Name() == "containerd" })
	if err != nil {
		return nil, err
	}
	out := make([]Daemon, 0, len(procs))
	for _, p := range procs {
		out = append(out, describeDaemon(p))
	}
	return out, nil
}

func describeDaemon(p Process) Daemon {
	d := Daemon{Process: p, ConfigPath: DefaultContainerdConfig}
	if v, ok := p.Flag("config", "c"); ok && v != "" {
		d.ConfigPath = v
	}
	if !filepath.IsAbs(d.ConfigPath) && p.Cwd != "" {
		d.ConfigPath = filepath.Join(p.Cwd, d.ConfigPath)
	}
	d.Config = ReadContainerdConfig(d.ConfigPath)
	d.Address = firstNonEmpty(flagValue(p, "address", "a"), d.Config.GRPCAddress, DefaultContainerdAddress)
	d.StateDir = firstNonEmpty(flagValue(p, "state"), d.Config.State, DefaultContainerdState)
	return d
}

func flagValue(p Process, names ...string) string {
	v, _ := p.Flag(names...)
	return v
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// ContainerdConfig is what runphi needs from containerd's config.toml.
type ContainerdConfig struct {
	Path string
	// Exists is false when the file is missing: containerd then runs
	// with its defaults (CRI enabled, only runc configured).
	Exists bool
	// Err is why the file could not be read or parsed.
	Err error
	// Version is the file's version key (1 when absent, as containerd
	// reads it).
	Version         int
	GRPCAddress     string
	State           string
	Root            string
	DisabledPlugins []string
	// Imports are further files containerd merges in; runphi does not
	// follow them, which doctor says when it matters.
	Imports []string
	// Runtimes are the CRI runtime entries, from whichever CRI section
	// the file has (1.x: io.containerd.grpc.v1.cri, or cri in a version 1
	// file; 2.x: io.containerd.cri.v1.runtime).
	Runtimes []CRIRuntime
}

// CRIRuntime is one [… .containerd.runtimes.NAME] table.
type CRIRuntime struct {
	Name string
	// Section is the plugin table it was found in.
	Section string
	// Type is runtime_type.
	Type string
	// ConfigPath is options.ConfigPath, what the shim reads first.
	ConfigPath string
}

// criPlugins are the plugin ids whose runtimes table CRI reads, by config
// version: "cri" in version 1 files, the grpc plugin in version 2 (1.x,
// and 2.x migrating an old file), the runtime plugin in version 3 (2.x).
var criPlugins = []string{"io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri"}

// ReadContainerdConfig reads a containerd config.toml. It never fails: a
// missing file has Exists false, anything else wrong is in Err.
func ReadContainerdConfig(path string) ContainerdConfig {
	c := ContainerdConfig{Path: path, Version: 1}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c
	}
	c.Exists = true
	if err != nil {
		c.Err = err
		return c
	}
	var raw map[string]any
	if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw); err != nil {
		c.Err = fmt.Errorf("containerd configuration %s: %w", path, err)
		return c
	}
	if v, ok := raw["version"].(int64); ok {
		c.Version = int(v)
	}
	c.State, _ = raw["state"].(string)
	c.Root, _ = raw["root"].(string)
	if g, ok := raw["grpc"].(map[string]any); ok {
		c.GRPCAddress, _ = g["address"].(string)
	}
	c.DisabledPlugins = stringList(raw["disabled_plugins"])
	c.Imports = stringList(raw["imports"])
	plugins, _ := raw["plugins"].(map[string]any)
	for _, id := range criPlugins {
		p, _ := plugins[id].(map[string]any)
		ctd, _ := p["containerd"].(map[string]any)
		rts, _ := ctd["runtimes"].(map[string]any)
		names := make([]string, 0, len(rts))
		for n := range rts {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			rt, _ := rts[n].(map[string]any)
			r := CRIRuntime{Name: n, Section: id}
			r.Type, _ = rt["runtime_type"].(string)
			if o, ok := rt["options"].(map[string]any); ok {
				r.ConfigPath, _ = o["ConfigPath"].(string)
			}
			c.Runtimes = append(c.Runtimes, r)
		}
	}
	return c
}

func stringList(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// CRIEnabled reports whether the CRI plugin would load: containerd enables
// it unless disabled_plugins names it (or, for 2.x, its runtime plugin).
func (c ContainerdConfig) CRIEnabled() bool {
	for _, id := range criPlugins {
		if slices.Contains(c.DisabledPlugins, id) {
			return false
		}
	}
	return true
}

// RunphiRuntimes are the CRI runtime entries of type io.containerd.runphi.v2.
func (c ContainerdConfig) RunphiRuntimes() []CRIRuntime {
	var out []CRIRuntime
	for _, r := range c.Runtimes {
		if r.Type == RuntimeType {
			out = append(out, r)
		}
	}
	return out
}

// Version is a parsed containerd version.
type Version struct {
	Major, Minor, Patch int
	// Text is the version as containerd printed it ("1.6.20~ds1", "v2.4.2").
	Text string
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less orders versions.
func (v Version) Less(o Version) bool {
	if v.Major != o.Major {
		return v.Major < o.Major
	}
	if v.Minor != o.Minor {
		return v.Minor < o.Minor
	}
	return v.Patch < o.Patch
}

// ParseContainerdVersion parses the output of `containerd --version`:
// "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1"
// or "containerd github.com/containerd/containerd/v2 v2.4.2 <revision>".
func ParseContainerdVersion(out string) (Version, error) {
	f := strings.Fields(out)
	if len(f) < 3 || f[0] != "containerd" {
		return Version{}, fmt.Errorf("unexpected containerd --version output %q", strings.TrimSpace(out))
	}
	text := f[2]
	s := strings.TrimPrefix(text, "v")
	if i := strings.IndexAny(s, "~+-"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("containerd version %q is not MAJOR.MINOR[.PATCH]", text)
	}
	v := Version{Text: text}
	for i, dst := range []*int{&v.Major, &v.Minor, &v.Patch} {
		if i >= len(parts) {
			break
		}
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return Version{}, fmt.Errorf("containerd version %q is not MAJOR.MINOR[.PATCH]", text)
		}
		*dst = n
	}
	return v, nil
}

// ContainerdVersion runs `BINARY --version` (for a running daemon, its
// /proc/<pid>/exe, which works even after the file was replaced).
func ContainerdVersion(binary string) (Version, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "--version").Output()
	if err != nil {
		return Version{}, fmt.Errorf("%s --version: %w", binary, err)
	}
	return ParseContainerdVersion(string(out))
}

// ShimLookup is where a daemon would find the runphi shim.
type ShimLookup struct {
	// Path is the shim it would run; empty when it finds none.
	Path string
	// Searched are the directories looked in, in order.
	Searched []string
	// EnvErr is set when the daemon's environment could not be read; the
	// search then used no PATH at all.
	EnvErr error
}

// FindShimFor resolves ShimBinary the way containerd does for the runtime
// io.containerd.runphi.v2 (core/runtime/v2/shim_manager.go, 1.6 and 2.x):
// the directories of the daemon's own PATH, then the directory containerd's
// executable is in.
func FindShimFor(procRoot string, d Daemon) ShimLookup {
	var l ShimLookup
	env, err := Environ(procRoot, d.PID)
	if err != nil {
		l.EnvErr = err
	}
	var dirs []string
	for _, dir := range filepath.SplitList(env["PATH"]) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) && d.Cwd != "" {
			dir = filepath.Join(d.Cwd, dir)
		}
		dirs = append(dirs, dir)
	}
	if d.Exe != "" {
		dirs = append(dirs, filepath.Dir(strings.TrimSuffix(d.Exe, " (deleted)")))
	}
	for _, dir := range dirs {
		l.Searched = append(l.Searched, dir)
		p := filepath.Join(dir, ShimBinary)
		if isExecutable(p) {
			l.Path = p
			return l
		}
	}
	return l
}

// LookPathIn finds name in the PATH list path, as exec.LookPath does.
func LookPathIn(path, name string) (string, []string) {
	var searched []string
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		searched = append(searched, dir)
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p, searched
		}
	}
	return "", searched
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
