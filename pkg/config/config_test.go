package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	flagFile := writeFile(t, filepath.Join(dir, "flag.toml"), "backend = \"sim\"\nboard = \"from-flag\"\n")
	envFile := writeFile(t, filepath.Join(dir, "env.toml"), "backend = \"sim\"\nboard = \"from-env\"\n")
	defFile := writeFile(t, filepath.Join(dir, "default.toml"), "board = \"from-default\"\n")
	device := filepath.Join(dir, "jailhouse")
	tests := []struct {
		name       string
		path, env  string
		body       string
		defPath    string
		device     bool
		wantBoard  string
		wantSource string
		wantOrigin string
		backend    string
		missing    bool
	}{
		{"a named path wins over everything", flagFile, envFile, `board = "from-body"`, defFile, false, "from-flag", flagFile, "--config", "sim", false},
		{"an inline body wins over the environment", "", envFile, `board = "from-body"`, defFile, false, "from-body", "body", "body", "", false},
		{"RUNPHI_CONFIG wins over the default file", "", envFile, "", defFile, false, "from-env", envFile, "$RUNPHI_CONFIG", "sim", false},
		{"default file without backend and no device: none", "", "", "", defFile, false, "from-default", defFile, "default", "", false},
		{"default file without backend, /dev/jailhouse present: jailhouse", "", "", "", defFile, true, "from-default", defFile, "default", "jailhouse", false},
		{"missing default file means the defaults", "", "", "", filepath.Join(dir, "absent.toml"), false, "qemu-arm64", filepath.Join(dir, "absent.toml"), "default", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev := device + "-absent"
			if tc.device {
				dev = writeFile(t, device, "")
			}
			cfg, err := Load(LoadOptions{
				Path:        tc.path,
				Origin:      "--config",
				Body:        []byte(tc.body),
				BodySource:  "body",
				Getenv:      func(k string) string { return map[string]string{Env: tc.env}[k] },
				DefaultPath: tc.defPath,
				DevicePath:  dev,
			})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Board != tc.wantBoard || cfg.Source != tc.wantSource || cfg.Origin != tc.wantOrigin || cfg.Backend != tc.backend || cfg.Missing != tc.missing {
				t.Errorf("got board %q source %q origin %q backend %q missing %v", cfg.Board, cfg.Source, cfg.Origin, cfg.Backend, cfg.Missing)
			}
			if cfg.StateDir != DefaultStateDir || cfg.LedgerPath() != "/run/runphi/ledger.json" {
				t.Errorf("state_dir %q, ledger %q: want the defaults", cfg.StateDir, cfg.LedgerPath())
			}
		})
	}
}

func TestLoadDefaultBackend(t *testing.T) {
	dir := t.TempDir()
	device := writeFile(t, filepath.Join(dir, "jailhouse"), "")
	for _, tc := range []struct {
		name, device, file, want string
		defaulted                bool
	}{
		{"jailhouse when the device exists", device, "", BackendJailhouse, true},
		{"none when it does not", filepath.Join(dir, "absent"), "", "", true},
		{"an explicit backend is kept", device, `backend = "sim"`, BackendSim, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(dir, "c.toml"), tc.file)
			cfg, err := Load(LoadOptions{Getenv: func(string) string { return "" }, DefaultPath: path, DevicePath: tc.device})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Backend != tc.want || cfg.BackendDefaulted != tc.defaulted {
				t.Fatalf("backend %q (defaulted %v), want %q (%v)", cfg.Backend, cfg.BackendDefaulted, tc.want, tc.defaulted)
			}
		})
	}
}

func TestLoadErrorsNameFileAndKey(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		body string // "": the file does not exist
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
				path = writeFile(t, filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".toml"), tc.body)
			}
			_, err := Load(LoadOptions{Path: path})
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

func TestDecode(t *testing.T) {
	cases := []struct {
		name    string
		toml    string
		want    Config
		errText []string // substrings of the error
	}{
		{"defaults", ``, Config{StateDir: "/run/runphi", SimDir: "/run/runphi/sim", Board: "qemu-arm64", Source: "f.toml"}, nil},
		{"every key", "backend = \"sim\"\nstate_dir = \"/s\"\nsim_dir = \"/x\"\nboard = \"/b.json\"\ndebug = true\n" +
			"[runc]\nbinary = \"/usr/bin/runc\"\nroot = \"/r\"\nsystemd_cgroup = true\n",
			Config{Backend: "sim", StateDir: "/s", SimDir: "/x", Board: "/b.json", Debug: true, Source: "f.toml",
				Runc: Runc{Binary: "/usr/bin/runc", Root: "/r", SystemdCgroup: true}}, nil},
		{"unknown key names key and file", "backend = \"sim\"\nbackedn = \"x\"\n", Config{}, []string{"f.toml", "backedn"}},
		{"unknown table key", "[sim]\ndir = \"/x\"\n", Config{}, []string{"f.toml", "sim.dir"}},
		{"bad backend", `backend = "xen"`, Config{}, []string{"f.toml", "backend", "xen"}},
		{"relative state_dir", `state_dir = "run"`, Config{}, []string{"f.toml", "state_dir"}},
		{"relative sim_dir", `sim_dir = "sim"`, Config{}, []string{"f.toml", "sim_dir"}},
		{"relative runc.root", "[runc]\nroot = \"r\"\n", Config{}, []string{"f.toml", "runc.root"}},
		{"empty board", `board = ""`, Config{}, []string{"f.toml", "board"}},
		{"syntax error names the file", `backend = `, Config{}, []string{"f.toml"}},
		{"wrong type names the file", `debug = "yes"`, Config{}, []string{"f.toml", "debug"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.toml), "f.toml")
			if tc.errText != nil {
				if err == nil {
					t.Fatal("no error")
				}
				for _, s := range tc.errText {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("config %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The unknown-key error lists Keys; a key added to Config and not to Keys
// would be accepted but missing from that list (and from the docs).
func TestKeysListEveryField(t *testing.T) {
	fields := tomlKeys(reflect.TypeFor[Config](), "")
	listed := slices.Sorted(slices.Values(Keys))
	if !slices.Equal(listed, fields) {
		t.Errorf("Keys %q, struct keys %q", listed, fields)
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
