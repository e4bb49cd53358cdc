package caronte

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// IO names the task's stdio as CreateTaskRequest carries it. Each field is a
// FIFO path made by the client, a fifo:// or file:// URI, or "" for
// /dev/null.
type IO struct {
	Stdin, Stdout, Stderr string
	// Terminal asks for a pty (ctr run -t, CRI tty: true). The console
	// then behaves as a serial line on a pty with raw input and ONLCR
	// output processing: stdin bytes reach the inmate unchanged, and each
	// "\n" of the inmate's output reaches the client as "\r\n"
	// (docs/console.md, "Terminal").
	Terminal bool
}

// stdio holds the task's open stdio files. Each is nil when its path was "".
// The files are opened so that no open, write or close can block forever:
// see openInput and openOutput.
type stdio struct {
	stdin    *os.File
	stdout   *os.File
	stderr   *os.File
	terminal bool
}

// openStdio opens all three stdio paths, or none.
func openStdio(io IO) (_ *stdio, retErr error) {
	s := &stdio{terminal: io.Terminal}
	defer func() {
		if retErr != nil {
			s.closeAll()
		}
	}()
	var err error
	if s.stdin, err = openInput(io.Stdin); err != nil {
		return nil, fmt.Errorf("open stdin: %w", err)
	}
	if s.stdout, err = openOutput(io.Stdout); err != nil {
		return nil, fmt.Errorf("open stdout: %w", err)
	}
	if s.stderr, err = openOutput(io.Stderr); err != nil {
		return nil, fmt.Errorf("open stderr: %w", err)
	}
	return s, nil
}

// closeOutputs closes stdout and stderr, so that the client's copiers reach
// EOF. It is idempotent.
func (s *stdio) closeOutputs() error {
	var errs []error
	for _, f := range []**os.File{&s.stdout, &s.stderr} {
		if *f != nil {
			if err := (*f).Close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, err)
			}
			*f = nil
		}
	}
	return errors.Join(errs...)
}

// closeStdin closes stdin, ending its copier. It is idempotent.
func (s *stdio) closeStdin() error {
	if s.stdin == nil {
		return nil
	}
	err := s.stdin.Close()
	s.stdin = nil
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// closeAll closes every file. It is idempotent.
func (s *stdio) closeAll() error {
	return errors.Join(s.closeOutputs(), s.closeStdin())
}

// pipeSize is what the stdout FIFO is grown to: a console flood then
// crosses to the client in 1 MiB rather than 64 KiB steps, and a reader
// that pauses briefly finds its output waiting in the pipe. Linux caps it
// at /proc/sys/fs/pipe-max-size (1 MiB by default) for unprivileged users.
const pipeSize = 1 << 20

// growPipe enlarges a FIFO's buffer, best effort: a smaller pipe only
// costs speed.
func growPipe(f *os.File) {
	sc, err := f.SyscallConn()
	if err != nil {
		return
	}
	sc.Control(func(fd uintptr) {
		unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize)
	})
}

// copyStdin copies the task's stdin into the console's input until stdin
// is closed (CloseIO, Close) or the inmate stops taking input. Without a
// console input (an output-only console, or none) stdin is read and
// thrown away, so a client writing to it never blocks; that is logged once.
func copyStdin(in *os.File, console io.Writer, l *log.Entry) {
	buf := make([]byte, firstChunk)
	warned := false
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if console == nil {
				if !warned {
					l.Info("stdin ignored: this partition's console takes no input")
					warned = true
				}
			} else if _, werr := console.Write(buf[:n]); werr != nil {
				l.WithError(werr).Debug("console input closed, no more stdin for the inmate")
				console = nil
				warned = true
			}
			buf = grown(buf, n)
		}
		if err != nil {
			if !errors.Is(err, os.ErrClosed) && !errors.Is(err, io.EOF) {
				l.WithError(err).Warn("read stdin")
			}
			return
		}
	}
}

// stdioPath returns the file path of a stdio name and whether it is a
// file:// URI (a regular file to append to).
func stdioPath(name string) (path string, isFile bool, err error) {
	if !strings.Contains(name, "://") {
		return name, false, nil
	}
	// Errors name the scheme and path, never the URI whole: containerd
	// runs the message through a printf, and a query such as nerdctl's
	// "?_NERDCTL_INTERNAL_LOGGING=%2Ftmp…" came out as "%!F(MISSING)tmp…".
	u, err := url.Parse(name)
	if err != nil {
		// url's errors quote the URI (or its bad %-escape), so they stay out.
		scheme, _, _ := strings.Cut(name, "://")
		return "", false, fmt.Errorf("%s:// stdio URI does not parse as a URL: %w", scheme, errdefs.ErrInvalidArgument)
	}
	switch u.Scheme {
	case "fifo":
		return u.Path, false, nil
	case "file":
		return u.Path, true, nil
	default:
		// binary:// loggers need a process of their own; not yet.
		return "", false, fmt.Errorf("%s:// logging to %s is not supported for partitions (use a FIFO, fifo:// or file://): %w",
			u.Scheme, u.Path, errdefs.ErrNotImplemented)
	}
}

// openInput opens stdin without ever blocking: a blocking open of a FIFO
// waits for a writer, and a client that never opens its end would hang
// Create forever (containerd#2551). A FIFO is opened O_RDWR, so caronte is
// a writer too: a read waits for data instead of returning EOF before the
// client opened its end or between its writers, and the end of input is
// CloseIO, as containerd signals it. O_NONBLOCK puts the fd in Go's
// poller, so Close wakes a pending read. Anything else is read as it is.
func openInput(name string) (*os.File, error) {
	if name == "" {
		return nil, nil
	}
	path, _, err := stdioPath(name)
	if err != nil {
		return nil, err
	}
	flag := os.O_RDONLY
	if fi, serr := os.Stat(path); serr == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
	}
	return f, nil
}

// openOutput opens stdout or stderr for writing without ever blocking.
//
// A FIFO is opened O_RDWR: on Linux that never waits for a reader, and
// because caronte then holds a read end itself, writes never fail with EPIPE
// when the client's reader goes away; the FIFO keeps working for a reader
// that comes back (containerd reattaches after a restart). O_NONBLOCK puts
// the fd in Go's poller, so a write into a full FIFO parks the goroutine and
// honours write deadlines and Close instead of wedging a thread.
//
// Anything else (a regular file, /dev/null, a file:// URI) is opened for
// appending; writes to those do not block.
func openOutput(name string) (*os.File, error) {
	if name == "" {
		return nil, nil
	}
	path, isFile, err := stdioPath(name)
	if err != nil {
		return nil, err
	}
	var f *os.File
	if isFile {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	} else {
		flag := os.O_WRONLY | os.O_APPEND
		if fi, serr := os.Stat(path); serr == nil && fi.Mode()&os.ModeNamedPipe != 0 {
			flag = os.O_RDWR
		}
		// O_NONBLOCK also covers a path that became a FIFO after the Stat:
		// a write-only open then fails with ENXIO instead of blocking.
		f, err = os.OpenFile(path, flag|syscall.O_NONBLOCK, 0)
		if err == nil && flag == os.O_RDWR {
			growPipe(f)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, err)
	}
	return f, nil
}
