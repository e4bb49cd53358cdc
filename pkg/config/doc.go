// Package config owns runphi.toml: the configuration schema (Config), its
// defaults, where the file is found (a named path, an inline body, the file
// named by $RUNPHI_CONFIG, /etc/runphi/runphi.toml) and its validation.
//
// It is a leaf: the shim (which resolves the configuration of each task)
// and hostview with cmd/runphi (which show and check it) both import it, so
// the CLI accepts exactly the files the shim accepts. It knows nothing of
// containerd: its errors are plain and name the file and the key; the shim
// wraps them in errdefs.ErrInvalidArgument where they cross into containerd.
// docs/configuration.md describes each key.
package config
