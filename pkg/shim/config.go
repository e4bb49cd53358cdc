package shim

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Where the configuration comes from, in order of precedence after the
// runtime options. docs/configuration.md describes each key.
const (
	// ConfigEnv names the environment variable holding a configuration path.
	ConfigEnv = "RUNPHI_CONFIG"
	// DefaultConfigPath is read when nothing else names a file. A missing
	// default file means the defaults.
	DefaultConfigPath = "/etc/runphi/runphi.toml"
	// DefaultDevicePath is the Jailhouse driver's device node; its presence
	// makes "jailhouse" the default backend.
	DefaultDevicePath = "/dev/jailhouse"
)

// Backends a configuration can select.
const (
	BackendJailhouse = "jailhouse"
	BackendSim       = "sim"
)

// Defaults of the configuration keys.
const (
	defaultStateDir = "/run/runphi"
	defaultSimDir   = "/run/runphi/sim"
	defaultBoard    = "qemu-arm64"
)

// Config is the runphi configuration file (TOML). The json tags are the
// shape persisted in the task state file, so that `delete` reopens the same
// backend the task was created on.
type Config struct {
	// Backend is "jailhouse" (the real driver) or "sim" (the simulator).
	// Empty after loading means no backend is usable on this host.
	Backend string `toml:"backend" json:"backend"`
	// StateDir holds runphi's node-wide state; the resource ledger is
	// <state_dir>/ledger.json.
	StateDir string `toml:"state_dir" json:"state_dir"`
	// SimDir is the simulated host shared by every shim (backend "sim").
	SimDir string `toml:"sim_dir" json:"sim_dir"`
	// Board is a board profile name or the path of a profile file.
	Board string `toml:"board" json:"board"`
	// Debug raises the shim's log level to debug.
	Debug bool `toml:"debug" json:"debug"`
	// Runc configures the runc that runs the containers which are not
	// partitions (a pod's pause container, sidecars).
	Runc RuncConfig `toml:"runc" json:"runc"`

	// Source says where the values came from: a file path (for the
	// defaults, the missing default file) or "runtime options config_body".
	// Error messages name it.
	Source string `toml:"-" json:"source"`
}

// RuncConfig is the [runc] table. Its zero value is what containerd's own
// runc shim does by default.
type RuncConfig struct {
	// Binary is the runc binary, a name looked up on the daemon's PATH or
	// an absolute path; empty means "runc".
	Binary string `toml:"binary" json:"binary,omitempty"`
	// Root is runc's state directory (one subdirectory per namespace);
	// empty means /run/containerd/runc.
	Root string `toml:"root" json:"root,omitempty"`
	// SystemdCgroup makes runc manage cgroups through systemd; it must match
	// the kubelet's cgroup driver.
	SystemdCgroup bool `toml:"systemd_cgroup" json:"systemd_cgroup,omitempty"`
}

// LedgerPath is where the node-wide resource ledger lives.
func (c Config) LedgerPath() string { return filepath.Join(c.StateDir, "ledger.json") }

// configLookup is the environment a configuration is resolved in. Tests
// replace every field; the shim uses defaultConfigLookup.
type configLookup struct {
	Getenv      func(string) string
	DefaultPath string
	DevicePath  string
}

func defaultConfigLookup() configLookup {
	return configLookup{Getenv: os.Getenv, DefaultPath: DefaultConfigPath, DevicePath: DefaultDevicePath}
}

