package sim

// Rendering of the simulated /sys/devices/jailhouse (jailhouse-abi §4). The
// tree is a pure function of the host state; after every change the files
// that differ are replaced atomically and the ones that no longer exist are
// removed, so readers (jailhouse.ReadCells and friends, or a human with
// cat) see the driver's exact texts.

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/runphi/runphi/pkg/jailhouse"
)

type sysfsFile struct {
	data []byte
	mode fs.FileMode
}

// coreImage stands in for the hypervisor image the driver exposes as the
// binary "core" file: its header signature and zeros.
var coreImage = append([]byte("JAILHOUS"), make([]byte, 4096-8)...)

// sysfsTree computes every file of the tree, by path relative to the root,
// and every directory.
func sysfsTree(s *hostState) (map[string]sysfsFile, map[string]bool) {
	files := map[string]sysfsFile{}
	dirs := map[string]bool{".": true, "cells": true}
	text := func(path, content string) {
		files[path] = sysfsFile{data: []byte(content), mode: 0o444}
	}
	if s.Enabled {
		text("enabled", "1\n")
	} else {
		text("enabled", "0\n")
	}
	// console shows the ring from head 0: at most its last 2048 bytes, no
	// "missed" line; empty while disabled. A read of the real file fails
	// with EPERM when the system lacks the virtual console flag; a plain
	// file cannot, so it is empty then.
	var console []byte
	if s.Enabled && s.ConsoleAvailable {
		console, _ = s.Ring.dumpDelta(0)
	}
	files["console"] = sysfsFile{data: console, mode: 0o444}
	var p pools
	if s.Enabled {
		p = s.System.Pool
	}
	text("mem_pool_size", fmt.Sprintf("%d\n", p.MemSize))
	text("mem_pool_used", fmt.Sprintf("%d\n", p.MemUsed))
	text("remap_pool_size", fmt.Sprintf("%d\n", p.RemapSize))
	text("remap_pool_used", fmt.Sprintf("%d\n", p.RemapUsed))
	if s.CoreWritten {
		files["core"] = sysfsFile{data: coreImage, mode: 0o400}
	}
	if !s.Enabled {
		return files, dirs
	}
	names := statNames(s.Arch)
	cell := func(id int, name string, state jailhouse.CellState, cpus, failed []int) {
		dir := filepath.Join("cells", strconv.Itoa(id))
		dirs[dir] = true
		text(filepath.Join(dir, "name"), name+"\n")
		text(filepath.Join(dir, "state"), state.String()+"\n")
		text(filepath.Join(dir, "cpus_assigned"), jailhouse.FormatCPUMask(cpus, s.NrCPUIDs)+"\n")
		text(filepath.Join(dir, "cpus_assigned_list"), jailhouse.FormatCPUList(cpus)+"\n")
		text(filepath.Join(dir, "cpus_failed"), jailhouse.FormatCPUMask(failed, s.NrCPUIDs)+"\n")
		text(filepath.Join(dir, "cpus_failed_list"), jailhouse.FormatCPUList(failed)+"\n")
		stats := filepath.Join(dir, "statistics")
		dirs[stats] = true
		for _, n := range names {
			var sum uint64
			for _, cpu := range cpus {
				sum += uint64(statValue(s, cpu, n.code))
			}
			text(filepath.Join(stats, n.name), fmt.Sprintf("%d\n", sum))
		}
		for _, cpu := range cpus {
			cpuDir := filepath.Join(stats, fmt.Sprintf("cpu%d", cpu))
			dirs[cpuDir] = true
			for _, n := range names {
				text(filepath.Join(cpuDir, n.name), fmt.Sprintf("%d\n", statValue(s, cpu, n.code)))
			}
		}
	}
	cell(0, s.System.RootName, jailhouse.StateRunning, s.System.RootCPUs, nil)
	for _, c := range s.Cells {
		cell(c.ID, c.Name, c.State, c.CPUs, c.Failed)
	}
	return files, dirs
}

