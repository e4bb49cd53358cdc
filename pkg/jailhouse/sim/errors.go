package sim

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// Errors returned by the simulator besides the errno itself.
var (
	// ErrNoReply means a cell ignored the hypervisor's shutdown request
	// while its msg_reply_timeout is 0. The real hypervisor would wait
	// forever with the whole root cell frozen; the simulator gives up
	// after Options.ReplyTimeout and fails the request with EPERM.
	ErrNoReply = errors.New("the cell ignored the shutdown request and msg_reply_timeout is 0: " +
		"the real hypervisor would wait forever with the root cell frozen")
	// ErrInjected marks an error planted with InjectError.
	ErrInjected = errors.New("error injected by a test hook")
	// ErrPassiveCommRegion means SetShutdownPolicy was asked to make the
	// inmate of a cell with PASSIVE_COMMREG deny or ignore shutdown
	// requests. The hypervisor approves such a cell's shutdown without
	// sending it a request (cell_shutdown_ok), so the policy could never
	// take effect.
	ErrPassiveCommRegion = errors.New("the cell has a passive comm region (PASSIVE_COMMREG): " +
		"the hypervisor approves its shutdown without asking its inmate")
)

// RequestError is a failed driver request. It is the jailhouse.IoctlError the
// real backend returns for the same errno (errors.As finds it, errors.Is
// matches the errno), plus the simulator's account of which check failed.
type RequestError struct {
	jailhouse.IoctlError
	Reason string // which check failed and on what, such as `CPU 3 belongs to cell "a"`
	Err    error  // ErrNoReply, ErrInjected, or nil
}

func (e *RequestError) Error() string {
	msg := e.IoctlError.Error()
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap gives the IoctlError (and through it the errno) and Err.
func (e *RequestError) Unwrap() []error {
	if e.Err != nil {
		return []error{&e.IoctlError, e.Err}
	}
	return []error{&e.IoctlError}
}

func reqErr(req, cell string, errno unix.Errno, format string, args ...any) *RequestError {
	return &RequestError{
		IoctlError: jailhouse.IoctlError{Request: req, Cell: cell, Errno: errno},
		Reason:     fmt.Sprintf(format, args...),
	}
}
