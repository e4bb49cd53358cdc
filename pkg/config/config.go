package config

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

// Where the configuration comes from when nothing names a file or a body.
const (
	// Env names the environment variable holding a configuration path.
	Env = "RUNPHI_CONFIG"
	// DefaultPath is read when nothing else names a file. A missing
	// default file means the defaults.
	DefaultPath = "/etc/runphi/runphi.toml"
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
	DefaultStateDir = "/run/runphi"
	DefaultSimDir   = "/run/runphi/sim"
	DefaultBoard    = "qemu-arm64"
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
	Runc Runc `toml:"runc" json:"runc"`

	// Source says where the values came from: a file path (for the
	// defaults, the missing default file) or the inline body's name.
	// Error messages name it.
	Source string `toml:"-" json:"source"`

	// The provenance of one Load, for the operator (doctor); it is not
	// persisted, as a state file's configuration is read back, not loaded.

	// Origin says why Source was read: LoadOptions.Origin, "$RUNPHI_CONFIG"
	// or "default".
	Origin string `toml:"-" json:"-"`
	// Missing is set when Source is the default file and it does not
	// exist, so the values are the defaults.
	Missing bool `toml:"-" json:"-"`
	// BackendDefaulted is set when the file has no backend key and the
	// backend was chosen by the presence of /dev/jailhouse (or not at all).
	BackendDefaulted bool `toml:"-" json:"-"`
}

// Runc is the [runc] table. Its zero value is what containerd's own runc
// shim does by default.
type Runc struct {
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

// Keys are the keys a configuration file may hold, in the order the
// documentation lists them; errors about an unknown key list them.
var Keys = []string{"backend", "state_dir", "sim_dir", "board", "debug", "runc.binary", "runc.root", "runc.systemd_cgroup"}

// LoadOptions says where Load looks. The zero value means the real
// environment and paths.
type LoadOptions struct {
	// Path is a file named by the caller (the runtime options'
	// config_path, the CLI's --config); it wins over everything.
	Path string
	// Origin is recorded as Config.Origin when Path is read (default
	// "path").
	Origin string
	// Body is an inline configuration (the runtime options' config_body),
	// read when Path is empty. BodySource names it in Source and errors.
	Body       []byte
	BodySource string
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// DefaultPath replaces /etc/runphi/runphi.toml.
	DefaultPath string
	// DevicePath replaces /dev/jailhouse, whose presence makes "jailhouse"
	// the default backend.
	DevicePath string
}

// Load resolves a configuration. The first of these that is present wins:
// opts.Path, opts.Body, the file named by $RUNPHI_CONFIG, and
// /etc/runphi/runphi.toml, which alone may be missing. With no backend key,
// the backend is "jailhouse" when the driver's device exists, else none.
// Errors name the file and the key.
func Load(opts LoadOptions) (Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	defPath := opts.DefaultPath
	if defPath == "" {
		defPath = DefaultPath
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
		cfg, err = readFile(opts.Path, true)
		cfg.Origin = opts.Origin
		if cfg.Origin == "" {
			cfg.Origin = "path"
		}
	case len(opts.Body) > 0:
		cfg, err = Decode(opts.Body, opts.BodySource)
		cfg.Origin = opts.BodySource
	case getenv(Env) != "":
		cfg, err = readFile(getenv(Env), true)
		cfg.Origin = "$" + Env
	default:
		cfg, err = readFile(defPath, false)
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

// readFile reads one TOML file; a missing file is an error only when it
// was asked for by name.
func readFile(path string, required bool) (Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !required {
		cfg := defaults()
		cfg.Source, cfg.Missing = path, true // the file to create to change the defaults
		return cfg, nil
	}
	if err != nil {
		return Config{}, fmt.Errorf("read runphi configuration %s: %w", path, err)
	}
	return Decode(data, path)
}

func defaults() Config {
	return Config{StateDir: DefaultStateDir, SimDir: DefaultSimDir, Board: DefaultBoard}
}

// Decode parses TOML over the defaults and validates every key; source
// names the file in errors.
func Decode(data []byte, source string) (Config, error) {
	cfg := defaults()
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
			source, strings.Join(keys, ", "), strings.Join(Keys, ", "))
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
