package shim

import (
	"context"
	"errors"
	"fmt"
	"testing"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestToRPC(t *testing.T) {
	cases := []struct {
		name   string
		legacy bool
		err    error
		want   codes.Code
	}{
		{"nil stays nil", false, nil, codes.OK},
		{"resource exhausted to a 2.x daemon", false, fmt.Errorf("memory: %w", errdefs.ErrResourceExhausted), codes.ResourceExhausted},
		{"resource exhausted to 1.6 keeps its class as failed precondition", true,
			fmt.Errorf("memory: %w", errdefs.ErrResourceExhausted), codes.FailedPrecondition},
		{"permission denied to 1.6", true, fmt.Errorf("x: %w", errdefs.ErrPermissionDenied), codes.FailedPrecondition},
		{"codes 1.6 knows are kept", true, fmt.Errorf("x: %w", errdefs.ErrInvalidArgument), codes.InvalidArgument},
		{"not found to 1.6", true, fmt.Errorf("x: %w", errdefs.ErrNotFound), codes.NotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &service{legacy: tc.legacy}
			got := s.toRPC(tc.err)
			if tc.err == nil {
				if got != nil {
					t.Fatalf("toRPC(nil) = %v", got)
				}
				return
			}
			st, ok := status.FromError(got)
			if !ok || st.Code() != tc.want {
				t.Fatalf("toRPC = %v, want code %v", got, tc.want)
			}
			if st.Message() != tc.err.Error() {
				t.Errorf("message %q, want %q", st.Message(), tc.err.Error())
			}
		})
	}
}

func TestConnectRefusedWhileExiting(t *testing.T) {
	svc := newService(context.Background(), serviceOptions{Namespace: "default", Pid: 7, Publisher: &recorder{}})
	ctx := context.Background()
	if _, err := svc.Connect(ctx, &taskv3.ConnectRequest{}); err != nil {
		t.Fatalf("Connect before Shutdown: %v", err)
	}
	if _, err := svc.Shutdown(ctx, &taskv3.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Connect(ctx, &taskv3.ConnectRequest{})
	if !errors.Is(errgrpc.ToNative(err), errdefs.ErrUnavailable) {
		t.Fatalf("Connect after Shutdown = %v, want Unavailable", err)
	}
	_, err = svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: t.TempDir()})
	if !errors.Is(errgrpc.ToNative(err), errdefs.ErrFailedPrecondition) {
		t.Fatalf("Create after Shutdown = %v, want FailedPrecondition", err)
	}
}
