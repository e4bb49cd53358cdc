package caronte

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/runphi/runphi/pkg/jailhouse"
)

// Exit statuses of a partition that stopped without being signalled
// (docs/exit-status.md).
const (
	StatusShutDown  uint32 = 0                             // the inmate shut itself down
	StatusFailed    uint32 = 255                           // the cell failed (or its comm ABI did not match)
	StatusDestroyed uint32 = 128 + uint32(syscall.SIGKILL) // the cell was destroyed outside runphi
)

// watch is the cell-state watcher. It polls the cell every PollInterval
// until an Exit is decided or the Proxy is closed, and runs the grace timer
// of a graceful kill.
func (p *Proxy) watch() {
	ticker := time.NewTicker(p.opts.PollInterval)
	defer ticker.Stop()
	var grace <-chan time.Time
	graceStarted := p.graceC
	forced := false // the grace period expired and the destroy has not yet worked
	var lastErr string
	for {
		select {
		case <-p.closing:
			return
		case <-p.decided:
			return
		case <-graceStarted:
			graceStarted = nil
			t := time.NewTimer(p.opts.GracePeriod)
			defer t.Stop()
			grace = t.C
		case <-grace:
			grace = nil
			forced = true
			p.log.WithField("grace_period", p.opts.GracePeriod).Info("partition did not stop within the grace period, destroying it")
			p.forceDestroy(&lastErr)
		case <-ticker.C:
			st, err := p.cell.State()
			if p.observe(st, err, &lastErr) {
				return
			}
			if forced {
				p.forceDestroy(&lastErr)
			}
		}
	}
}

// observe turns one reading of the cell state into an Exit if the cell has
// stopped, and reports whether it has. lastErr dedupes the logging of
// transient State errors.
func (p *Proxy) observe(st jailhouse.CellState, err error, lastErr *string) bool {
	gone := errors.Is(err, jailhouse.ErrCellNotFound)
	if err != nil && !gone {
		if msg := err.Error(); msg != *lastErr {
			*lastErr = msg
			p.log.WithError(err).Warn("read cell state, will retry")
		}
		return false
	}
	if !gone && !st.Terminal() {
		return false
	}

	p.mu.Lock()
	sig := p.signal
	p.mu.Unlock()
	if sig == 0 {
		// The cell stopped before any kill: its own state says how. The
		// cell is left for the shim's Delete to destroy, so that a failed
		// cell can still be inspected.
		p.decide(naturalExit(st, gone))
		return true
	}

	// The cell stopped during a graceful kill. Like a process that dies of
	// the signal it was sent, the status is 128+signal even if the inmate
	// shut itself down in response. The cell is destroyed now, as the kill
	// promised.
	if !gone {
		if err := p.cell.Destroy(p.ctx); err != nil && !errors.Is(err, jailhouse.ErrCellNotFound) {
			p.log.WithError(err).Warn("destroy stopped cell after kill, leaving it to delete")
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	sig = p.signal // SIGKILL may have escalated meanwhile
	reason := fmt.Sprintf("cell %s on %s", st, signalName(sig))
	if gone {
		reason = fmt.Sprintf("cell destroyed during stop on %s", signalName(sig))
	}
	p.decideLocked(signalExit(sig, reason))
	return true
}

// forceDestroy destroys the cell once the grace period has passed. If that
// fails the watcher retries on every tick; lastErr dedupes the logging.
func (p *Proxy) forceDestroy(lastErr *string) {
	err := p.cell.Destroy(p.ctx)
	if err != nil && !errors.Is(err, jailhouse.ErrCellNotFound) {
		if msg := err.Error(); msg != *lastErr {
			*lastErr = msg
			p.log.WithError(err).Error("destroy cell after grace period, will retry")
		}
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	sig := p.signal
	p.decideLocked(signalExit(sig, fmt.Sprintf("cell destroyed after the grace period of %s", signalName(sig))))
}

// naturalExit maps the state of a cell that stopped on its own.
func naturalExit(st jailhouse.CellState, gone bool) Exit {
	e := Exit{At: time.Now()}
	switch {
	case gone:
		e.Status, e.Reason = StatusDestroyed, "cell destroyed outside runphi"
	case st == jailhouse.StateShutDown:
		e.Status, e.Reason = StatusShutDown, "cell shut down"
	case st == jailhouse.StateFailedCommRev:
		e.Status, e.Reason = StatusFailed, "cell failed: Comm ABI mismatch"
	default:
		e.Status, e.Reason = StatusFailed, "cell failed"
	}
	return e
}

// signalExit is the Exit of a partition stopped by sig.
func signalExit(sig syscall.Signal, reason string) Exit {
	return Exit{Status: 128 + uint32(sig), At: time.Now(), Reason: reason}
}
