package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"
)

// Options describe the image to build. The zero value builds a linux image
// for the host architecture named docker.io/library/image:latest with no
// command; most callers set Ref and Cmd.
type Options struct {
	// Ref is the image name, normalised by ParseReference. Default "image".
	Ref string
	// Arch is a GOARCH value; default runtime.GOARCH, so that ctr's default
	// platform matcher accepts the image on this host.
	Arch string
	// Variant is the CPU variant; default "v7" for arm, "v8" for arm64
	// (containerd's normalisation), none otherwise.
	Variant string
	// OS is a GOOS value; default "linux".
	OS string
	// Entrypoint, Cmd, Env, WorkingDir and Labels go into the image config
	// unchanged; containerd builds process.args from Entrypoint+Cmd.
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	Labels     map[string]string
	// CreatedBy goes into the history record; default "runphi image build".
	CreatedBy string
}

// Image describes what Build wrote.
type Image struct {
	Ref      Reference
	Platform Platform
	Manifest Descriptor // the descriptor index.json points at
	Config   Descriptor
	Layer    Descriptor
	DiffID   string // digest of the uncompressed layer
	Entries  int    // files, directories and symlinks in the layer
}

// epoch is the timestamp of every tar entry: the Unix epoch makes builds
// reproducible and is what `tar --mtime=@0` writes.
var epoch = time.Unix(0, 0)

// Build writes the OCI image-layout tarball of a single-layer image whose
// root filesystem is the content of dir. The layer is held in memory, which
// suits partition images (a few MiB); it is not meant for large root
// filesystems.
func Build(w io.Writer, dir string, opts Options) (*Image, error) {
	ref, err := ParseReference(defaultString(opts.Ref, "image"))
	if err != nil {
		return nil, err
	}
	plat := platformOf(opts)

	var layer bytes.Buffer
	diffID, entries, err := writeLayer(&layer, dir)
	if err != nil {
		return nil, err
	}
	img := &Image{Ref: ref, Platform: plat, DiffID: diffID, Entries: entries}
	img.Layer = Descriptor{MediaType: MediaTypeLayerGz, Digest: digestOf(layer.Bytes()), Size: int64(layer.Len())}

	cfg := Config{
		Architecture: plat.Architecture,
		OS:           plat.OS,
		Variant:      plat.Variant,
		Config: ExecConfig{
			Env:        opts.Env,
			Entrypoint: opts.Entrypoint,
			Cmd:        opts.Cmd,
			WorkingDir: opts.WorkingDir,
			Labels:     opts.Labels,
		},
		RootFS:  RootFS{Type: "layers", DiffIDs: []string{diffID}},
		History: []HistoryRecord{{CreatedBy: defaultString(opts.CreatedBy, "runphi image build")}},
	}
	cfgBlob, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode image config: %w", err)
	}
	img.Config = Descriptor{MediaType: MediaTypeConfig, Digest: digestOf(cfgBlob), Size: int64(len(cfgBlob))}

	manBlob, err := json.Marshal(Manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: img.Config, Layers: []Descriptor{img.Layer}})
	if err != nil {
		return nil, fmt.Errorf("encode image manifest: %w", err)
	}
	img.Manifest = Descriptor{
		MediaType: MediaTypeManifest,
		Digest:    digestOf(manBlob),
		Size:      int64(len(manBlob)),
		Platform:  &plat,
		Annotations: map[string]string{
			AnnotationImageName: ref.String(),
			AnnotationRefName:   ref.Tag,
		},
	}
	indexBlob, err := json.Marshal(Index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{img.Manifest}})
	if err != nil {
		return nil, fmt.Errorf("encode image index: %w", err)
	}
	layoutBlob, _ := json.Marshal(layoutFile{Version: "1.0.0"})

	// Names are in sorted order, as everywhere else in the output.
	tw := tar.NewWriter(w)
	dirs := []string{"blobs/", "blobs/sha256/"}
	for _, d := range dirs {
		if err := tw.WriteHeader(dirHeader(d)); err != nil {
			return nil, fmt.Errorf("write layout: %w", err)
		}
	}
	blobs := map[string][]byte{
		img.Layer.Digest:    layer.Bytes(),
		img.Config.Digest:   cfgBlob,
		img.Manifest.Digest: manBlob,
	}
	for _, d := range sortedKeys(blobs) {
		if err := writeFile(tw, "blobs/sha256/"+d[len("sha256:"):], blobs[d]); err != nil {
			return nil, fmt.Errorf("write layout: %w", err)
		}
	}
	if err := writeFile(tw, "index.json", indexBlob); err != nil {
		return nil, fmt.Errorf("write layout: %w", err)
	}
	if err := writeFile(tw, "oci-layout", layoutBlob); err != nil {
		return nil, fmt.Errorf("write layout: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write layout: %w", err)
	}
	return img, nil
}

