package jailhouse

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/runphi/runphi/pkg/jailhouse/internal/abi"
)

func TestIoctlErrorKeepsErrno(t *testing.T) {
	err := fmt.Errorf("create partition: %w",
		&IoctlError{Request: RequestCellCreate, Cell: "demo", Errno: syscall.EBUSY})
	if !errors.Is(err, syscall.EBUSY) {
		t.Errorf("errors.Is(%v, EBUSY) = false", err)
	}
	if errors.Is(err, syscall.EINVAL) {
		t.Errorf("errors.Is(%v, EINVAL) = true", err)
	}
	var ie *IoctlError
	if !errors.As(err, &ie) || ie.Cell != "demo" {
		t.Errorf("errors.As did not find the IoctlError of cell demo in %v", err)
	}
}

func TestIoctlErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  IoctlError
		want []string // substrings of Error()
	}{
		{"create busy names the cpu ownership", IoctlError{RequestCellCreate, "demo", syscall.EBUSY},
			[]string{"JAILHOUSE_CELL_CREATE", `cell "demo"`, "device or resource busy", "not owned by the root cell"}},
		{"create exists", IoctlError{RequestCellCreate, "demo", syscall.EEXIST},
			[]string{"a cell with that name exists"}},
		{"create einval covers disabled", IoctlError{RequestCellCreate, "demo", syscall.EINVAL},
			[]string{"not a valid cell config, revision mismatch, or jailhouse not enabled"}},
		{"create eperm", IoctlError{RequestCellCreate, "demo", syscall.EPERM},
			[]string{"another cell is running/locked or the cell refused"}},
		{"create too big", IoctlError{RequestCellCreate, "demo", syscall.E2BIG},
			[]string{"16 pages"}},
		{"load einval is about regions", IoctlError{RequestCellLoad, "demo", syscall.EINVAL},
			[]string{"WRITE|LOADABLE"}},
		{"start unknown cell", IoctlError{RequestCellStart, "ghost", syscall.ENOENT},
			[]string{"no cell with that name exists"}},
		{"destroy refused", IoctlError{RequestCellDestroy, "demo", syscall.EPERM},
			[]string{"refused"}},
		{"enable twice", IoctlError{RequestEnable, "", syscall.EBUSY},
			[]string{"JAILHOUSE_ENABLE: device or resource busy (jailhouse is already enabled)"}},
		{"enable without firmware", IoctlError{RequestEnable, "", syscall.ENOENT},
			[]string{"/lib/firmware"}},
		{"disable when disabled", IoctlError{RequestDisable, "", syscall.EINVAL},
			[]string{"jailhouse is not enabled"}},
		{"any request interrupted", IoctlError{RequestCellStart, "demo", syscall.EINTR},
			[]string{"interrupted by a signal"}},
		{"console disabled", IoctlError{RequestConsoleRead, "", syscall.EAGAIN},
			[]string{"not enabled"}},
		{"console without flag", IoctlError{RequestConsoleRead, "", syscall.EPERM},
			[]string{"VIRTUAL_DEBUG_CONSOLE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := tt.err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Error() = %q, want it to contain %q", msg, w)
				}
			}
		})
	}
}

func TestIoctlErrorWithoutMeaning(t *testing.T) {
	e := &IoctlError{Request: RequestCellStart, Cell: "demo", Errno: syscall.ENOSPC}
	if got, want := e.Error(), `JAILHOUSE_CELL_START of cell "demo": no space left on device`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestRequestNamesMatchABI(t *testing.T) {
	// Device fills IoctlError.Request from abi.Request.String; the
	// simulator uses the constants. They must agree.
	for req, name := range map[abi.Request]string{
		abi.Enable: RequestEnable, abi.Disable: RequestDisable,
		abi.CellCreate: RequestCellCreate, abi.CellLoad: RequestCellLoad,
		abi.CellStart: RequestCellStart, abi.CellDestroy: RequestCellDestroy,
	} {
		if req.String() != name {
			t.Errorf("abi %q != constant %q", req.String(), name)
		}
		if _, ok := errnoMeanings[name]; !ok {
			t.Errorf("no errno meanings for %s", name)
		}
	}
}
