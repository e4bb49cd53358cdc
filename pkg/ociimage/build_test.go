package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeTree creates files under dir: a key ending in "/" is a directory, a
// value starting with "->" is a symlink target, "+x:" marks an executable.
func writeTree(t *testing.T, dir string, tree map[string]string) {
	t.Helper()
	for name, content := range tree {
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasPrefix(content, "->"):
			if err := os.Symlink(content[2:], p); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(content, "+x:"):
			if err := os.WriteFile(p, []byte(content[3:]), 0o700); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

var demoTree = map[string]string{
	"boot/config.json": `{"os_var":"zephyr","inmate":"/boot/boot.bin"}`,
	"boot/boot.bin":    "+x:#!runphi-sim\nprint hello\nexit\n",
	"boot/current":     "->boot.bin",
	"etc/":             "",
	"var/empty/":       "",
}

// tarEntry is one tar entry as read back.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

func readTar(t *testing.T, r io.Reader) (names []string, entries map[string]tarEntry) {
	t.Helper()
	tr := tar.NewReader(r)
	entries = map[string]tarEntry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names, entries
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		entries[h.Name] = tarEntry{*h, data}
	}
}

func build(t *testing.T, tree map[string]string, opts Options) ([]byte, *Image) {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, tree)
	var buf bytes.Buffer
	img, err := Build(&buf, dir, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return buf.Bytes(), img
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestBuildIsDeterministic(t *testing.T) {
	opts := Options{Ref: "demo:1", Cmd: []string{"/boot/boot.bin"}}
	a, imgA := build(t, demoTree, opts)
	// A second tree made later, with other permissions on disk, must give
	// the same bytes: times and non-executable permission bits are dropped.
	time.Sleep(10 * time.Millisecond)
	dir := t.TempDir()
	writeTree(t, dir, demoTree)
	os.Chmod(filepath.Join(dir, "boot/config.json"), 0o664)
	os.Chmod(filepath.Join(dir, "etc"), 0o775)
	os.Chtimes(filepath.Join(dir, "boot/boot.bin"), time.Now(), time.Now().Add(time.Hour))
	var b bytes.Buffer
	imgB, err := Build(&b, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b.Bytes()) {
		t.Fatalf("two builds of the same tree differ: %s vs %s", imgA.Manifest.Digest, imgB.Manifest.Digest)
	}

	t.Run("content change changes digest", func(t *testing.T) {
		changed := map[string]string{}
		for k, v := range demoTree {
			changed[k] = v
		}
		changed["boot/boot.bin"] = "+x:#!runphi-sim\nprint bye\nexit\n"
		_, imgC := build(t, changed, opts)
		if imgC.Layer.Digest == imgA.Layer.Digest || imgC.Manifest.Digest == imgA.Manifest.Digest {
			t.Fatal("changing a file did not change the layer and manifest digests")
		}
	})
	t.Run("executable bit changes digest", func(t *testing.T) {
		changed := map[string]string{}
		for k, v := range demoTree {
			changed[k] = v
		}
		changed["boot/boot.bin"] = strings.TrimPrefix(demoTree["boot/boot.bin"], "+x:")
		_, imgC := build(t, changed, opts)
		if imgC.DiffID == imgA.DiffID {
			t.Fatal("dropping the executable bit did not change the layer")
		}
	})
}

func TestBuildLayoutStructure(t *testing.T) {
	out, img := build(t, demoTree, Options{Ref: "runphi/demo", Cmd: []string{"/boot/boot.bin"}})
	names, files := readTar(t, bytes.NewReader(out))

	wantNames := []string{"blobs/", "blobs/sha256/"}
	for _, d := range []string{img.Config.Digest, img.Layer.Digest, img.Manifest.Digest} {
		wantNames = append(wantNames, "blobs/sha256/"+strings.TrimPrefix(d, "sha256:"))
	}
	slices.Sort(wantNames[2:])
	wantNames = append(wantNames, "index.json", "oci-layout")
	if strings.Join(names, " ") != strings.Join(wantNames, " ") {
		t.Fatalf("layout entries:\n got %v\nwant %v", names, wantNames)
	}
	for name, e := range files {
		if e.hdr.Uid != 0 || e.hdr.Gid != 0 || e.hdr.Uname != "" || e.hdr.Gname != "" || !e.hdr.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: owner %d:%d %q:%q mtime %v, want 0:0, no names, epoch", name, e.hdr.Uid, e.hdr.Gid, e.hdr.Uname, e.hdr.Gname, e.hdr.ModTime)
		}
		if strings.HasPrefix(name, "blobs/sha256/") && e.hdr.Typeflag == tar.TypeReg {
			if got := sha(e.data); "blobs/sha256/"+strings.TrimPrefix(got, "sha256:") != name {
				t.Errorf("blob %s has digest %s", name, got)
			}
		}
	}
	blob := func(d Descriptor) []byte {
		e, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok {
			t.Fatalf("blob %s missing", d.Digest)
		}
		if int64(len(e.data)) != d.Size {
			t.Fatalf("blob %s: size %d, descriptor says %d", d.Digest, len(e.data), d.Size)
		}
		return e.data
	}

	if got := string(files["oci-layout"].data); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}
	var idx Index
	if err := json.Unmarshal(files["index.json"].data, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(idx.Manifests))
	}
	m := idx.Manifests[0]
	if m.Digest != img.Manifest.Digest || m.MediaType != MediaTypeManifest {
		t.Errorf("index entry %+v, want manifest %s", m, img.Manifest.Digest)
	}
	if got := m.Annotations[AnnotationImageName]; got != "docker.io/runphi/demo:latest" {
		t.Errorf("%s = %q", AnnotationImageName, got)
	}
	if got := m.Annotations[AnnotationRefName]; got != "latest" {
		t.Errorf("%s = %q", AnnotationRefName, got)
	}
	if m.Platform == nil || m.Platform.Architecture != runtime.GOARCH || m.Platform.OS != "linux" {
		t.Errorf("index platform %+v, want linux/%s", m.Platform, runtime.GOARCH)
	}

	var man Manifest
	if err := json.Unmarshal(blob(m), &man); err != nil {
		t.Fatal(err)
	}
	if man.SchemaVersion != 2 || man.Config.MediaType != MediaTypeConfig || len(man.Layers) != 1 || man.Layers[0].MediaType != MediaTypeLayerGz {
		t.Fatalf("manifest %+v", man)
	}
	var cfg Config
	if err := json.Unmarshal(blob(man.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != runtime.GOARCH || cfg.OS != "linux" {
		t.Errorf("config platform %s/%s, want linux/%s", cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	if strings.Join(cfg.Config.Cmd, " ") != "/boot/boot.bin" {
		t.Errorf("config Cmd = %q", cfg.Config.Cmd)
	}

	layer := blob(man.Layers[0])
	gz, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	if gz.Name != "" || !gz.ModTime.IsZero() {
		t.Errorf("gzip header has name %q and mtime %v, want none", gz.Name, gz.ModTime)
	}
	raw, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != sha(raw) || img.DiffID != sha(raw) {
		t.Errorf("diff_ids %v, uncompressed layer is %s", cfg.RootFS.DiffIDs, sha(raw))
	}
}

func TestBuildLayerContent(t *testing.T) {
	out, img := build(t, demoTree, Options{})
	_, files := readTar(t, bytes.NewReader(out))
	layer := files["blobs/sha256/"+strings.TrimPrefix(img.Layer.Digest, "sha256:")].data
	gz, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	names, entries := readTar(t, gz)

	want := []string{"boot/", "boot/boot.bin", "boot/config.json", "boot/current", "etc/", "var/", "var/empty/"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("layer entries:\n got %v\nwant %v (sorted, directories included)", names, want)
	}
	if img.Entries != len(want) {
		t.Errorf("Image.Entries = %d, want %d", img.Entries, len(want))
	}
	tests := []struct {
		name     string
		typeflag byte
		mode     int64
		link     string
		data     string
	}{
		{"boot/", tar.TypeDir, 0o755, "", ""},
		{"var/empty/", tar.TypeDir, 0o755, "", ""},
		{"boot/boot.bin", tar.TypeReg, 0o755, "", "#!runphi-sim\nprint hello\nexit\n"},
		{"boot/config.json", tar.TypeReg, 0o644, "", demoTree["boot/config.json"]},
		{"boot/current", tar.TypeSymlink, 0o777, "boot.bin", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := entries[tc.name]
			if e.hdr.Typeflag != tc.typeflag || e.hdr.Mode != tc.mode || e.hdr.Linkname != tc.link || string(e.data) != tc.data {
				t.Errorf("got type %q mode %o link %q data %q; want type %q mode %o link %q data %q",
					e.hdr.Typeflag, e.hdr.Mode, e.hdr.Linkname, e.data, tc.typeflag, tc.mode, tc.link, tc.data)
			}
			if e.hdr.Uid != 0 || e.hdr.Gid != 0 || !e.hdr.ModTime.Equal(time.Unix(0, 0)) {
				t.Errorf("owner %d:%d mtime %v, want 0:0 at the epoch", e.hdr.Uid, e.hdr.Gid, e.hdr.ModTime)
			}
		})
	}
}

func TestBuildPlatform(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want Platform
	}{
		{"host by default", Options{}, platformOf(Options{Arch: runtime.GOARCH})},
		{"arm64 gets v8", Options{Arch: "arm64"}, Platform{Architecture: "arm64", OS: "linux", Variant: "v8"}},
		{"arm gets v7", Options{Arch: "arm"}, Platform{Architecture: "arm", OS: "linux", Variant: "v7"}},
		{"explicit variant kept", Options{Arch: "arm", Variant: "v6"}, Platform{Architecture: "arm", OS: "linux", Variant: "v6"}},
		{"amd64 has no variant", Options{Arch: "amd64"}, Platform{Architecture: "amd64", OS: "linux"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, img := build(t, map[string]string{"a": "x"}, tc.opts)
			if img.Platform != tc.want || *img.Manifest.Platform != tc.want {
				t.Errorf("platform %+v (index %+v), want %+v", img.Platform, *img.Manifest.Platform, tc.want)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	t.Run("missing dir names it", func(t *testing.T) {
		_, err := Build(io.Discard, "/nonexistent/rootfs", Options{})
		if err == nil || !strings.Contains(err.Error(), "/nonexistent/rootfs") {
			t.Fatalf("err = %v, want it to name the directory", err)
		}
	})
	t.Run("file instead of dir", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		os.WriteFile(f, nil, 0o644)
		_, err := Build(io.Discard, f, Options{})
		if err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("fifo is refused with its path", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "pipe")
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Skip("mkfifo:", err)
		}
		_, err := Build(io.Discard, dir, Options{})
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "unsupported file type") {
			t.Fatalf("err = %v, want unsupported file type naming %s", err, p)
		}
	})
	t.Run("bad reference", func(t *testing.T) {
		_, err := Build(io.Discard, t.TempDir(), Options{Ref: "Demo:x"})
		if err == nil {
			t.Fatal("uppercase repository accepted")
		}
	})
}

func TestBuildFileLeavesNothingOnError(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "img.tar")
	if _, err := BuildFile(out, "/nonexistent", Options{}); err == nil {
		t.Fatal("no error")
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 0 {
		t.Fatalf("failed build left %v", left)
	}
	src := t.TempDir()
	writeTree(t, src, demoTree)
	if _, err := BuildFile(out, src, Options{}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("output %v %v", st, err)
	}
}

func TestParseReference(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "demo", want: "docker.io/library/demo:latest"},
		{in: "demo:v1", want: "docker.io/library/demo:v1"},
		{in: "runphi/demo", want: "docker.io/runphi/demo:latest"},
		{in: "docker.io/library/demo:latest", want: "docker.io/library/demo:latest"},
		{in: "localhost:5000/demo", want: "localhost:5000/demo:latest"},
		{in: "localhost/demo:t", want: "localhost/demo:t"},
		{in: "registry.example/a/b/c:1.0", want: "registry.example/a/b/c:1.0"},
		{in: "", bad: true},
		{in: "demo@sha256:abcd", bad: true},
		{in: "Demo", bad: true},
		{in: "demo:", bad: true},
		{in: "demo:-x", bad: true},
		{in: "a//b", bad: true},
		{in: "demo/", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseReference(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("ParseReference(%q) = %v, want an error", tc.in, r)
				}
				return
			}
			if err != nil || r.String() != tc.want {
				t.Fatalf("ParseReference(%q) = %v, %v; want %s", tc.in, r, err, tc.want)
			}
		})
	}
}

func TestBuildFileIntoMissingDirectoryNamesTheOutput(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "nonexistent", "x.tar")
	_, err := BuildFile(out, dir, Options{Ref: "docker.io/runphi/x:latest"})
	if err == nil || !strings.Contains(err.Error(), out) || strings.Contains(err.Error(), ".x.tar.") {
		t.Fatalf("BuildFile into a missing directory: %v, want an error naming %s and not the temporary file", err, out)
	}
}

func TestReferenceWithSpaceNamesTheSpace(t *testing.T) {
	_, err := ParseReference("BAD REF")
	if err == nil || !strings.Contains(err.Error(), "white space") {
		t.Fatalf("ParseReference(\"BAD REF\") = %v, want an error about white space", err)
	}
}
