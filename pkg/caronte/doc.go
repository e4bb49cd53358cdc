// Package caronte is the per-partition proxy that stands where a container's
// init process would: it owns the truth about whether a partition is still
// running, turns the cell's state into one exit status, maps kill signals to
// cell shutdown and destroy, pumps the cell's console into the task's
// stdout FIFO (as a terminal would see it when the task has one), and the
// task's stdin into a console that takes input. It replaces runPHI's bash "caronte" loop, which reported every
// stop as exit 0 and never noticed an inmate that stopped by itself.
//
// One Proxy lives in the shim's memory for each partition task. It drives the
// partition only through the small Cell interface declared here; pkg/shim
// adapts a *partition.Partition to it, so caronte and partition do not import
// each other. Caronte does not publish events, allocate resources, or destroy
// a cell that stopped by itself: the shim's Delete does that.
//
// Invariants: a Proxy produces at most one Exit, whatever races between the
// watcher and Kill (the first cause wins, except that SIGKILL overrides a
// graceful stop still in progress). Before an Exit becomes visible, the
// console has been drained into stdout (within a bound) and the stdout and
// stderr FIFOs are closed, so clients copying them reach EOF. Opening the
// stdio FIFOs never blocks; a slow reader slows the console down (nothing
// is lost), and a stalled or vanished reader never blocks the lifecycle or
// grows memory beyond Options.ConsoleBuffer: its oldest output is dropped
// and a marker line says how much. The hypervisor's virtual console is
// read by the caronte of the one partition that owns it, which keeps the
// hypervisor's own lines out of the stream and in the log.
// docs/exit-status.md and docs/console.md describe the semantics.
package caronte
