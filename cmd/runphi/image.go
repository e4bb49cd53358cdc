package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/runphi/runphi/pkg/jailhouse/sim"
	"github.com/runphi/runphi/pkg/ociimage"
	"github.com/runphi/runphi/pkg/partition"
)

func init() {
	register(&command{
		name:    "image",
		summary: "build partitioned-container images without a registry",
		usage:   "image build DIR -o OUT.tar --ref NAME[:TAG] [--arch ARCH] [--cmd CMD] [--no-validate]",
		run:     runImage,
	})
}

func runImage(env *cmdEnv, args []string) error {
	if len(args) == 0 {
		return usagef("missing subcommand (build)")
	}
	switch args[0] {
	case "build":
		return runImageBuild(env, args[1:])
	case "-h", "-help", "--help":
		fmt.Fprintf(env.stderr, "usage: runphi %s\n", commands["image"].usage)
		return flag.ErrHelp
	default:
		return usagef("unknown subcommand %q (want build)", args[0])
	}
}

const imageBuildSynopsis = "image build DIR -o OUT.tar --ref NAME[:TAG] [--arch ARCH] [--cmd CMD] [--no-validate]"

func runImageBuild(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "image build", imageBuildSynopsis)
	out := fs.String("o", "", "write the OCI image-layout tarball to this `file` (required)")
	ref := fs.String("ref", "", "image `name`[:tag]; normalised like docker (demo → docker.io/library/demo:latest) (required)")
	arch := fs.String("arch", "", "image architecture as a GOARCH `value` (default: this host's, which ctr's default platform accepts)")
	cmdLine := fs.String("cmd", "", "image command, as a JSON array or space-separated `words` (default: the boot description's inmate, else none)")
	noValidate := fs.Bool("no-validate", false, "skip checking /boot/config.json and its payload (to build broken images for tests)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one directory, got %d arguments", len(pos))
	}
	if *out == "" || *ref == "" {
		return usagef("-o and --ref are required")
	}
	dir := pos[0]
	if _, err := ociimage.ParseReference(*ref); err != nil {
		return usagef("%v", err)
	}

	opts := ociimage.Options{Ref: *ref, Arch: *arch}
	if *cmdLine != "" {
		if opts.Cmd, err = splitCommand(*cmdLine); err != nil {
			return usagef("--cmd: %v", err)
		}
	}
	inmate, err := checkBootDescription(dir, !*noValidate)
	if err != nil {
		return err
	}
	if opts.Cmd == nil && inmate != "" {
		// containerd needs a non-empty process.args; the inmate path is
		// what the partition runs, so it is the honest command.
		opts.Cmd = []string{inmate}
	}

	img, err := ociimage.BuildFile(*out, dir, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s %s %s (%s, %d entries)\n", *out, img.Ref, img.Manifest.Digest, img.Platform.OS+"/"+img.Platform.Architecture, img.Entries)
	return nil
}

// checkBootDescription, when validate is set, reads the image's boot
// description with the shim's own parser (partition.ReadBootDescription,
// which also checks starting_vaddress as Create does) and checks its
// payload with the shim's own board-free checks (partition.CheckPayload:
// ELF headers, kernel magic, a raw payload not empty) and a simulator
// script with the simulator's own parser, so an image the shim would
// refuse at Create time on any board, or whose script inmate would crash
// at start, fails at build time, naming the file and the key. It returns
// the inmate path, "" when dir has no boot description or validation is
// off.
func checkBootDescription(dir string, validate bool) (string, error) {
	if !validate {
		return "", nil
	}
	desc, err := partition.ReadBootDescription(dir)
	if errors.Is(err, partition.ErrNoBootDescription) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	if err := partition.CheckPayload(dir, desc); err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	if err := checkSimScript(dir, desc); err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	if desc.IsLinux() {
		// A Linux cell boots its kernel, which is no path to run.
		return desc.Kernel, nil
	}
	return desc.Inmate, nil
}

// checkSimScript parses the raw inmate of desc, if it is a simulator
// script ("#!runphi-sim"), with the simulator's parser (sim.CheckScript):
// the shim cannot, since it is handed a driver and does not know it is the
// simulator, and a bad script otherwise only shows as an inmate exiting
// 255 at `ctr run`. The file is read through an os.Root, as the shim reads
// it, so a symlink cannot leave dir.
func checkSimScript(dir string, desc *partition.BootDescription) error {
	if desc.IsLinux() || desc.RPUReq {
		return nil
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	data, err := root.ReadFile(strings.TrimPrefix(path.Clean(desc.Inmate), "/"))
	if err != nil {
		return err
	}
	if err := sim.CheckScript(data); err != nil {
		return &partition.BootDescriptionError{File: desc.File, Key: "inmate", Err: fmt.Errorf("payload %s: %w", desc.Inmate, err)}
	}
	return nil
}
