//go:build !linux

package sim

import (
	"sync/atomic"
	"time"
)

// Without futex(2) a waiting reader looks again every cellConsoleGap.
func futexWait(w *atomic.Uint32, val uint32, d time.Duration) {
	if w.Load() == val {
		time.Sleep(min(d, cellConsoleGap))
	}
}

func futexWake(*atomic.Uint32) {}
