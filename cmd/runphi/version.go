package main

import (
	"fmt"
	"runtime"
)

func init() {
	register(&command{
		name:    "version",
		summary: "print the version",
		usage:   "version [--json]",
		run:     runVersion,
	})
}

// versionInfo is `runphi version --json`.
type versionInfo struct {
	Version string `json:"version"`
	Go      string `json:"go"`
	// Platform is GOOS/GOARCH of this binary.
	Platform string `json:"platform"`
}

func runVersion(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "version", commands["version"].usage)
	asJSON := fs.Bool("json", false, "print a JSON object {version, go, platform}")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	if fs.NArg() != 0 {
		return usagef("version takes no arguments")
	}
	info := versionInfo{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if *asJSON {
		return emitJSON(env, info)
	}
	fmt.Fprintf(env.stdout, "runphi %s\n", version)
	return nil
}
