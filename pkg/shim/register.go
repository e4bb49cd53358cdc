package shim

import (
	"context"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
)

// Service names of the two task APIs. containerd 1.6 to 2.2 (and any daemon
// that got a legacy start answer) call v2; 2.3+ after a version-3 bootstrap
// answer call v3.
const (
	taskServiceV2 = "containerd.task.v2.Task"
	taskServiceV3 = "containerd.task.v3.Task"
)

// registerTaskService registers one implementation under both task API
// names. The v2 and v3 .proto files differ only in their package name, so
// their messages are identical on the wire: the v2 service decodes requests
// straight into the v3 types and the caller decodes the v3 replies as v2.
// TestTaskAPIsWireIdentical keeps that assumption checked against the api
// module in go.mod.
func registerTaskService(srv *ttrpc.Server, svc taskv3.TTRPCTaskService) {
	desc := taskServiceDesc(svc)
	srv.RegisterService(taskServiceV3, desc)
	srv.RegisterService(taskServiceV2, desc)
}

func taskServiceDesc(svc taskv3.TTRPCTaskService) *ttrpc.ServiceDesc {
	return &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"State":      method(svc.State),
		"Create":     method(svc.Create),
		"Start":      method(svc.Start),
		"Delete":     method(svc.Delete),
		"Pids":       method(svc.Pids),
		"Pause":      method(svc.Pause),
		"Resume":     method(svc.Resume),
		"Checkpoint": method(svc.Checkpoint),
		"Kill":       method(svc.Kill),
		"Exec":       method(svc.Exec),
		"ResizePty":  method(svc.ResizePty),
		"CloseIO":    method(svc.CloseIO),
		"Update":     method(svc.Update),
		"Wait":       method(svc.Wait),
		"Stats":      method(svc.Stats),
		"Connect":    method(svc.Connect),
		"Shutdown":   method(svc.Shutdown),
	}}
}

// method adapts one typed RPC handler to ttrpc's untyped Method.
func method[Req any, PReq interface {
	*Req
	proto.Message
}, Resp proto.Message](handler func(context.Context, PReq) (Resp, error)) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		req := PReq(new(Req))
		if err := unmarshal(req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}
