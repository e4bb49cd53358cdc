package caronte

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// action is what a kill signal does to a partition. An inmate has no signal
// handlers, so each signal does what its default disposition does to a
// process that has none (signal(7)), mapped onto the cell.
type action int

const (
	actProbe    action = iota // signal 0: liveness check only
	actDestroy                // SIGKILL: destroy the cell at once
	actGraceful               // default Term or Core: shutdown request, grace period, destroy
	actIgnore                 // default Ign (and SIGCONT): nothing happens
	actStop                   // default Stop: would pause the cell, which is not supported
)

var actionText = [...]string{"probe", "destroy", "graceful", "ignore", "stop"}

func (a action) String() string {
	if int(a) < len(actionText) {
		return actionText[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// maxSignal is the highest signal number Linux has (_NSIG-1).
const maxSignal = 64

// actionOf maps a signal to what it does to a partition.
func actionOf(sig syscall.Signal) (action, error) {
	switch {
	case sig == 0:
		return actProbe, nil
	case sig < 0 || sig > maxSignal:
		return 0, fmt.Errorf("signal %d: %w", int(sig), errdefs.ErrInvalidArgument)
	}
	switch sig {
	case unix.SIGKILL:
		return actDestroy, nil
	case unix.SIGCHLD, unix.SIGCONT, unix.SIGURG, unix.SIGWINCH:
		return actIgnore, nil
	case unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU:
		return actStop, nil
	}
	// Everything else terminates a process by default: SIGHUP, SIGINT,
	// SIGQUIT, SIGTERM, SIGUSR1/2, SIGABRT, SIGPIPE, SIGALRM, the core
	// dumping ones and the real-time signals. SIGQUIT is also the graceful
	// stop of nginx-style images, which is what a shutdown request is.
	return actGraceful, nil
}

// signalName names sig the way kill(1) does, or "signal N".
func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(sig))
}

// Kill delivers sig to the partition (docs/exit-status.md):
//   - 0 checks liveness;
//   - SIGKILL destroys the cell now: exit 137;
//   - a signal whose default action terminates a process (SIGTERM, SIGINT,
//     SIGQUIT, SIGHUP, SIGUSR1, …) requests a shutdown and destroys the cell
//     once it stopped or after GracePeriod: exit 128+sig;
//   - SIGCHLD, SIGCONT, SIGURG and SIGWINCH are ignored, as by a process;
//   - SIGSTOP and the other stop signals give errdefs.ErrNotImplemented.
//
// Kill returns promptly; the grace period runs in the watcher. On a
// partition that has exited (or is exiting, or a closed Proxy) it returns
// errdefs.ErrNotFound, which CRI ignores. A SIGKILL during a graceful stop
// overrides it.
func (p *Proxy) Kill(ctx context.Context, sig syscall.Signal) error {
	act, err := actionOf(sig)
	if err != nil {
		return err
	}
	p.opMu.Lock()
	defer p.opMu.Unlock()

	p.mu.Lock()
	closed, ph, cur := p.closed, p.phase, p.signal
	p.mu.Unlock()
	if closed || ph >= phaseExiting {
		return fmt.Errorf("kill partition with %s: process already finished: %w", signalName(sig), errdefs.ErrNotFound)
	}
	l := p.log.WithField("signal", signalName(sig))

	switch act {
	case actProbe:
		return nil
	case actIgnore:
		l.Debug("signal ignored, as by a process without a handler")
		return nil
	case actStop:
		return fmt.Errorf("kill partition with %s: pausing a partition is not supported: %w", signalName(sig), errdefs.ErrNotImplemented)
	case actDestroy:
		return p.killDestroy(ctx, sig, cur, ph)
	}

	// Graceful.
	if ph == phaseCreated {
		// Nothing runs yet that could be asked to shut down.
		return p.killDestroy(ctx, sig, cur, ph)
	}
	if cur != 0 {
		l.WithField("stopping_on", signalName(cur)).Debug("partition already stopping")
		return nil
	}
	// Did the inmate already stop by itself, unseen by the watcher so far?
	// Then that is the exit, and the signal finds no process.
	var ignored string
	if st, err := p.cell.State(); p.observe(st, err, &ignored) {
		return fmt.Errorf("kill partition with %s: process already finished: %w", signalName(sig), errdefs.ErrNotFound)
	}

	// The signal is recorded before the shutdown request, so that the
	// watcher charges the stop the request causes to the signal.
	p.mu.Lock()
	if p.phase >= phaseExiting {
		p.mu.Unlock()
		return fmt.Errorf("kill partition with %s: process already finished: %w", signalName(sig), errdefs.ErrNotFound)
	}
	p.signal = sig
	close(p.graceC)
	p.mu.Unlock()

	switch err := p.cell.Shutdown(ctx); {
	case err == nil:
		l.Info("shutdown requested")
	case errors.Is(err, unix.EPERM):
		l.WithError(err).Info("inmate refused shutdown, destroying it after the grace period")
	case errors.Is(err, jailhouse.ErrCellNotFound):
		// Gone already: the watcher reports it.
	default:
		l.WithError(err).Warn("request shutdown, destroying it after the grace period")
	}
	return nil
}

// killDestroy destroys the cell now for sig (SIGKILL, or any terminating
// signal before Start) and decides the exit 128+sig. prev is the signal in
// progress before, restored if the destroy fails.
func (p *Proxy) killDestroy(ctx context.Context, sig, prev syscall.Signal, ph phase) error {
	// Recorded first: if the watcher sees the cell vanish before this
	// decides, it must charge it to sig and not report "destroyed outside".
	p.mu.Lock()
	p.signal = sig
	p.mu.Unlock()

	if err := p.cell.Destroy(ctx); err != nil && !errors.Is(err, jailhouse.ErrCellNotFound) {
		p.mu.Lock()
		if p.signal == sig {
			p.signal = prev
		}
		p.mu.Unlock()
		return fmt.Errorf("kill partition with %s: destroy cell: %w", signalName(sig), err)
	}
	reason := fmt.Sprintf("cell destroyed on %s", signalName(sig))
	if ph == phaseCreated {
		reason += " before start"
	}
	p.decide(signalExit(sig, reason))
	return nil
}
