package shim

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// multiCause is an error with two causes, like partition.BootDescriptionError.
type multiCause struct{ cause error }

func (e *multiCause) Error() string   { return "boot description /boot/config.json: " + e.cause.Error() }
func (e *multiCause) Unwrap() []error { return []error{errdefs.ErrInvalidArgument, e.cause} }

func TestRPCErrorsKeepOneMessageAndTheirClass(t *testing.T) {
	s := &service{}
	cases := []struct {
		name string
		err  error
		code codes.Code
	}{
		{"multi-cause invalid argument", &multiCause{errors.New("invalid JSON at line 1")}, codes.InvalidArgument},
		{"wrapped not found", fmt.Errorf("task %q: %w", "t1", errdefs.ErrNotFound), codes.NotFound},
		{"unclassified", errors.New("disk on fire"), codes.Unknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, ok := status.FromError(s.toRPC(c.err))
			if !ok {
				t.Fatalf("not a status: %v", s.toRPC(c.err))
			}
			if st.Code() != c.code {
				t.Errorf("code = %v, want %v", st.Code(), c.code)
			}
			if n := strings.Count(st.Message(), strings.SplitN(c.err.Error(), ": ", 2)[0]); n != 1 {
				t.Errorf("message %q repeats the error %d times", st.Message(), n)
			}
			back := errgrpc.ToNative(s.toRPC(c.err))
			cause := c.err.Error()[strings.LastIndex(c.err.Error(), ": ")+2:]
			if n := strings.Count(back.Error(), cause); n != 1 {
				t.Errorf("client sees %q: the cause appears %d times", back.Error(), n)
			}
			if c.code == codes.InvalidArgument && !errdefs.IsInvalidArgument(back) {
				t.Errorf("client side lost the class: %v", back)
			}
		})
	}
}