// statValue is what CPU_GET_INFO returns for a statistic: the counter
// masked to 31 bits, so never negative.
func statValue(s *hostState, cpu, code int) int32 {
	st := s.Stats[cpu]
	if st == nil {
		return 0
	}
	return int32(st[code] & 0x7fffffff)
}

// render brings the sysfs tree on disk in line with s, comparing with what
// is on disk. Open uses it, because the tree may be missing or stale.
func (d *Driver) render(s *hostState) error {
	files, dirs := sysfsTree(s)
	root := d.sysfs
	// Remove what must not exist, deepest first.
	var stale []string
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if e.IsDir() {
			if !dirs[rel] {
				stale = append(stale, path)
				return filepath.SkipDir
			}
			return nil
		}
		if _, ok := files[rel]; !ok {
			stale = append(stale, path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("render sysfs: %w", err)
	}
	for _, p := range stale {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("render sysfs: %w", err)
		}
	}
	if err := d.mkdirs(dirs); err != nil {
		return err
	}
	for rel, f := range files {
		path := filepath.Join(root, rel)
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == f.mode {
			if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, f.data) {
				continue
			}
		}
		if err := d.writeFileAtomic(path, f.data, f.mode); err != nil {
			return fmt.Errorf("render sysfs: %w", err)
		}
	}
	return nil
}

// treeRendered is Open's cheap look at whether the tree was rendered at
// all: the root's enabled file exists, and while enabled, every cell's
// state file (root cell included). That the files hold what the state
// says is vouched for by the generation file (gen.go), not checked here.
func (d *Driver) treeRendered(s *hostState) bool {
	paths := []string{"enabled"}
	if s.Enabled {
		paths = append(paths, filepath.Join("cells", "0", "state"))
		for _, c := range s.Cells {
			paths = append(paths, filepath.Join("cells", strconv.Itoa(c.ID), "state"))
		}
	}
	for _, p := range paths {
		if _, err := os.Lstat(filepath.Join(d.sysfs, p)); err != nil {
			return false
		}
	}
	return true
}

// renderDelta changes on disk what differs between the trees of prev, the
// state the tree was last rendered from, and s. Transactions use it: it
// touches only the files that change.
func (d *Driver) renderDelta(prev, s *hostState) error {
	oldFiles, oldDirs := sysfsTree(prev)
	files, dirs := sysfsTree(s)
	root := d.sysfs
	var goneDirs []string
	for dir := range oldDirs {
		if !dirs[dir] {
			goneDirs = append(goneDirs, dir)
		}
	}
	// Shallowest first; RemoveAll takes what is below.
	slices.SortFunc(goneDirs, func(a, b string) int { return strings.Count(a, "/") - strings.Count(b, "/") })
	for _, dir := range goneDirs {
		if err := os.RemoveAll(filepath.Join(root, dir)); err != nil {
			return fmt.Errorf("render sysfs: %w", err)
		}
	}
	for rel := range oldFiles {
		if _, ok := files[rel]; !ok {
			if err := os.Remove(filepath.Join(root, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("render sysfs: %w", err)
			}
		}
	}
	if err := d.mkdirs(dirs); err != nil {
		return err
	}
	for rel, f := range files {
		if old, ok := oldFiles[rel]; ok && old.mode == f.mode && bytes.Equal(old.data, f.data) {
			continue
		}
		if err := d.writeFileAtomic(filepath.Join(root, rel), f.data, f.mode); err != nil {
			return fmt.Errorf("render sysfs: %w", err)
		}
	}
	return nil
}

func (d *Driver) mkdirs(dirs map[string]bool) error {
	list := make([]string, 0, len(dirs))
	for dir := range dirs {
		list = append(list, dir)
	}
	slices.SortFunc(list, func(a, b string) int { return strings.Count(a, "/") - strings.Count(b, "/") })
	for _, dir := range list {
		if err := os.MkdirAll(filepath.Join(d.sysfs, dir), 0o755); err != nil {
			return fmt.Errorf("render sysfs: %w", err)
		}
	}
	return nil
}
