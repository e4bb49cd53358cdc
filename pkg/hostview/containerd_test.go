package hostview

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadContainerdConfig(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		cri         bool
		runphi      []string // name=ConfigPath of each runphi runtime
		version     int
		address     string
		errContains string
	}{
		{"containerd 1.6 file with a runphi runtime", `version = 2
[grpc]
  address = "/run/x.sock"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runphi]
  runtime_type = "io.containerd.runphi.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runphi.options]
    ConfigPath = "/etc/runphi/runphi.toml"
`, true, []string{"runphi=/etc/runphi/runphi.toml"}, 2, "/run/x.sock", ""},
		{"containerd 2.x file", `version = 3
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.partitions]
  runtime_type = 'io.containerd.runphi.v2'
`, true, []string{"partitions="}, 3, "", ""},
		{"CRI disabled (as make demo writes)", `version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
`, false, nil, 2, "", ""},
		{"2.x CRI runtime plugin disabled", `version = 3
disabled_plugins = ["io.containerd.cri.v1.runtime"]
`, false, nil, 3, "", ""},
		{"no version key is version 1", `[plugins.cri.containerd.runtimes.runphi]
runtime_type = "io.containerd.runphi.v2"
`, true, []string{"runphi="}, 1, "", ""},
		{"TOML syntax error", "version = \n", true, nil, 1, "", "line 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			writeTestFile(t, path, tc.body)
			c := ReadContainerdConfig(path)
			if tc.errContains != "" {
				if c.Err == nil || !strings.Contains(c.Err.Error(), tc.errContains) || !strings.Contains(c.Err.Error(), path) {
					t.Fatalf("Err = %v, want one naming %s and %q", c.Err, path, tc.errContains)
				}
				return
			}
			if c.Err != nil || !c.Exists {
				t.Fatalf("Err %v, Exists %v", c.Err, c.Exists)
			}
			var got []string
			for _, r := range c.RunphiRuntimes() {
				got = append(got, r.Name+"="+r.ConfigPath)
			}
			if c.CRIEnabled() != tc.cri || strings.Join(got, ",") != strings.Join(tc.runphi, ",") ||
				c.Version != tc.version || c.GRPCAddress != tc.address {
				t.Errorf("CRI %v runphi %q version %d address %q", c.CRIEnabled(), got, c.Version, c.GRPCAddress)
			}
		})
	}
	t.Run("missing file means containerd's defaults", func(t *testing.T) {
		c := ReadContainerdConfig(filepath.Join(t.TempDir(), "none.toml"))
		if c.Exists || c.Err != nil || !c.CRIEnabled() || len(c.RunphiRuntimes()) != 0 {
			t.Fatalf("%+v", c)
		}
	})
}

func TestParseContainerdVersion(t *testing.T) {
	tests := []struct {
		out  string
		want string
		bad  bool
	}{
		{out: "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n", want: "1.6.20"},
		{out: "containerd github.com/containerd/containerd/v2 v2.4.2 unknown\n", want: "2.4.2"},
		{out: "containerd github.com/containerd/containerd/v2 2.4.2+unknown\n", want: "2.4.2"},
		{out: "containerd github.com/containerd/containerd v1.7.0-beta.1 abc\n", want: "1.7.0"},
		{out: "runc version 1.1.5", bad: true},
		{out: "containerd x vX", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.out, func(t *testing.T) {
			v, err := ParseContainerdVersion(tc.out)
			if tc.bad != (err != nil) || (!tc.bad && v.String() != tc.want) {
				t.Fatalf("= %v, %v; want %s (error %v)", v, err, tc.want, tc.bad)
			}
		})
	}
	if !(Version{Major: 1, Minor: 6, Patch: 20}).Less(Version{Major: 2}) || (Version{Major: 2, Minor: 4}).Less(Version{Major: 1, Minor: 9}) {
		t.Error("Less orders by major, minor, patch")
	}
}

func TestProcessFlag(t *testing.T) {
	p := Process{Args: []string{"containerd", "-c", "/a.toml", "--address=/s.sock", "--log-level", "debug", "--", "--state", "x"}}
	tests := []struct {
		names []string
		want  string
		found bool
	}{
		{[]string{"config", "c"}, "/a.toml", true},
		{[]string{"address", "a"}, "/s.sock", true},
		{[]string{"log-level"}, "debug", true},
		{[]string{"state"}, "", false}, // after "--"
	}
	for _, tc := range tests {
		got, ok := p.Flag(tc.names...)
		if got != tc.want || ok != tc.found {
			t.Errorf("Flag(%q) = %q, %v; want %q, %v", tc.names, got, ok, tc.want, tc.found)
		}
	}
}

func TestContainerdDaemonsAndShimLookup(t *testing.T) {
	dir := t.TempDir()
	proc := filepath.Join(dir, "proc")
	cfgPath := filepath.Join(dir, "config.toml")
	writeTestFile(t, cfgPath, "version = 2\nstate = \"/tmp/st\"\n[grpc]\n  address = \"/tmp/c.sock\"\n")
	shimDir := filepath.Join(dir, "bin")
	writeTestFile(t, filepath.Join(shimDir, ShimBinary), "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(shimDir, ShimBinary), 0o755); err != nil {
		t.Fatal(err)
	}
	fakeProcess(t, proc, 10, "/usr/bin/containerd", "/", []string{"PATH=/nonexistent:" + shimDir, "RUNPHI_CONFIG=/x.toml"},
		"/usr/bin/containerd", "--config", cfgPath)
	fakeProcess(t, proc, 11, "/usr/bin/containerd", "/", []string{"PATH=/nonexistent"}, "containerd")
	fakeProcess(t, proc, 12, "/usr/bin/containerd-shim-runc-v2", "/", nil, "containerd-shim-runc-v2", "-id", "x")

	ds, err := ContainerdDaemons(proc)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 {
		t.Fatalf("%d daemons, want 2 (the runc shim is not one)", len(ds))
	}
	if ds[0].Address != "/tmp/c.sock" || ds[0].TaskRoot() != "/tmp/st/io.containerd.runtime.v2.task" || ds[0].ConfigPath != cfgPath {
		t.Errorf("daemon 10: address %q task root %q config %q", ds[0].Address, ds[0].TaskRoot(), ds[0].ConfigPath)
	}
	if ds[1].Address != DefaultContainerdAddress || ds[1].ConfigPath != DefaultContainerdConfig {
		t.Errorf("daemon 11 without flags: address %q config %q, want the defaults", ds[1].Address, ds[1].ConfigPath)
	}
	if l := FindShimFor(proc, ds[0]); l.Path != filepath.Join(shimDir, ShimBinary) {
		t.Errorf("daemon 10 finds %q (searched %q), want the one on its PATH", l.Path, l.Searched)
	}
	if l := FindShimFor(proc, ds[1]); l.Path != "" || !strings.Contains(strings.Join(l.Searched, ":"), "/usr/bin") {
		t.Errorf("daemon 11 finds %q, searched %q; want nothing, after looking beside containerd", l.Path, l.Searched)
	}
}
