package hostview

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/runphi/runphi/pkg/shim"
)

func TestLoadConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	flagFile := filepath.Join(dir, "flag.toml")
	envFile := filepath.Join(dir, "env.toml")
	defFile := filepath.Join(dir, "default.toml")
	device := filepath.Join(dir, "jailhouse")
	writeTestFile(t, flagFile, "backend = \"sim\"\nboard = \"from-flag\"\n")
	writeTestFile(t, envFile, "backend = \"sim\"\nboard = \"from-env\"\n")
	writeTestFile(t, defFile, "board = \"from-default\"\n")
	tests := []struct {
		name       string
		path, env  string
		defPath    string
		device     bool
		wantBoard  string
		wantOrigin string
		backend    string
		missing    bool
	}{
		{"--config wins over the environment", flagFile, envFile, defFile, false, "from-flag", "--config", "sim", false},
		{"RUNPHI_CONFIG wins over the default file", "", envFile, defFile, false, "from-env", "$RUNPHI_CONFIG", "sim", false},
		{"default file without backend and no device: none", "", "", defFile, false, "from-default", "default", "", false},
		{"default file without backend, /dev/jailhouse present: jailhouse", "", "", defFile, true, "from-default", "default", "jailhouse", false},
		{"missing default file means the defaults", "", "", filepath.Join(dir, "absent.toml"), false, "qemu-arm64", "default", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := device + "-absent"
			if tc.device {
				dev = device
				writeTestFile(t, dev, "")
			}
			cfg, err := LoadConfig(LoadOptions{
				Path:        tc.path,
				Getenv:      func(k string) string { return map[string]string{ConfigEnv: tc.env}[k] },
				DefaultPath: tc.defPath,
				DevicePath:  dev,
			})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Board != tc.wantBoard || cfg.Origin != tc.wantOrigin || cfg.Backend != tc.backend || cfg.Missing != tc.missing {
				t.Errorf("got board %q origin %q backend %q missing %v", cfg.Board, cfg.Origin, cfg.Backend, cfg.Missing)
			}
			if cfg.StateDir != DefaultStateDir || cfg.LedgerPath() != "/run/runphi/ledger.json" {
				t.Errorf("state_dir %q, ledger %q: want the shim's defaults", cfg.StateDir, cfg.LedgerPath())
			}
		})
	}
}

func TestLoadConfigErrorsNameFileAndKey(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		body string // "" : the file does not exist
		want []string
	}{
		{"named file missing", "", []string{"missing.toml", "no such file"}},
		{"unknown key", "backend = \"sim\"\nbord = \"x\"\n", []string{"unknown key bord", "known: backend"}},
		{"bad backend", "backend = \"kvm\"\n", []string{`backend = "kvm"`, `want "jailhouse" or "sim"`}},
		{"relative state_dir", "state_dir = \"run\"\n", []string{`state_dir = "run"`, "absolute"}},
		{"TOML syntax", "backend = \n", []string{"runphi configuration", "line 1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "missing.toml")
			if tc.body != "" {
				path = filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".toml")
				writeTestFile(t, path, tc.body)
			}
			_, err := LoadConfig(LoadOptions{Path: path})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tc.want, filepath.Base(path)) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// The CLI must accept exactly the files the shim accepts: a key the shim
// learns and this package does not would make doctor reject a good file.
func TestConfigKeysMatchTheShim(t *testing.T) {
	shimKeys := tomlKeys(reflect.TypeFor[shim.Config](), "")
	ours := tomlKeys(reflect.TypeFor[Config](), "")
	if !slices.Equal(shimKeys, ours) {
		t.Fatalf("shim.Config keys %q, hostview.Config keys %q: update pkg/hostview/config.go", shimKeys, ours)
	}
	documented := slices.Sorted(slices.Values(ConfigKeys))
	if !slices.Equal(documented, ours) {
		t.Errorf("ConfigKeys %q, struct keys %q", documented, ours)
	}
}

// tomlKeys lists the dotted TOML keys of a struct type, sorted.
func tomlKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "-" || tag == "" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, tomlKeys(f.Type, prefix+tag+".")...)
			continue
		}
		keys = append(keys, prefix+tag)
	}
	slices.Sort(keys)
	return keys
}
