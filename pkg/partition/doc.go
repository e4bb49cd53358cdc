// Package partition turns a container into a Jailhouse cell ("partition")
// and back.
//
// It owns everything between the container world and the hypervisor ABI:
//   - the boot description an image ships in /boot/config.json (bootdesc.go),
//   - the board profile that says which CPUs, RAM and devices partitions may
//     use on a machine and what its root cell looks like (board.go),
//   - the resources a container asks for in its OCI spec and runphi.io/
//     annotations (request.go),
//   - the allocator, a pure function of the board, what is held and the
//     request (allocate.go), which first decides whether the request can
//     ever fit the board (fit.go), so ResourceExhausted only means "not
//     now",
//   - the node-wide ledger of what every partition holds, healed against
//     the hypervisor on every allocation (ledger.go),
//   - the cell configuration generated for one partition (plan.go,
//     generate.go), checked with jailhouse.CheckCell before it is created
//     (check.go), or an image's prebuilt cell, accepted only inside what
//     the allocator may grant (prebuilt.go), and
//   - the payload: a raw binary, an ELF or a Linux kernel with its device
//     tree, read before anything is allocated and placed in the planned
//     cell (payload.go, payload_elf.go, payload_linux.go),
//   - the console a partition gets (ivshmem, the host's virtual console,
//     or none) and the node-wide record of who owns the virtual console
//     (console.go), and
//   - the live partition: create, load, start, shutdown, destroy, with
//     rollback of every step on failure (partition.go).
//
// It does not own the binary config format or the driver (package jailhouse),
// nor anything of containerd (package shim): errors leave this package
// wrapped with containerd's errdefs sentinels, and driver errors keep their
// errno so errors.Is(err, unix.EBUSY) holds.
//
// Invariants:
//   - Nothing read from an image leaves the image's rootfs: every file is
//     opened through an os.Root, so symlinks and ".." cannot reach the host.
//   - An image asks for sizes, never addresses it did not declare as its own
//     load address: CPUs, RAM, interrupts and links come from the ledger,
//     everything else from the board profile. A prebuilt cell's addresses
//     are taken only if the allocator could have granted them.
//   - No two live partitions share a CPU, a byte of their own RAM, an
//     interrupt, an ivshmem slot, a dedicated UART or an RPU; a link's
//     memory is shared by its two ends only.
//   - A ledger entry exists for every cell this package created and has not
//     destroyed; it is released only once the cell is known to be gone.
//   - Create is all-or-nothing: on any error no cell and no ledger entry is
//     left behind.
//   - Only the virtual console's owner has VIRTUAL_CONSOLE_PERMITTED or
//     ACTIVE: no other cell can write into the ring its output is read from.
package partition
