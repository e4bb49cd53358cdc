package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runphi/runphi/pkg/hostview"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
	"github.com/runphi/runphi/pkg/partition"
)

// doctorHost is a fabricated machine for doctor: a runphi config, a fake
// /proc with one containerd, a bin dir and, for jailhouse, a fake sysfs.
type doctorHost struct {
	dir     string
	opts    doctorOptions
	binDir  string // holds the shim unless removed
	simDir  string
	cfgPath string
}

func newDoctorHost(t *testing.T, runphiConfig string) *doctorHost {
	t.Helper()
	dir := t.TempDir()
	h := &doctorHost{dir: dir, binDir: filepath.Join(dir, "bin"), simDir: filepath.Join(dir, "sim"), cfgPath: filepath.Join(dir, "runphi.toml")}
	writeTestFile(t, h.cfgPath, strings.NewReplacer("$DIR", dir).Replace(runphiConfig))
	shim := filepath.Join(h.binDir, hostview.ShimBinary)
	writeTestFile(t, shim, "#!/bin/sh\n")
	if err := os.Chmod(shim, 0o755); err != nil {
		t.Fatal(err)
	}
	ctdConfig := filepath.Join(dir, "config.toml")
	writeTestFile(t, ctdConfig, "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \""+dir+"/c.sock\"\n")
	proc := filepath.Join(dir, "proc")
	h.addContainerd(t, proc, 100, ctdConfig, "PATH=/usr/bin:"+h.binDir, "RUNPHI_CONFIG="+h.cfgPath)
	h.opts = doctorOptions{
		address:           dir + "/c.sock",
		procRoot:          proc,
		sysfsRoot:         filepath.Join(dir, "sys/devices/jailhouse"),
		devicePath:        filepath.Join(dir, "dev/jailhouse"),
		iomemPath:         filepath.Join(dir, "iomem"),
		defaultConfigPath: filepath.Join(dir, "etc-runphi.toml"),
		getenv:            func(string) string { return "" },
		shimVersion: func(path string) (string, error) {
			return "containerd-shim-runphi-v2 (io.containerd.runphi.v2):\n  Version:  " + version + "\n", nil
		},
		containerdVersion: func(string) (hostview.Version, error) {
			return hostview.ParseContainerdVersion("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1")
		},
	}
	return h
}

func (h *doctorHost) addContainerd(t *testing.T, proc string, pid int, config string, env ...string) {
	t.Helper()
	pdir := filepath.Join(proc, fmt.Sprint(pid))
	writeTestFile(t, filepath.Join(pdir, "cmdline"), "/usr/bin/containerd\x00--config\x00"+config+"\x00")
	writeTestFile(t, filepath.Join(pdir, "environ"), strings.Join(env, "\x00")+"\x00")
	if err := os.Symlink("/usr/bin/containerd", filepath.Join(pdir, "exe")); err != nil {
		t.Fatal(err)
	}
}