// loadConfig resolves the configuration of one task. The first of these
// that is present wins: the runtime options' config_path (what CRI and
// `ctr run --runtime-config-path` send), the runtime options' config_body
// (CRI on containerd 1.7+ sends the runtime's TOML options table there when
// no path is configured), the file named by $RUNPHI_CONFIG, and
// /etc/runphi/runphi.toml. Only the last may be missing.
func loadConfig(options *anypb.Any, lookup configLookup) (Config, error) {
	ro, err := parseRuntimeOptions(options)
	if err != nil {
		return Config{}, err
	}
	var cfg Config
	switch {
	case ro.GetConfigPath() != "":
		cfg, err = readConfigFile(ro.GetConfigPath(), true)
	case len(ro.GetConfigBody()) > 0:
		cfg, err = decodeConfig(ro.GetConfigBody(), "runtime options config_body")
	case lookup.Getenv(ConfigEnv) != "":
		cfg, err = readConfigFile(lookup.Getenv(ConfigEnv), true)
	default:
		cfg, err = readConfigFile(lookup.DefaultPath, false)
	}
	if err != nil {
		return Config{}, err
	}
	if cfg.Backend == "" {
		if _, err := os.Stat(lookup.DevicePath); err == nil {
			cfg.Backend = BackendJailhouse
		}
	}
	return cfg, nil
}

// readConfigFile reads one TOML file; a missing file is an error only when
// it was asked for by name.
func readConfigFile(path string, required bool) (Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !required {
		cfg := defaultConfig()
		cfg.Source = path // the file to create to change the defaults
		return cfg, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("read runphi configuration %s: %w: %w", path, err, errdefs.ErrInvalidArgument)
	}
	return decodeConfig(data, path)
}

func defaultConfig() Config {
	return Config{StateDir: defaultStateDir, SimDir: defaultSimDir, Board: defaultBoard}
}

// decodeConfig parses TOML over the defaults and validates every key;
// source names the file in errors.
func decodeConfig(data []byte, source string) (Config, error) {
	cfg := defaultConfig()
	cfg.Source = source
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		return Config{}, fmt.Errorf("runphi configuration %s: %w: %w", source, err, errdefs.ErrInvalidArgument)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return Config{}, fmt.Errorf("runphi configuration %s: unknown key %s (known: backend, state_dir, sim_dir, board, debug, runc.binary, runc.root, runc.systemd_cgroup): %w",
			source, strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
	}
	switch cfg.Backend {
	case "", BackendJailhouse, BackendSim:
	default:
		return Config{}, fmt.Errorf("runphi configuration %s: backend = %q: want %q or %q: %w",
			source, cfg.Backend, BackendJailhouse, BackendSim, errdefs.ErrInvalidArgument)
	}
	for _, dir := range []struct{ key, value string }{{"state_dir", cfg.StateDir}, {"sim_dir", cfg.SimDir}} {
		if !filepath.IsAbs(dir.value) {
			return Config{}, fmt.Errorf("runphi configuration %s: %s = %q: want an absolute path: %w",
				source, dir.key, dir.value, errdefs.ErrInvalidArgument)
		}
	}
	if cfg.Runc.Root != "" && !filepath.IsAbs(cfg.Runc.Root) {
		return Config{}, fmt.Errorf("runphi configuration %s: runc.root = %q: want an absolute path: %w",
			source, cfg.Runc.Root, errdefs.ErrInvalidArgument)
	}
	if cfg.Board == "" {
		return Config{}, fmt.Errorf("runphi configuration %s: board is empty: %w", source, errdefs.ErrInvalidArgument)
	}
	return cfg, nil
}

// runtimeOptionsName is the full name of runtimeoptions.v1.Options, the
// type CRI and ctr send for runtimes other than runc.
var runtimeOptionsName = string((&runtimeoptions.Options{}).ProtoReflect().Descriptor().FullName())

// parseRuntimeOptions decodes CreateTaskRequest.options. Absent options and
// options of another type (a runc Options sent to the wrong runtime, say)
// mean no options; a runtimeoptions.v1.Options that does not decode is an
// error.
func parseRuntimeOptions(options *anypb.Any) (*runtimeoptions.Options, error) {
	if options == nil || options.GetTypeUrl() == "" {
		return nil, nil
	}
	url := options.GetTypeUrl()
	if url[strings.LastIndexByte(url, '/')+1:] != runtimeOptionsName {
		return nil, nil
	}
	var ro runtimeoptions.Options
	if err := proto.Unmarshal(options.GetValue(), &ro); err != nil {
		return nil, fmt.Errorf("decode runtime options %s: %w: %w", url, err, errdefs.ErrInvalidArgument)
	}
	return &ro, nil
}
