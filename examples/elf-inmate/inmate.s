// A minimal bare-metal inmate for the qemu-arm64 board profile: it prints
// one line on the PL011 it shares with root Linux (runphi.io/uart "shared",
// the profile's default) and then sleeps for ever. It is linked at 0, where
// the partition's RAM starts (the profile's cpu_reset_address), and runs with
// the MMU off, so the UART's physical address is the one to use.
	.section .text.boot, "ax"
	.global _start
_start:
	ldr	x1, =0x09000000		// PL011 base (qemu-arm64 [[partitions.uarts]])
	adr	x2, msg
1:	ldrb	w3, [x2], #1
	cbz	w3, 3f
2:	ldr	w4, [x1, #0x18]		// UARTFR
	tbnz	w4, #5, 2b		// TXFF: the transmit FIFO is full, wait
	strb	w3, [x1]		// UARTDR
	b	1b
3:	wfi				// nothing else to do; SIGTERM/SIGKILL destroy the cell
	b	3b
msg:	.asciz "hello from a bare-metal ELF inmate\r\n"
