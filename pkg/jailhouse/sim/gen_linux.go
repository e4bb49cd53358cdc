package sim

import (
	"math"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Operations of futex(2), from linux/futex.h. Without FUTEX_PRIVATE_FLAG
// the futex is keyed by the mapped file and offset, so waiters and wakers
// in different processes meet.
const (
	futexWaitOp = 0 // FUTEX_WAIT
	futexWakeOp = 1 // FUTEX_WAKE
)

// futexWait sleeps while *w is val, for at most d. EAGAIN (the word
// changed already), ETIMEDOUT and EINTR all mean: look again. Any other
// error means the file system's mappings cannot be waited on: it sleeps
// d, at most cellConsolePoll, instead of returning at once, which would
// make its caller spin. unix.Syscall6 lets the runtime run other
// goroutines meanwhile; the wait holds one OS thread.
func futexWait(w *atomic.Uint32, val uint32, d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	_, _, errno := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWaitOp, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
	switch errno {
	case 0, unix.EAGAIN, unix.ETIMEDOUT, unix.EINTR:
	default:
		time.Sleep(min(d, cellConsolePoll))
	}
}

// futexWake wakes every waiter on w.
func futexWake(w *atomic.Uint32) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(w)), futexWakeOp, math.MaxInt32, 0, 0, 0)
}
