//go:build bench

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/runphi/runphi/pkg/ociimage"
)

// image is one image the bench builds and imports.
type image struct {
	ref    string
	files  map[string]string // rootfs content (image path → data)
	busy   bool              // a busybox rootfs under files
	cmd    []string
	docker bool // also import into CRI's namespace
}

// floodLine is what the console inmates print: 1000 bytes with the newline
// (test/e2e/console_test.go's TestConsoleThroughputLossless).
var floodLine = strings.Repeat("x", 999)

// floodLines is how many lines a throughput run prints: 100 MB.
const floodLines = 100000

const bootDescription = `{"os_var":"zephyr","inmate":"/boot/boot.bin"}`

var (
	// partitionImage's inmate prints one line and runs until it is stopped.
	partitionImage = image{ref: "docker.io/runphi/bench-partition:latest", docker: true, files: map[string]string{
		"boot/config.json": bootDescription,
		"boot/boot.bin":    "#!runphi-sim\nprint up\nloop forever\nsleep 1h\nend\n",
	}}
	// floodImage's inmate prints 100 MB as fast as it can, then exits.
	floodImage = image{ref: "docker.io/runphi/bench-flood:latest", files: map[string]string{
		"boot/config.json": bootDescription,
		"boot/boot.bin":    fmt.Sprintf("#!runphi-sim\nloop %d\nprint %s\nend\nexit\n", floodLines, floodLine),
	}}
	// floodForeverImage's inmate prints without end.
	floodForeverImage = image{ref: "docker.io/runphi/bench-flood-forever:latest", files: map[string]string{
		"boot/config.json": bootDescription,
		"boot/boot.bin":    "#!runphi-sim\nloop forever\nprint " + floodLine + "\nend\n",
	}}
	// busyboxImage is Debian's busybox-static with every applet linked and
	// no boot description: what runc runs.
	busyboxImage = image{ref: "docker.io/runphi/bench-busybox:latest", busy: true, docker: true,
		cmd: []string{"/bin/sleep", "2147483647"}}
	// pauseImage is the CRI sandbox image.
	pauseImage = image{ref: "docker.io/runphi/bench-pause:latest", busy: true, docker: true,
		cmd: []string{"/bin/busybox", "sleep", "2147483647"}}
)

// importImages builds every image into dir and imports it.
func (d *daemon) importImages(dir string) error {
	for _, img := range []image{partitionImage, floodImage, floodForeverImage, busyboxImage, pauseImage} {
		name := strings.NewReplacer("/", "_", ":", "_").Replace(img.ref)
		root := filepath.Join(dir, name+".rootfs")
		if img.busy {
			if err := busyboxRootfs(root); err != nil {
				return err
			}
		}
		for p, data := range img.files {
			full := filepath.Join(root, p)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(full, []byte(data), 0o755); err != nil {
				return err
			}
		}
		cmd := img.cmd
		if len(cmd) == 0 {
			cmd = []string{"/boot/boot.bin"}
		}
		tarball := filepath.Join(dir, name+".tar")
		if _, err := ociimage.BuildFile(tarball, root, ociimage.Options{Ref: img.ref, Cmd: cmd, Env: []string{"PATH=/bin"}}); err != nil {
			return fmt.Errorf("build %s: %w", img.ref, err)
		}
		if _, err := d.ctr(60*time.Second, "images", "import", tarball); err != nil {
			return err
		}
		if img.docker {
			if _, err := d.ctrNS("k8s.io", 60*time.Second, "images", "import", tarball); err != nil {
				return err
			}
		}
	}
	return nil
}

// busyboxRootfs writes a root filesystem around /bin/busybox (Debian's
// busybox-static, which `make deps` installs).
func busyboxRootfs(root string) error {
	for _, dir := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("%w: install busybox-static (make deps)", err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\n"), 0o644)
}
