//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/runphi/runphi/pkg/ociimage"
)

// testImage is an image the suite builds and imports.
type testImage struct {
	ref    string                          // normalised name, as ctr lists it
	files  map[string]string               // rootfs content; nil with no rootfs: built from examples/demo with the runphi CLI
	rootfs func(t testing.TB, root string) // fills the rootfs before files are written (a busybox tree)
	cmd    []string                        // the image's Cmd; /boot/boot.bin when empty
}

// Inmate scripts of the test images (the simulator's #!runphi-sim language).
const (
	foreverScript = "#!runphi-sim\non-shutdown approve\nprint forever inmate up\nloop 1000000\nsleep 1s\nend\n"
	failScript    = "#!runphi-sim\nprint about to fail\nfail\n"
)

var (
	// demoImage is examples/demo, built with `runphi image build` as
	// `make demo` does.
	demoImage = testImage{ref: "docker.io/runphi/demo:latest"}
	// foreverImage's inmate runs until it is stopped, and approves a
	// graceful shutdown request.
	foreverImage = testImage{ref: "docker.io/runphi/e2e-forever:latest", files: map[string]string{
		"boot/config.json": `{"os_var":"zephyr","inmate":"/boot/boot.bin"}`,
		"boot/boot.bin":    foreverScript,
	}}
	// failImage's inmate fails (cell state "failed").
	failImage = testImage{ref: "docker.io/runphi/e2e-fail:latest", files: map[string]string{
		"boot/config.json": `{"os_var":"zephyr","inmate":"/boot/boot.bin"}`,
		"boot/boot.bin":    failScript,
	}}
	// malformedImage has a boot description that is not JSON: a trailing
	// comma at line 1, column 44.
	malformedImage = testImage{ref: "docker.io/runphi/e2e-malformed:latest", files: map[string]string{
		"boot/config.json": `{"os_var":"zephyr","inmate":"/boot/boot.bin",}`,
		"boot/boot.bin":    foreverScript,
	}}
)

var (
	imagesDir  string // suite temp dir holding the tarballs; set by TestMain
	buildMu    sync.Mutex
	built      = map[string]string{} // ref → tarball
	importedMu sync.Mutex
	imported   = map[string]bool{} // daemon name + ref
)

// imageTar builds img once per suite and returns the tarball's path.
func imageTar(t testing.TB, img testImage) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[img.ref]; ok {
		return p
	}
	name := strings.NewReplacer("/", "_", ":", "_").Replace(img.ref)
	out := filepath.Join(imagesDir, name+".tar")
	if img.files == nil && img.rootfs == nil {
		cmd := exec.Command(filepath.Join(binDir(), "runphi"), "image", "build", "../../examples/demo", "-o", out, "--ref", img.ref)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("runphi image build examples/demo: %v\n%s", err, b)
		}
	} else {
		root := filepath.Join(imagesDir, name+".rootfs")
		if img.rootfs != nil {
			img.rootfs(t, root)
		}
		for p, data := range img.files {
			full := filepath.Join(root, p)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(full, []byte(data), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cmd := img.cmd
		if len(cmd) == 0 {
			cmd = []string{"/boot/boot.bin"}
		}
		if _, err := ociimage.BuildFile(out, root, ociimage.Options{Ref: img.ref, Cmd: cmd, Env: []string{"PATH=/bin"}}); err != nil {
			t.Fatal(err)
		}
	}
	built[img.ref] = out
	return out
}

// ensureImage imports img into the daemon once.
func (d *daemon) ensureImage(t testing.TB, img testImage) string {
	t.Helper()
	tarball := imageTar(t, img)
	importedMu.Lock()
	defer importedMu.Unlock()
	// By socket, not name: a bare daemon started for one test has the
	// same name as the shared daemon of its spec.
	key := d.sock + " " + img.ref
	if !imported[key] {
		d.mustCtr(t, "images", "import", tarball)
		imported[key] = true
	}
	return img.ref
}
