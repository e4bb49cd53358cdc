package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCmd runs runphi with args and returns the exit code and both outputs.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(&cmdEnv{stdout: &out, stderr: &errOut}, args)
	return code, out.String(), errOut.String()
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{"no command lists commands", nil, 2, "", "Commands:"},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"version", []string{"version"}, 0, "runphi dev", ""},
		{"-v is version", []string{"-v"}, 0, "runphi dev", ""},
		{"version rejects args", []string{"version", "x"}, 2, "", "usage: runphi version"},
		{"help lists image", []string{"help"}, 0, "image", ""},
		{"help for a command prints its flags", []string{"help", "image"}, 0, "", "image build"},
		{"image without subcommand", []string{"image"}, 2, "", "missing subcommand"},
		{"image build needs -o", []string{"image", "build", "."}, 2, "", "-o and --ref are required"},
		{"image build -h prints flags", []string{"image", "build", "-h"}, 0, "", "-no-validate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("runphi %q = %d\nstdout: %s\nstderr: %s\nwant %d, stdout ∋ %q, stderr ∋ %q",
					tc.args, code, out, errOut, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

func TestRegisterRejectsDuplicates(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("registering \"image\" twice did not panic")
		}
	}()
	register(&command{name: "image"})
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		name string
		args []string
		pos  string
		o    string
		bad  bool
	}{
		{"flags after positional", []string{"DIR", "-o", "x"}, "DIR", "x", false},
		{"flags before positional", []string{"--o=x", "DIR"}, "DIR", "x", false},
		{"flags around two positionals", []string{"A", "-o", "x", "B"}, "A B", "x", false},
		{"double dash ends flags", []string{"-o", "x", "--", "-o"}, "-o", "x", false},
		{"unknown flag", []string{"DIR", "--nope"}, "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(&bytes.Buffer{})
			o := fs.String("o", "", "")
			pos, err := parseInterspersed(fs, tc.args)
			if tc.bad {
				if _, ok := err.(*usageError); !ok {
					t.Fatalf("err = %v, want a usageError", err)
				}
				return
			}
			if err != nil || strings.Join(pos, " ") != tc.pos || *o != tc.o {
				t.Fatalf("pos %q o %q err %v; want pos %q o %q", pos, *o, err, tc.pos, tc.o)
			}
		})
	}
}

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: "/boot/boot.bin", want: []string{"/boot/boot.bin"}},
		{in: "/bin/sleep  10", want: []string{"/bin/sleep", "10"}},
		{in: `["/bin/sh","-c","echo a b"]`, want: []string{"/bin/sh", "-c", "echo a b"}},
		{in: `["/bin/sh",`, bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := splitCommand(tc.in)
			if tc.bad != (err != nil) || strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("splitCommand(%q) = %q, %v", tc.in, got, err)
			}
		})
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
