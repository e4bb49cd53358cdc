package shim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRoute(t *testing.T) {
	cases := []struct {
		name        string
		annotations map[string]string
		files       []string // created under the rootfs
		want        target
		wantErr     error
		errText     string
	}{
		{"boot/config.json makes a partition", nil, []string{"boot/config.json"}, targetPartition, nil, ""},
		{"boot/configuration.json makes a partition", nil, []string{"boot/configuration.json"}, targetPartition, nil, ""},
		{"annotation runphi makes a partition without a boot description",
			map[string]string{RuntimeAnnotation: "runphi"}, nil, targetPartition, nil, ""},
		{"annotation runc makes an ordinary container even with a boot description",
			map[string]string{RuntimeAnnotation: "runc"}, []string{"boot/config.json"}, targetRunc, nil, ""},
		{"unknown annotation value is invalid",
			map[string]string{RuntimeAnnotation: "xen"}, nil, 0, errdefs.ErrInvalidArgument, "xen"},
		{"the CRI sandbox (pause) container runs on runc",
			map[string]string{criContainerType: "sandbox", criSandboxID: "p1"}, []string{"boot/config.json"}, targetRunc, nil, ""},
		{"a CRI container with a boot description is a partition",
			map[string]string{criContainerType: "container", criSandboxID: "p1"}, []string{"boot/config.json"}, targetPartition, nil, ""},
		{"annotation runphi wins over the sandbox type",
			map[string]string{RuntimeAnnotation: "runphi", criContainerType: "sandbox"}, nil, targetPartition, nil, ""},
		{"an image without a boot description runs on runc", nil, []string{"bin/sh"}, targetRunc, nil, ""},
		{"a directory where the boot description should be is an error, not runc",
			nil, []string{"boot/config.json/x"}, 0, errdefs.ErrInvalidArgument, "config.json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rootfs := t.TempDir()
			for _, f := range tc.files {
				p := filepath.Join(rootfs, f)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(`{"os_var":"zephyr"}`), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := route(&specs.Spec{Annotations: tc.annotations}, rootfs)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %v, want %v naming %q", err, tc.wantErr, tc.errText)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("route = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