// BuildFile is Build into the file out. The file is replaced atomically, so a
// failed build never leaves a truncated tarball behind.
func BuildFile(out, dir string, opts Options) (img *Image, retErr error) {
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		// The temporary name means nothing to the user; name the output.
		return nil, fmt.Errorf("write %s: %w", out, unwrapPathError(err))
	}
	defer func() {
		if retErr != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if img, err = Build(f, dir, opts); err != nil {
		return nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return nil, err
	}
	return img, nil
}

// writeLayer writes the gzipped tar of dir to w and returns the digest of the
// uncompressed tar (the diff ID) and the number of entries.
func writeLayer(w io.Writer, dir string) (diffID string, entries int, err error) {
	st, err := os.Stat(dir)
	if err != nil {
		return "", 0, fmt.Errorf("image root: %w", err)
	}
	if !st.IsDir() {
		return "", 0, fmt.Errorf("image root %s: not a directory", dir)
	}
	// gzip.Writer with a zero Header writes no name and MTIME 0.
	gz, _ := gzip.NewWriterLevel(w, gzip.BestCompression)
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(h, gz))

	// WalkDir visits entries in lexical order and does not follow symlinks.
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		entries++
		switch mode := info.Mode(); {
		case mode.IsDir():
			return tw.WriteHeader(dirHeader(name + "/"))
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch})
		case mode.IsRegular():
			perm := int64(0o644)
			if mode&0o111 != 0 {
				perm = 0o755
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: info.Size(), Mode: perm, ModTime: epoch}); err != nil {
				return err
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			// A file that changes size while being read would corrupt the
			// tar stream; CopyN plus the writer's own size check catch it.
			if _, err := io.CopyN(tw, f, info.Size()); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			return nil
		default:
			return fmt.Errorf("%s: unsupported file type %s (only directories, regular files and symlinks go into an image)", path, mode.Type())
		}
	})
	if err != nil {
		return "", 0, fmt.Errorf("build layer from %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return "", 0, fmt.Errorf("build layer from %s: %w", dir, err)
	}
	if err := gz.Close(); err != nil {
		return "", 0, fmt.Errorf("build layer from %s: %w", dir, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), entries, nil
}

func dirHeader(name string) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: epoch}
}

func writeFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644, ModTime: epoch}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func platformOf(opts Options) Platform {
	p := Platform{
		Architecture: defaultString(opts.Arch, runtime.GOARCH),
		OS:           defaultString(opts.OS, "linux"),
		Variant:      opts.Variant,
	}
	if p.Variant == "" {
		// containerd normalises arm to v7 and arm64 to v8 when matching.
		switch p.Architecture {
		case "arm":
			p.Variant = "v7"
		case "arm64":
			p.Variant = "v8"
		}
	}
	return p
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func defaultString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// unwrapPathError drops the path of an *os.PathError (here a temporary file's)
// and keeps its cause, e.g. "no such file or directory".
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
