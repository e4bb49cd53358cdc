package shim

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestTaskAPIsWireIdentical checks the assumption the v2 bridge rests on:
// both task services have the same methods, and every message has the same
// field numbers, kinds and cardinalities.
func TestTaskAPIsWireIdentical(t *testing.T) {
	v2 := taskv2.File_runtime_task_v2_shim_proto.Services().ByName("Task")
	v3 := taskv3.File_runtime_task_v3_shim_proto.Services().ByName("Task")
	if v2 == nil || v3 == nil {
		t.Fatal("task service descriptors not found")
	}
	if v2.Methods().Len() != v3.Methods().Len() {
		t.Fatalf("v2 has %d methods, v3 %d", v2.Methods().Len(), v3.Methods().Len())
	}
	if got := len(taskServiceDesc(&service{}).Methods); got != v3.Methods().Len() {
		t.Fatalf("the registered service has %d methods, the API %d", got, v3.Methods().Len())
	}
	for i := 0; i < v3.Methods().Len(); i++ {
		m3 := v3.Methods().Get(i)
		m2 := v2.Methods().ByName(m3.Name())
		if m2 == nil {
			t.Errorf("v2 lacks %s", m3.Name())
			continue
		}
		if _, ok := taskServiceDesc(&service{}).Methods[string(m3.Name())]; !ok {
			t.Errorf("%s is not registered", m3.Name())
		}
		sameShape(t, string(m3.Name())+" input", m2.Input(), m3.Input(), map[string]bool{})
		sameShape(t, string(m3.Name())+" output", m2.Output(), m3.Output(), map[string]bool{})
	}
}

func sameShape(t *testing.T, where string, a, b protoreflect.MessageDescriptor, seen map[string]bool) {
	t.Helper()
	if seen[string(b.FullName())] {
		return
	}
	seen[string(b.FullName())] = true
	if a.Fields().Len() != b.Fields().Len() {
		t.Errorf("%s: %s has %d fields, %s has %d", where, a.FullName(), a.Fields().Len(), b.FullName(), b.Fields().Len())
		return
	}
	for i := 0; i < b.Fields().Len(); i++ {
		fb := b.Fields().Get(i)
		fa := a.Fields().ByNumber(fb.Number())
		if fa == nil || fa.Kind() != fb.Kind() || fa.Cardinality() != fb.Cardinality() {
			t.Errorf("%s: field %d (%s) differs between %s and %s", where, fb.Number(), fb.Name(), a.FullName(), b.FullName())
			continue
		}
		if fb.Message() != nil {
			sameShape(t, where+"."+string(fb.Name()), fa.Message(), fb.Message(), seen)
		}
	}
}

// TestRegisterServesBothAPIs calls one service through a v2 and a v3
// client over a real ttrpc connection.
func TestRegisterServesBothAPIs(t *testing.T) {
	svc := newService(context.Background(), serviceOptions{Namespace: "default", Pid: 4242, Version: "test", Publisher: &recorder{}})
	server, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	registerTaskService(server, svc)
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	go server.Serve(context.Background(), l)
	t.Cleanup(func() { server.Close() })

	dial := func() *ttrpc.Client {
		conn, err := net.Dial("unix", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := ttrpc.NewClient(conn)
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx := context.Background()

	r2, err := taskv2.NewTTRPCTaskClient(dial()).Connect(ctx, &taskv2.ConnectRequest{ID: "t1"})
	if err != nil {
		t.Fatalf("v2 Connect: %v", err)
	}
	r3, err := taskv3.NewTTRPCTaskClient(dial()).Connect(ctx, &taskv3.ConnectRequest{ID: "t1"})
	if err != nil {
		t.Fatalf("v3 Connect: %v", err)
	}
	for name, got := range map[string][2]any{
		"shim pid": {r2.GetShimPid(), r3.GetShimPid()},
		"version":  {r2.GetVersion(), r3.GetVersion()},
	} {
		if got[0] != got[1] {
			t.Errorf("%s: v2 %v, v3 %v", name, got[0], got[1])
		}
	}
	if r2.GetShimPid() != 4242 || r2.GetVersion() != "test" || r2.GetTaskPid() != 0 {
		t.Errorf("v2 Connect = %v, want shim pid 4242, version test, no task pid", r2)
	}
}
