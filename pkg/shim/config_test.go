package shim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func optionsAny(t *testing.T, ro *runtimeoptions.Options) *anypb.Any {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(ro)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestLoadConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	optFile := writeFile(t, filepath.Join(dir, "options.toml"), `board = "from-options"`)
	envFile := writeFile(t, filepath.Join(dir, "env.toml"), `board = "from-env"`)
	defFile := writeFile(t, filepath.Join(dir, "default.toml"), `board = "from-default"`)
	missing := filepath.Join(dir, "missing.toml")

	cases := []struct {
		name       string
		options    *anypb.Any
		env        string
		defPath    string
		wantBoard  string
		wantSource string
		wantErr    error
	}{
		{"runtime options config_path beats everything",
			optionsAny(t, &runtimeoptions.Options{ConfigPath: optFile}), envFile, defFile, "from-options", optFile, nil},
		{"runtime options config_body when no path",
			optionsAny(t, &runtimeoptions.Options{ConfigBody: []byte(`board = "from-body"`)}), envFile, defFile,
			"from-body", "runtime options config_body", nil},
		{"RUNPHI_CONFIG beats the default file", nil, envFile, defFile, "from-env", envFile, nil},
		{"empty runtime options fall through to RUNPHI_CONFIG",
			optionsAny(t, &runtimeoptions.Options{}), envFile, defFile, "from-env", envFile, nil},
		{"options of another type are ignored", mustAny(t, "io.containerd.runc.v1.Options", nil), "", defFile,
			"from-default", defFile, nil},
		{"default file", nil, "", defFile, "from-default", defFile, nil},
		{"missing default file means the defaults", nil, "", missing, defaultBoard, missing, nil},
		{"missing config_path is an error",
			optionsAny(t, &runtimeoptions.Options{ConfigPath: missing}), "", defFile, "", "", errdefs.ErrInvalidArgument},
		{"missing RUNPHI_CONFIG file is an error", nil, missing, defFile, "", "", errdefs.ErrInvalidArgument},
		{"runtime options that do not decode are an error",
			mustAny(t, "runtimeoptions.v1.Options", []byte{0xff}), "", defFile, "", "", errdefs.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lookup := configLookup{
				Getenv:      func(k string) string { return map[string]string{ConfigEnv: tc.env}[k] },
				DefaultPath: tc.defPath,
				DevicePath:  filepath.Join(dir, "no-jailhouse"),
			}
			cfg, err := loadConfig(tc.options, lookup)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Board != tc.wantBoard || cfg.Source != tc.wantSource {
				t.Fatalf("board %q from %q, want %q from %q", cfg.Board, cfg.Source, tc.wantBoard, tc.wantSource)
			}
		})
	}
}

func mustAny(t *testing.T, url string, value []byte) *anypb.Any {
	t.Helper()
	return &anypb.Any{TypeUrl: url, Value: value}
}

func TestLoadConfigDefaultBackend(t *testing.T) {
	dir := t.TempDir()
	device := writeFile(t, filepath.Join(dir, "jailhouse"), "")
	for _, tc := range []struct {
		name, device, file, want string
	}{
		{"jailhouse when the device exists", device, "", BackendJailhouse},
		{"none when it does not", filepath.Join(dir, "absent"), "", ""},
		{"an explicit backend is kept", device, `backend = "sim"`, BackendSim},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(dir, "c.toml"), tc.file)
			cfg, err := loadConfig(nil, configLookup{Getenv: func(string) string { return "" }, DefaultPath: path, DevicePath: tc.device})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Backend != tc.want {
				t.Fatalf("backend %q, want %q", cfg.Backend, tc.want)
			}
		})
	}
}

func TestDecodeConfig(t *testing.T) {
	cases := []struct {
		name    string
		toml    string
		want    Config
		errText []string // substrings of the InvalidArgument error
	}{
		{"defaults", ``, Config{StateDir: "/run/runphi", SimDir: "/run/runphi/sim", Board: "qemu-arm64", Source: "f.toml"}, nil},
		{"every key", "backend = \"sim\"\nstate_dir = \"/s\"\nsim_dir = \"/x\"\nboard = \"/b.json\"\ndebug = true\n",
			Config{Backend: "sim", StateDir: "/s", SimDir: "/x", Board: "/b.json", Debug: true, Source: "f.toml"}, nil},
		{"unknown key names key and file", "backend = \"sim\"\nbackedn = \"x\"\n", Config{}, []string{"f.toml", "backedn"}},
		{"unknown table key", "[sim]\ndir = \"/x\"\n", Config{}, []string{"f.toml", "sim.dir"}},
		{"bad backend", `backend = "xen"`, Config{}, []string{"f.toml", "backend", "xen"}},
		{"relative state_dir", `state_dir = "run"`, Config{}, []string{"f.toml", "state_dir"}},
		{"relative sim_dir", `sim_dir = "sim"`, Config{}, []string{"f.toml", "sim_dir"}},
		{"empty board", `board = ""`, Config{}, []string{"f.toml", "board"}},
		{"syntax error names the file", `backend = `, Config{}, []string{"f.toml"}},
		{"wrong type names the file", `debug = "yes"`, Config{}, []string{"f.toml", "debug"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeConfig([]byte(tc.toml), "f.toml")
			if tc.errText != nil {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
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

func TestLedgerPath(t *testing.T) {
	if got := (Config{StateDir: "/run/runphi"}).LedgerPath(); got != "/run/runphi/ledger.json" {
		t.Fatalf("LedgerPath = %q", got)
	}
}