// enableSim enables the simulator in h.simDir with a board's system config.
func (h *doctorHost) enableSim(t *testing.T, board string) {
	t.Helper()
	b, err := partition.LoadBoard(board)
	if err != nil {
		t.Fatal(err)
	}
	d, err := sim.Open(h.simDir, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	blob, err := b.SystemConfig().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Enable(blob); err != nil {
		t.Fatal(err)
	}
}

const simConfig = "backend = \"sim\"\nstate_dir = \"$DIR/state\"\nsim_dir = \"$DIR/sim\"\nboard = \"qemu-arm64\"\n"

// statusOf returns the status of every check with that name, joined.
func statusOf(rep doctorReport, name string) (string, doctorCheck) {
	var (
		st   []string
		last doctorCheck
	)
	for _, c := range rep.Checks {
		if c.Name == name {
			st = append(st, c.Status)
			if c.Status != statusOK {
				last = c
			}
		}
	}
	return strings.Join(st, ","), last
}

func TestDoctorPassesOnAHealthySimulatorHost(t *testing.T) {
	h := newDoctorHost(t, simConfig)
	h.enableSim(t, "qemu-arm64")
	rep := checkHost(h.opts)
	if !rep.OK || rep.Warnings != 0 {
		t.Fatalf("report not clean: %+v", rep.Checks)
	}
	for _, name := range []string{"config", "board", "backend", "simulator", "hypervisor", "state", "containerd", "shim", "cri"} {
		if st, _ := statusOf(rep, name); st != statusOK {
			t.Errorf("check %s: %q, want ok", name, st)
		}
	}
	if rep.Config != h.cfgPath {
		t.Errorf("config %q, want containerd's RUNPHI_CONFIG %q", rep.Config, h.cfgPath)
	}
}

// --containerd-config names the daemon to check: one started with another
// configuration is never checked in its place (the demo's hint names the
// config of a daemon that has stopped while another one runs).
func TestDoctorChecksTheDaemonOfTheNamedContainerdConfig(t *testing.T) {
	h := newDoctorHost(t, simConfig)
	h.enableSim(t, "qemu-arm64")
	stopped := filepath.Join(h.dir, "stopped-config.toml")
	writeTestFile(t, stopped, "version = 2\n[grpc]\n  address = \""+h.dir+"/stopped.sock\"\n")
	h.opts.address = ""
	h.opts.containerdConfig = stopped
	rep := checkHost(h.opts)
	st, c := statusOf(rep, "containerd")
	if st == statusOK || strings.Contains(c.Detail, "pid 100") {
		t.Errorf("containerd check %q %q: want the daemon of pid 100 (another config) left unchecked", st, c.Detail)
	}
	// The daemon started with the named file is the one checked.
	h.opts.containerdConfig = filepath.Join(h.dir, "config.toml")
	if st, c := statusOf(checkHost(h.opts), "containerd"); st != statusOK {
		t.Errorf("containerd check with the running daemon's own config: %q %+v, want ok", st, c)
	}
}

func TestDoctorNamesEachProblemAndItsFix(t *testing.T) {
	otherBoard := strings.Replace(readBuiltinBoard(t), "[system.root_cell]\nname = \"qemu-arm64\"", "[system.root_cell]\nname = \"other-root\"", 1)
	tests := []struct {
		name    string
		config  string
		setup   func(t *testing.T, h *doctorHost)
		check   string
		status  string
		detail  string // substring
		fix     string // substring
		wantErr bool   // a fail, so doctor exits 1
	}{
		{name: "simulator not selected and no jailhouse", config: "state_dir = \"$DIR/state\"\n",
			check: "backend", status: statusFail, detail: "dev/jailhouse does not exist", fix: `set backend = "sim" in`, wantErr: true},
		{name: "shim missing from containerd's PATH", config: simConfig,
			setup: func(t *testing.T, h *doctorHost) { os.Remove(filepath.Join(h.binDir, hostview.ShimBinary)) },
			check: "shim", status: statusFail, detail: "cannot find containerd-shim-runphi-v2", fix: "make install PREFIX=/usr/local", wantErr: true},
		{name: "unknown board profile", config: strings.Replace(simConfig, `board = "qemu-arm64"`, `board = "rpi9"`, 1),
			check: "board", status: statusFail, detail: `board "rpi9"`, fix: "to a built-in profile (", wantErr: true},
		{name: "board does not match the running hypervisor", config: strings.Replace(simConfig, `board = "qemu-arm64"`, `board = "$DIR/other.toml"`, 1),
			setup: func(t *testing.T, h *doctorHost) {
				writeTestFile(t, filepath.Join(h.dir, "other.toml"), otherBoard)
				h.enableSim(t, "qemu-arm64")
			},
			check: "hypervisor", status: statusFail, detail: `root cell "qemu-arm64", the board's is "other-root"`, fix: "remove ", wantErr: true},
		{name: "config file with an unknown key", config: simConfig + "bord = 1\n",
			check: "config", status: statusFail, detail: "unknown key bord", fix: "docs/configuration.md", wantErr: true},
		{name: "containerd too old", config: simConfig,
			setup: func(t *testing.T, h *doctorHost) {
				h.opts.containerdVersion = func(string) (hostview.Version, error) {
					return hostview.Version{Major: 1, Minor: 5, Patch: 9, Text: "1.5.9"}, nil
				}
			},
			check: "containerd", status: statusFail, detail: "needs 1.6 or later", fix: "install containerd", wantErr: true},
		{name: "no containerd at --address", config: simConfig,
			setup: func(t *testing.T, h *doctorHost) { h.opts.address = "/nowhere.sock" },
			check: "containerd", status: statusFail, detail: "no containerd listens on /nowhere.sock", fix: "--address", wantErr: true},
		{name: "shim of another build", config: simConfig,
			setup: func(t *testing.T, h *doctorHost) {
				h.opts.shimVersion = func(string) (string, error) { return "  Version:  v0.0.1-old\n", nil }
				old := version
				version = "v0.0.2"
				t.Cleanup(func() { version = old })
			},
			check: "shim", status: statusWarn, detail: "version v0.0.1-old, but this runphi is v0.0.2", fix: "make install"},
		{name: "CRI runtime whose ConfigPath is missing", config: simConfig,
			setup: func(t *testing.T, h *doctorHost) {
				cfg := filepath.Join(h.dir, "config.toml")
				writeTestFile(t, cfg, "version = 2\n[grpc]\n  address = \""+h.dir+"/c.sock\"\n"+
					"[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runphi]\n  runtime_type = \"io.containerd.runphi.v2\"\n"+
					"  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runphi.options]\n    ConfigPath = \"/etc/runphi/nope.toml\"\n")
			},
			check: "cri", status: statusFail, detail: "nope.toml", fix: "create /etc/runphi/nope.toml", wantErr: true},
		{name: "CRI enabled without a runphi runtime", config: simConfig,
			setup: func(t *testing.T, h *doctorHost) {
				writeTestFile(t, filepath.Join(h.dir, "config.toml"), "version = 3\n[grpc]\n  address = \""+h.dir+"/c.sock\"\n")
			},
			check: "cri", status: statusWarn, detail: "Kubernetes cannot run partitions", fix: "io.containerd.cri.v1.runtime"},
		{name: "jailhouse module not loaded", config: "backend = \"jailhouse\"\nstate_dir = \"$DIR/state\"\n",
			check: "module", status: statusFail, detail: "not loaded", fix: "modprobe jailhouse", wantErr: true},
		{name: "jailhouse loaded but not enabled", config: "backend = \"jailhouse\"\nstate_dir = \"$DIR/state\"\n",
			setup: func(t *testing.T, h *doctorHost) { fakeSysfs(t, h, false) },
			check: "enabled", status: statusFail, detail: "not enabled", fix: "jailhouse enable", wantErr: true},
		{name: "Linux uses the partition pool", config: "backend = \"jailhouse\"\nstate_dir = \"$DIR/state\"\n",
			setup: func(t *testing.T, h *doctorHost) {
				fakeSysfs(t, h, true)
				writeTestFile(t, h.opts.iomemPath, "09000000-09000fff : pl011@9000000\n40000000-bfffffff : System RAM\n")
			},
			check: "reserved-memory", status: statusFail, detail: "overlaps System RAM 0x40000000-0xc0000000", fix: "mem=", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newDoctorHost(t, tc.config)
			if tc.setup != nil {
				tc.setup(t, h)
			}
			rep := checkHost(h.opts)
			st, c := statusOf(rep, tc.check)
			if !strings.Contains(st, tc.status) || !strings.Contains(c.Detail, tc.detail) || !strings.Contains(c.Fix, tc.fix) {
				t.Fatalf("check %s: status %q detail %q fix %q\nwant %s, detail ∋ %q, fix ∋ %q\nall: %+v",
					tc.check, st, c.Detail, c.Fix, tc.status, tc.detail, tc.fix, rep.Checks)
			}
			if rep.OK == tc.wantErr {
				t.Errorf("OK = %v, want %v", rep.OK, !tc.wantErr)
			}
		})
	}
}

