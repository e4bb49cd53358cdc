package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootstrap "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
)

func TestSocketDir(t *testing.T) {
	cases := []struct {
		name   string
		params *bootstrap.BootstrapParams
		grpc   string
		want   string
	}{
		{"legacy daemon: s beside containerd's socket", nil, "/run/containerd/containerd.sock", "/run/containerd/s"},
		{"private daemon keeps its sockets private", nil, "/tmp/rs1/containerd.sock", "/tmp/rs1/s"},
		{"unix:// prefix is ignored", nil, "unix:///tmp/rs1/containerd.sock", "/tmp/rs1/s"},
		{"2.3+ socket_dir wins", &bootstrap.BootstrapParams{SocketDir: proto.String("/run/containerd/s")},
			"/tmp/rs1/containerd.sock", "/run/containerd/s"},
		{"2.3+ without socket_dir", &bootstrap.BootstrapParams{}, "/tmp/rs1/containerd.sock", "/tmp/rs1/s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := socketDir(tc.params, tc.grpc); got != tc.want {
				t.Fatalf("socketDir = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSocketPath(t *testing.T) {
	t.Run("hash of address, namespace and group", func(t *testing.T) {
		got, err := socketPath("/run/containerd/s", "/run/containerd/containerd.sock", "default", "t1")
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte("/run/containerd/containerd.sock/default/t1"))
		if want := "/run/containerd/s/" + hex.EncodeToString(sum[:]); got != want {
			t.Fatalf("socketPath = %q, want %q", got, want)
		}
	})
	t.Run("length does not depend on the ids", func(t *testing.T) {
		a, _ := socketPath("/s", "/a.sock", "default", "t")
		b, _ := socketPath("/s", "/a.sock", strings.Repeat("n", 200), strings.Repeat("x", 500))
		if len(a) != len(b) {
			t.Fatalf("lengths differ: %d and %d", len(a), len(b))
		}
	})
	t.Run("namespaces and ids give distinct sockets", func(t *testing.T) {
		a, _ := socketPath("/s", "/a.sock", "default", "t1")
		b, _ := socketPath("/s", "/a.sock", "k8s.io", "t1")
		c, _ := socketPath("/s", "/a.sock", "default", "t2")
		if a == b || a == c {
			t.Fatalf("collision: %s %s %s", a, b, c)
		}
	})
	t.Run("longest accepted directory", func(t *testing.T) {
		dir := "/" + strings.Repeat("d", maxSocketPath-1-1-64) // "/" + dir + "/" + 64 hex
		p, err := socketPath(dir, "/a.sock", "default", "t1")
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != maxSocketPath {
			t.Fatalf("len = %d, want %d", len(p), maxSocketPath)
		}
	})
	t.Run("too long a directory is refused with the path in the error", func(t *testing.T) {
		dir := "/" + strings.Repeat("d", maxSocketPath-64-1)
		_, err := socketPath(dir, "/a.sock", "default", "t1")
		if err == nil || !strings.Contains(err.Error(), dir) {
			t.Fatalf("err = %v, want an error naming %s", err, dir)
		}
	})
}

// serveShim serves a task service on l, as the long-lived server does.
func serveShim(t *testing.T, l net.Listener) *service {
	t.Helper()
	svc := newService(context.Background(), serviceOptions{Namespace: "default", Pid: 1, Publisher: &recorder{}})
	server, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	registerTaskService(server, svc)
	go server.Serve(context.Background(), l)
	t.Cleanup(func() { server.Close() })
	return svc
}

func TestListenSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	path := filepath.Join(dir, "sock")

	l, version, err := listenSocket(path)
	if err != nil || version != bootstrapVersion {
		t.Fatalf("listenSocket = %v, %d, %v; want a listener for a version %d server", l, version, err, bootstrapVersion)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600 | os.ModeSocket} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode(), want)
		}
	}
	l.SetUnlinkOnClose(false)
	svc := serveShim(t, l)

	t.Run("a serving shim is reused, with the version it speaks", func(t *testing.T) {
		again, version, err := listenSocket(path)
		if err != nil || again != nil || version != 3 {
			t.Fatalf("listenSocket = %v, %d, %v; want nil, 3, nil", again, version, err)
		}
	})

	t.Run("a shim shutting down is waited for, not reused", func(t *testing.T) {
		if !svc.shutdown() {
			t.Fatal("shutdown with no task refused")
		}
		// The server goes away a little later, as a real one does.
		go func() {
			time.Sleep(300 * time.Millisecond)
			os.Remove(path)
			l.Close()
		}()
		begin := time.Now()
		fresh, _, err := listenSocket(path)
		if err != nil || fresh == nil {
			t.Fatalf("listenSocket = %v, %v; want a new listener", fresh, err)
		}
		defer fresh.Close()
		if time.Since(begin) < 250*time.Millisecond {
			t.Errorf("returned after %v, before the old server left", time.Since(begin))
		}
	})
}

func TestListenSocketReplacesStaleFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // the file stays, nothing listens: a shim that was SIGKILLed
	fresh, _, err := listenSocket(path)
	if err != nil || fresh == nil {
		t.Fatalf("listenSocket = %v, %v; want a listener", fresh, err)
	}
	fresh.Close()
}

// An older shim still serving the group after an upgrade may speak only
// task API v2; a grouped start must announce what it speaks
// (containerd#10888), not what this binary would.
func TestListenSocketAnnouncesAnOlderServersVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	svc := newService(context.Background(), serviceOptions{Namespace: "default", Pid: 1, Publisher: &recorder{}})
	server.RegisterService(taskServiceV2, taskServiceDesc(svc)) // no v3
	go server.Serve(context.Background(), l)
	t.Cleanup(func() { server.Close() })

	again, version, err := listenSocket(path)
	if err != nil || again != nil || version != 2 {
		t.Fatalf("listenSocket = %v, %d, %v; want the running server, version 2", again, version, err)
	}
}
