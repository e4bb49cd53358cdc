package partition

import (
	"context"
	"debug/elf"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A request the board can never satisfy is InvalidArgument however full
// the node is: ResourceExhausted tells kubelet (and users) to retry, and
// retrying the impossible never ends. Each case runs on a node whose pool
// and CPUs are taken, so an allocator that looks at what is free first
// answers ResourceExhausted.
func TestAllocateNeverFitsBeforeNotFree(t *testing.T) {
	qemu := mustBoard(t)
	zcu, err := LoadBoard("zcu104")
	if err != nil {
		t.Fatal(err)
	}
	rpi, err := LoadBoard("rpi4")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		board *Board
		req   Request
		text  string
	}{
		{"a dedicated UART on a board without one", qemu,
			Request{NumCPUs: 1, Memory: 64 * mib, UART: UARTDedicated}, "has no UART for one partition alone"},
		{"RPUs on a board without any", qemu,
			Request{NumCPUs: 1, Memory: 2 * mib, RPUs: 1}, "has no Cortex-R5 RPUs"},
		{"more RPUs than the board has", zcu,
			Request{Memory: 2 * mib, RPUs: 3}, "asked 3 RPUs, board zcu104 has 2"},
		{"more CPUs than the board has for partitions", qemu,
			Request{NumCPUs: 15, Memory: 2 * mib}, "asked 15 CPUs, board qemu-arm64 has 14 for partitions"},
		{"a CPU kept for Linux", qemu,
			Request{CPUs: []int{1}, NumCPUs: 1, Memory: 2 * mib}, "CPU 1 is not available to partitions"},
		{"more RAM than the largest pool", qemu,
			Request{NumCPUs: 1, Memory: 234 * mib}, "more than board qemu-arm64's largest partition pool holds"},
		{"the whole pool and a loader area besides", qemu,
			Request{NumCPUs: 1, Memory: 232 * mib, Loader: true}, "cannot grant this even with no other partition running"},
		{"a link to itself", qemu,
			Request{NumCPUs: 1, Memory: 2 * mib, Links: []string{"new"}}, "cannot link to itself"},
		{"more ivshmem devices than a cell has INTx lines", qemu,
			Request{NumCPUs: 1, Memory: 2 * mib, Net: true, Links: []string{"a", "b", "c", "d"}}, "5 ivshmem devices"},
		{"more ivshmem devices than the board has interrupts for", rpi,
			Request{NumCPUs: 1, Memory: 2 * mib, Net: true, Links: []string{"a", "b", "c"}}, "interrupts 186-188"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f ledgerFile
			// Everything the board has is taken: every CPU and RPU, and the
			// whole pool.
			hog := Request{NumCPUs: len(tt.board.PartitionCPUs), Memory: tt.board.largestBlock(), RPUs: len(tt.board.RPUs)}
			if _, err := allocateEntry(&f, nil, "ns/hog", tt.board, hog); err != nil {
				t.Fatalf("hog: %v", err)
			}
			_, err := allocateEntry(&f, nil, "ns/new", tt.board, tt.req)
			if !errdefs.IsInvalidArgument(err) || errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %v, want InvalidArgument saying %q", err, tt.text)
			}
			if len(f.Entries) != 1 {
				t.Errorf("%d ledger entries, want the hog's only", len(f.Entries))
			}
		})
	}
}

// The same at Create, for what is checked after the allocator: the
// payload placed in the planned cell. The tester's case first: with 40 MiB
// of the pool free, a dedicated UART on qemu-arm64 was "memory: asked
// 64 MiB, largest free block 40 MiB", although that board has none.
func TestCreateNeverFitsBeforeNotFree(t *testing.T) {
	outside := makeELF(elf.EM_AARCH64, elf.ELFCLASS64, elf.ET_EXEC, 0x100,
		elfSeg{paddr: 0x0, vaddr: 0x0, data: make([]byte, 0x200)},
		elfSeg{paddr: 0x90000000, vaddr: 0x90000000, data: make([]byte, 0x100)},
	)
	tests := []struct {
		name   string
		rootfs func(t *testing.T) string
		spec   *specs.Spec
		text   string
	}{
		{"a dedicated UART on a board without one",
			func(t *testing.T) string { return scriptRootfs(t, `{}`, helloScript) },
			withAnnotations(nil, AnnotationUART, "dedicated"), "board qemu-arm64 has no UART for one partition alone"},
		{"an ELF linked outside the partition's RAM",
			func(t *testing.T) string {
				return makeRootfs(t, configJSON(`{"inmate":"/boot/app.elf"}`), rootfsFile{path: "/boot/app.elf", data: string(outside)})
			}, nil, "ELF segment 1 (PT_LOAD PF_X+PF_R at 0x90000000, 256 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			n := newNode(t)
			// 192 of the pool's 232 MiB taken: 40 MiB free, less than the
			// default 64 MiB.
			hog, err := Create(ctx, n.options("hog", scriptRootfs(t, `{"starting_vaddress":"0x40000000"}`, helloScript),
				specWith(nil, &specs.LinuxMemory{Limit: ptr[int64](192 * mib)})))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Create(ctx, n.options("new", tt.rootfs(t), tt.spec))
			if !errdefs.IsInvalidArgument(err) || errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Create = %v, want InvalidArgument saying %q", err, tt.text)
			}
			var ee *ExhaustedError
			if errors.As(err, &ee) {
				t.Errorf("an impossible request reported as %s exhaustion", ee.Resource)
			}
			if err := hog.Destroy(ctx); err != nil {
				t.Fatal(err)
			}
			n.checkEmpty(t)
		})
	}
}