// fakeSysfs renders a Jailhouse sysfs tree for the qemu-arm64 root cell and
// a /dev/jailhouse stand-in (a regular file: doctor then reports it).
func fakeSysfs(t *testing.T, h *doctorHost, enabled bool) {
	t.Helper()
	on := "0\n"
	if enabled {
		on = "1\n"
	}
	root := h.opts.sysfsRoot
	writeTestFile(t, filepath.Join(root, "enabled"), on)
	if enabled {
		for f, v := range map[string]string{"name": "qemu-arm64\n", "state": "running\n", "cpus_assigned_list": "0-15\n", "cpus_failed_list": "\n"} {
			writeTestFile(t, filepath.Join(root, "cells/0", f), v)
		}
	} else if err := os.MkdirAll(filepath.Join(root, "cells"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func readBuiltinBoard(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../pkg/partition/boards/qemu-arm64.toml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDoctorExitCodeAndJSON(t *testing.T) {
	skipOnJailhouseHost(t)
	h := newDoctorHost(t, "state_dir = \"/tmp/x\"\n")
	// The command runs on the real /proc; point it at a config that fails
	// whatever the machine has.
	code, out, errOut := runCmd(t, "doctor", "--json", "--config", h.cfgPath, "--address", "/nonexistent.sock")
	if code != 1 || !strings.Contains(errOut, "check(s) failed") {
		t.Fatalf("exit %d, stderr %q; want 1", code, errOut)
	}
	for _, want := range []string{`"ok": false`, `"name": "backend"`, `"status": "fail"`, `"fix":`} {
		if !strings.Contains(out, want) {
			t.Errorf("JSON lacks %s:\n%s", want, out)
		}
	}
}

// doctor's advice for a corrupt ledger must be something that works: moving
// the file away only once no partition holds a cell, and until then the
// commands that stop them or show what to rebuild it from.
func TestDoctorSaysHowToRepairACorruptLedger(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, h *doctorHost, ledger string)
		want   []string // substrings of the fix, besides moving the file away
		noWant string
	}{
		{name: "no partition: move the file away, nothing else", noWant: "ctr"},
		{name: "a partition runs: stop it first, or rebuild the file",
			setup: func(t *testing.T, h *doctorHost, ledger string) { createPartition(t, h.simDir, ledger, "t1") },
			want: []string{`cell "t1" still exists`, "ctr task kill -s SIGKILL", "`ctr task rm` them again",
				"rm " + filepath.Join("STATE", "cells", "t1.cell"), "docs/allocation.md#the-ledger"}},
		{name: "a killed partition waits for its delete: remove it once the file is moved",
			setup: func(t *testing.T, h *doctorHost, ledger string) {
				p := createPartition(t, h.simDir, ledger, "t1")
				// Its kill destroyed the cell; the release failed on the
				// damaged file, and so does its delete.
				if err := p.Destroy(context.Background()); err != nil {
					t.Fatal(err)
				}
				writeTestFile(t, filepath.Join(filepath.Dir(ledger), "cells", "t1.cell"), "kept")
				// containerd keeps the task's bundle under its state dir.
				cstate := filepath.Join(h.dir, "cstate")
				writeTestFile(t, filepath.Join(h.dir, "config.toml"), "version = 2\nstate = \""+cstate+"\"\n"+
					"disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \""+h.dir+"/c.sock\"\n")
				bundle := filepath.Join(cstate, "io.containerd.runtime.v2.task", "default", "t1")
				state, _ := json.Marshal(map[string]any{
					"version": 1, "id": "t1", "namespace": "default", "bundle": bundle, "shim_pid": os.Getpid(),
					"config":    map[string]any{"backend": "sim", "state_dir": filepath.Dir(ledger), "sim_dir": h.simDir, "board": "qemu-arm64"},
					"partition": p.Record(),
				})
				writeTestFile(t, filepath.Join(bundle, "runphi.json"), string(state))
			},
			want: []string{"`ctr task rm` default/t1 again", "rm " + filepath.Join("STATE", "cells", "t1.cell")}, noWant: "SIGKILL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newDoctorHost(t, simConfig)
			h.enableSim(t, "qemu-arm64")
			ledger := filepath.Join(h.dir, "state", "ledger.json")
			if tc.setup != nil {
				tc.setup(t, h, ledger)
			}
			writeTestFile(t, ledger, "{garbage\n")
			st, c := statusOf(checkHost(h.opts), "state")
			if st != statusFail || !strings.Contains(c.Detail, ledger+": invalid JSON at line 1, column 2 (offset 1)") {
				t.Fatalf("state check %q %q, want a failure naming %s and the offset", st, c.Detail, ledger)
			}
			want := append([]string{"mv " + ledger + " " + ledger + ".corrupt"}, tc.want...)
			for _, w := range want {
				w = strings.ReplaceAll(w, "STATE", filepath.Dir(ledger))
				if !strings.Contains(c.Fix, w) {
					t.Errorf("fix lacks %q:\n%s", w, c.Fix)
				}
			}
			if tc.noWant != "" && strings.Contains(c.Fix, tc.noWant) {
				t.Errorf("fix has %q:\n%s", tc.noWant, c.Fix)
			}
		})
	}
}

// createPartition creates a partition named id in the simulator at simDir,
// recorded in the ledger at ledger, as a shim would.
func createPartition(t *testing.T, simDir, ledger, id string) *partition.Partition {
	t.Helper()
	b, err := partition.LoadBoard("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	d, err := sim.Open(simDir, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	writeTestFile(t, filepath.Join(rootfs, "boot/config.json"), `{"os_var":"zephyr"}`)
	writeTestFile(t, filepath.Join(rootfs, "boot/boot.bin"), "#!runphi-sim\nloop 100000\nsleep 1s\nend\n")
	p, err := partition.Create(context.Background(), partition.Options{
		ID: id, Namespace: "default", Rootfs: rootfs, Spec: &specs.Spec{Linux: &specs.Linux{}},
		Board: b, Driver: d, Ledger: partition.OpenLedger(ledger),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A revision 13 system configuration names no architecture; doctor reads
// it as the board's, so it matches the revision 13 board it was made for.
func TestDoctorSystemConfigOfRevision13(t *testing.T) {
	src, err := partition.BuiltinBoardSource("qemu-arm64")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	profile := filepath.Join(dir, "qemu13.toml")
	if err := os.WriteFile(profile, []byte(strings.Replace(string(src), "revision = 14", "revision = 13", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	board, err := partition.LoadBoard(profile)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := board.SystemConfig().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	sysPath := filepath.Join(dir, "qemu13-system.cell")
	if err := os.WriteFile(sysPath, sys, 0o600); err != nil {
		t.Fatal(err)
	}
	d := &doctor{o: doctorOptions{systemConfig: sysPath}}
	d.checkSystemConfig(board)
	if len(d.checks) != 1 || d.checks[0].Status != statusOK {
		t.Errorf("checks %+v, want system-config ok", d.checks)
	}
}
