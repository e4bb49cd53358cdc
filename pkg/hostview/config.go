package hostview

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
)

// Where the configuration comes from when no file is named on the command
// line: the same environment variable and default file the shim reads
// (pkg/shim/config.go, docs/configuration.md).
const (
	ConfigEnv         = "RUNPHI_CONFIG"
	DefaultConfigPath = "/etc/runphi/runphi.toml"
	DefaultDevicePath = "/dev/jailhouse"
)

// Backends a configuration can select.
const (
	BackendJailhouse = "jailhouse"
	BackendSim       = "sim"
)

// Defaults of the configuration keys, as the shim's.
const (
	DefaultStateDir = "/run/runphi"
	DefaultSimDir   = "/run/runphi/sim"
	DefaultBoard    = "qemu-arm64"
)

// Config is the runphi configuration file, read with the shim's keys,
// defaults and validation. The json tags are those of the resolved
// configuration the shim keeps in each task's state file.
type Config struct {
	Backend  string `toml:"backend" json:"backend"`
	StateDir string `toml:"state_dir" json:"state_dir"`
	SimDir   string `toml:"sim_dir" json:"sim_dir"`
	Board    string `toml:"board" json:"board"`
	Debug    bool   `toml:"debug" json:"debug"`
	// Runc configures the runc that runs a pod's non-partition containers.
	Runc RuncConfig `toml:"runc" json:"runc"`

	// Source is the file the values came from; for the defaults, the
	// default file that was missing.
	Source string `toml:"-" json:"source"`
	// Origin says why that file was read: "--config", "$RUNPHI_CONFIG",
	// "default" or a caller-chosen text (doctor: "containerd's
	// RUNPHI_CONFIG").
	Origin string `toml:"-" json:"origin"`
	// Missing is set when Source is the default file and it does not
	// exist, so the values are the defaults.
	Missing bool `toml:"-" json:"missing,omitempty"`
	// BackendDefaulted is set when the file has no backend key and the
	// backend was chosen by the presence of /dev/jailhouse (or not at all).
	BackendDefaulted bool `toml:"-" json:"backend_defaulted,omitempty"`
}

// RuncConfig is the [runc] table.
type RuncConfig struct {
	Binary        string `toml:"binary" json:"binary,omitempty"`
	Root          string `toml:"root" json:"root,omitempty"`
	SystemdCgroup bool   `toml:"systemd_cgroup" json:"systemd_cgroup,omitempty"`
}

// LedgerPath is where the node-wide resource ledger lives.
func (c Config) LedgerPath() string { return filepath.Join(c.StateDir, "ledger.json") }

// ConfigKeys are the keys a configuration file may hold, in the order the
// documentation lists them.
var ConfigKeys = []string{"backend", "state_dir", "sim_dir", "board", "debug", "runc.binary", "runc.root", "runc.systemd_cgroup"}

// LoadOptions says where LoadConfig looks. The zero value means the real
// environment and paths.
type LoadOptions struct {
	// Path is a file named on the command line; it wins over everything.
	Path string
	// Origin overrides the Origin recorded for Path (default "--config").
	Origin string
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// DefaultPath replaces /etc/runphi/runphi.toml.
	DefaultPath string
	// DevicePath replaces /dev/jailhouse, whose presence makes "jailhouse"
	// the default backend.
	DevicePath string
}

// LoadConfig resolves the configuration the way the shim does for a task
// created without runtime options: opts.Path (the CLI's --config, standing
// in for CRI's ConfigPath), else $RUNPHI_CONFIG, else
// /etc/runphi/runphi.toml, which alone may be missing. Errors name the file
// and the key.
func LoadConfig(opts LoadOptions) (Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	defPath := opts.DefaultPath
	if defPath == "" {
		defPath = DefaultConfigPath
	}
	devPath := opts.DevicePath
	if devPath == "" {
		devPath = DefaultDevicePath
	}
	var (
		cfg Config
		err error
	)
	switch {
	case opts.Path != "":
		origin := opts.Origin
		if origin == "" {
			origin = "--config"
		}
		cfg, err = readConfigFile(opts.Path, true)
		cfg.Origin = origin
	case getenv(ConfigEnv) != "":
		cfg, err = readConfigFile(getenv(ConfigEnv), true)
		cfg.Origin = "$" + ConfigEnv
	default:
		cfg, err = readConfigFile(defPath, false)
		cfg.Origin = "default"
	}
	if err != nil {
		return Config{}, err
	}
	if cfg.Backend == "" {
		cfg.BackendDefaulted = true
		if _, err := os.Stat(devPath); err == nil {
			cfg.Backend = BackendJailhouse
		}
	}
	return cfg, nil
}

func readConfigFile(path string, required bool) (Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !required {
		cfg := defaultConfig()
		cfg.Source, cfg.Missing = path, true
		return cfg, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("read runphi configuration %s: %w", path, err)
	}
	return DecodeConfig(data, path)
}

func defaultConfig() Config {
	return Config{StateDir: DefaultStateDir, SimDir: DefaultSimDir, Board: DefaultBoard}
}

// DecodeConfig parses TOML over the defaults and validates every key as
// the shim does; source names the file in errors.
func DecodeConfig(data []byte, source string) (Config, error) {
	cfg := defaultConfig()
	cfg.Source = source
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		return Config{}, fmt.Errorf("runphi configuration %s: %w", source, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return Config{}, fmt.Errorf("runphi configuration %s: unknown key %s (known: %s)",
			source, strings.Join(keys, ", "), strings.Join(ConfigKeys, ", "))
	}
	switch cfg.Backend {
	case "", BackendJailhouse, BackendSim:
	default:
		return Config{}, fmt.Errorf("runphi configuration %s: backend = %q: want %q or %q",
			source, cfg.Backend, BackendJailhouse, BackendSim)
	}
	for _, dir := range []struct{ key, value string }{{"state_dir", cfg.StateDir}, {"sim_dir", cfg.SimDir}} {
		if !filepath.IsAbs(dir.value) {
			return Config{}, fmt.Errorf("runphi configuration %s: %s = %q: want an absolute path", source, dir.key, dir.value)
		}
	}
	if cfg.Runc.Root != "" && !filepath.IsAbs(cfg.Runc.Root) {
		return Config{}, fmt.Errorf("runphi configuration %s: runc.root = %q: want an absolute path", source, cfg.Runc.Root)
	}
	if cfg.Board == "" {
		return Config{}, fmt.Errorf("runphi configuration %s: board is empty", source)
	}
	return cfg, nil
}
