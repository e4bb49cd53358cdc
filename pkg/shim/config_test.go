package shim

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/runphi/runphi/pkg/config"
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
		{"missing default file means the defaults", nil, "", missing, config.DefaultBoard, missing, nil},
		{"missing config_path is an error",
			optionsAny(t, &runtimeoptions.Options{ConfigPath: missing}), "", defFile, "", "", errdefs.ErrInvalidArgument},
		{"missing RUNPHI_CONFIG file is an error", nil, missing, defFile, "", "", errdefs.ErrInvalidArgument},
		{"a bad key in config_body is an error",
			optionsAny(t, &runtimeoptions.Options{ConfigBody: []byte(`bord = "x"`)}), "", defFile, "", "", errdefs.ErrInvalidArgument},
		{"runtime options that do not decode are an error",
			mustAny(t, "runtimeoptions.v1.Options", []byte{0xff}), "", defFile, "", "", errdefs.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lookup := config.LoadOptions{
				Getenv:      func(k string) string { return map[string]string{config.Env: tc.env}[k] },
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
