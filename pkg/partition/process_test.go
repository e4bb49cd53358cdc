package partition

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/runphi/runphi/pkg/jailhouse"
	"github.com/runphi/runphi/pkg/jailhouse/sim"
)

// Tests that need other processes re-execute the test binary with
// RUNPHI_PARTITION_HELPER set; TestMain runs the helper instead of the
// tests. Helpers talk to the test over stdout, one JSON line each.

const helperEnv = "RUNPHI_PARTITION_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}

// helperArgs are what a helper process gets, as JSON in the environment.
type helperArgs struct {
	Ledger   string        `json:"ledger"`
	SimDir   string        `json:"sim_dir"`
	Board    string        `json:"board"`
	Owner    string        `json:"owner"`
	Rootfs   string        `json:"rootfs"`
	Duration time.Duration `json:"duration"`
	Seed     uint64        `json:"seed"`
}

// helperReport is a helper's last line.
type helperReport struct {
	Allocs     int      `json:"allocs"`
	Refusals   int      `json:"refusals"`
	Violations []string `json:"violations"`
	Record     *Record  `json:"record,omitempty"`
	Alloc      *Allocation
}

func runHelper(mode string) int {
	var args helperArgs
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv+"_ARGS")), &args); err != nil {
		fmt.Fprintln(os.Stderr, "helper args:", err)
		return 2
	}
	b, err := LoadBoard(args.Board)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var d jailhouse.Driver
	if args.SimDir != "" {
		drv, err := sim.Open(args.SimDir, sim.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		d = drv
	}
	l := OpenLedger(args.Ledger)
	ctx := context.Background()
	out := json.NewEncoder(os.Stdout)
	switch mode {
	case "churn":
		out.Encode(churn(ctx, d, l, b, args))
		return 0
	case "allocate-and-hang":
		// Killed between "allocate" and "cell create".
		a, err := l.Allocate(ctx, d, args.Owner, b, Request{NumCPUs: 2, Memory: 64 * mib})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		out.Encode(helperReport{Alloc: &a})
		hang()
	case "create-and-hang":
		// Killed after "cell create" (and load).
		ns, id, _ := strings.Cut(args.Owner, "/")
		p, err := Create(ctx, Options{ID: id, Namespace: ns, Rootfs: args.Rootfs, Board: b, Driver: d, Ledger: l})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		rec := p.Record()
		a := p.Allocation()
		out.Encode(helperReport{Record: &rec, Alloc: &a})
		hang()
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// hang waits for the SIGKILL (a bare select{} would be a runtime deadlock).
func hang() {
	for {
		time.Sleep(time.Hour)
	}
}

// churn allocates and frees random partitions for args.Duration. While it
// holds an allocation it checks, from the ledger file under the shared
// lock, that its entry is there and that no two entries share anything;
// after releasing, that its entry is gone.
func churn(ctx context.Context, d jailhouse.Driver, l *Ledger, b *Board, args helperArgs) helperReport {
	var rep helperReport
	rng := rand.New(rand.NewPCG(args.Seed, uint64(os.Getpid())))
	deadline := time.Now().Add(args.Duration)
	for n := 0; time.Now().Before(deadline); n++ {
		owner := fmt.Sprintf("%s-%d", args.Owner, n)
		req := randomRequest(rng, b, nil)
		req.Links = nil
		a, err := l.Allocate(ctx, d, owner, b, req)
		switch {
		case err == nil:
			rep.Allocs++
		case errdefs.IsResourceExhausted(err) || errdefs.IsInvalidArgument(err):
			rep.Refusals++
			continue
		default:
			rep.Violations = append(rep.Violations, fmt.Sprintf("allocate %s: %v", owner, err))
			return rep
		}
		entries, err := l.Entries()
		if err != nil {
			rep.Violations = append(rep.Violations, fmt.Sprintf("read the ledger: %v", err))
			return rep
		}
		if !slices.ContainsFunc(entries, func(e Entry) bool { return e.Owner == owner && slices.Equal(e.CPUs, a.CPUs) }) {
			rep.Violations = append(rep.Violations, fmt.Sprintf("entry of %s lost", owner))
		}
		var as []Allocation
		for _, e := range entries {
			as = append(as, e.Allocation)
		}
		rep.Violations = append(rep.Violations, sharing(b, as)...)
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
		if err := l.Release(owner); err != nil {
			rep.Violations = append(rep.Violations, fmt.Sprintf("release %s: %v", owner, err))
			return rep
		}
		if _, found, err := l.Lookup(owner); err != nil || found {
			rep.Violations = append(rep.Violations, fmt.Sprintf("entry of %s still there after release (%v)", owner, err))
		}
		if len(rep.Violations) > 10 {
			return rep
		}
	}
	return rep
}

// helper starts the test binary as a helper process in mode.
func helper(t *testing.T, mode string, args helperArgs) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	data, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperEnv+"_ARGS="+string(data))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	return cmd, sc
}

func readReport(t *testing.T, sc *bufio.Scanner) helperReport {
	t.Helper()
	if !sc.Scan() {
		t.Fatalf("helper said nothing: %v", sc.Err())
	}
	var rep helperReport
	if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
		t.Fatalf("helper report %q: %v", sc.Text(), err)
	}
	return rep
}

// concurrencyDuration is how long the 8 processes of the concurrency test
// churn: RUNPHI_CONCURRENCY_SECONDS (30 in acceptance runs), else 3 s (1 s
// with -short).
func concurrencyDuration(t *testing.T) time.Duration {
	if s := os.Getenv("RUNPHI_CONCURRENCY_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("RUNPHI_CONCURRENCY_SECONDS=%q is not a positive number of seconds", s)
		}
		return time.Duration(n) * time.Second
	}
	if testing.Short() {
		return time.Second
	}
	return 3 * time.Second
}

// Acceptance 2 of issue 4: 8 processes allocate and free in parallel
// against one ledger (healing against one shared simulator) → no double
// allocation, no lost entry, and the ledger file is parseable at every
// moment a reader looks at it without the lock.
func TestLedgerEightProcesses(t *testing.T) {
	const procs = 8
	dur := concurrencyDuration(t)
	dir := t.TempDir()
	n := newNodeAt(t, dir, "qemu-arm64")
	seed := uint64(time.Now().UnixNano())
	t.Logf("%d processes for %v, seed %d", procs, dur, seed)

	// An unlocked reader: every version of the file it sees must parse.
	stop := make(chan struct{})
	var reads, torn atomic.Int64
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(n.ledger.Path())
			if err != nil {
				continue // not written yet
			}
			var f ledgerFile
			if err := json.Unmarshal(data, &f); err != nil {
				torn.Add(1)
				t.Errorf("ledger file not parseable: %v\n%s", err, data)
			}
			reads.Add(1)
		}
	}()

	var wg sync.WaitGroup
	reports := make([]helperReport, procs)
	for i := range procs {
		_, sc := helper(t, "churn", helperArgs{Ledger: n.ledger.Path(), SimDir: filepath.Join(dir, "sim"), Board: "qemu-arm64",
			Owner: fmt.Sprintf("ns/proc%d", i), Duration: dur, Seed: seed})
		wg.Add(1)
		go func() {
			defer wg.Done()
			reports[i] = readReport(t, sc)
		}()
	}
	wg.Wait()
	close(stop)
	rwg.Wait()

	var allocs, refusals int
	for i, r := range reports {
		allocs += r.Allocs
		refusals += r.Refusals
		for _, v := range r.Violations {
			t.Errorf("process %d: %s", i, v)
		}
	}
	if allocs < procs {
		t.Errorf("%d allocations in total: the processes did not run", allocs)
	}
	t.Logf("%d allocations, %d refusals, %d unlocked reads of the file (%d torn)", allocs, refusals, reads.Load(), torn.Load())
	n.checkEmpty(t)
}

// newNodeAt is newNode with the simulator and the ledger under dir, so
// helper processes can open them, on the named board.
func newNodeAt(t *testing.T, dir, board string) *node {
	t.Helper()
	b, err := LoadBoard(board)
	if err != nil {
		t.Fatal(err)
	}
	d, err := sim.Open(filepath.Join(dir, "sim"), sim.Options{})
	if err != nil {
		t.Fatalf("sim.Open: %v", err)
	}
	sys, err := b.SystemConfig().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Enable(sys); err != nil {
		t.Fatalf("Enable: %v", err)
	}
	return &node{board: b, driver: d, ledger: OpenLedger(filepath.Join(dir, "state", "ledger.json"))}
}

// Acceptance 3 of issue 4, first half: a shim killed (SIGKILL) between
// "allocate" and "cell create" leaves an entry the next allocation
// reclaims: its cell does not exist and its process is gone.
func TestCrashBetweenAllocateAndCreate(t *testing.T) {
	dir := t.TempDir()
	n := newNodeAt(t, dir, "qemu-arm64")
	cmd, sc := helper(t, "allocate-and-hang", helperArgs{Ledger: n.ledger.Path(), SimDir: filepath.Join(dir, "sim"),
		Board: "qemu-arm64", Owner: "ns/crashed"})
	rep := readReport(t, sc)
	e, found, err := n.ledger.Lookup("ns/crashed")
	if err != nil || !found || e.PID != cmd.Process.Pid || e.PIDStart == 0 {
		t.Fatalf("entry of the helper: %+v found %v err %v (helper pid %d)", e, found, err, cmd.Process.Pid)
	}

	// While the owner lives, its entry is not touched.
	if _, err := n.ledger.Allocate(context.Background(), n.driver, "ns/other", n.board, Request{NumCPUs: 1, Memory: 2 * mib}); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := n.ledger.Lookup("ns/crashed"); !found {
		t.Fatal("an allocation reclaimed the entry of a live owner")
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	a, err := n.ledger.Allocate(context.Background(), n.driver, "ns/next", n.board, Request{CPUs: rep.Alloc.CPUs, NumCPUs: len(rep.Alloc.CPUs), Memory: 64 * mib})
	if err != nil {
		t.Fatalf("the allocation after the crash: %v", err)
	}
	if _, found, _ := n.ledger.Lookup("ns/crashed"); found {
		t.Error("the next allocation did not reclaim the crashed shim's entry")
	}
	if !slices.Equal(a.CPUs, rep.Alloc.CPUs) {
		t.Errorf("got CPUs %v, want the crashed shim's %v", a.CPUs, rep.Alloc.CPUs)
	}
	for _, o := range []string{"ns/other", "ns/next"} {
		if err := n.ledger.Release(o); err != nil {
			t.Fatal(err)
		}
	}
	n.checkEmpty(t)
}

// Acceptance 3 of issue 4, second half: a shim killed after "cell create"
// leaves a cell; its entry is not reclaimed (the cell still holds the
// resources), and the shim's delete path (DestroyRecord from the task's
// record) destroys the cell and frees the entry.
func TestCrashAfterCreate(t *testing.T) {
	dir := t.TempDir()
	n := newNodeAt(t, dir, "qemu-arm64")
	rootfs := scriptRootfs(t, `{}`, "#!runphi-sim\nprint up\nloop 100000\nsleep 1s\nend\n")
	cmd, sc := helper(t, "create-and-hang", helperArgs{Ledger: n.ledger.Path(), SimDir: filepath.Join(dir, "sim"),
		Board: "qemu-arm64", Owner: "ns/crashed", Rootfs: rootfs})
	rep := readReport(t, sc)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	if _, err := n.driver.Cell(rep.Record.Cell); err != nil {
		t.Fatalf("the crashed shim's cell: %v", err)
	}
	// The next allocation keeps the entry: its cell is alive.
	a, err := n.ledger.Allocate(context.Background(), n.driver, "ns/next", n.board, Request{NumCPUs: 1, Memory: 2 * mib})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, _ := n.ledger.Lookup("ns/crashed"); !found {
		t.Fatal("an allocation reclaimed the entry of a partition whose cell exists")
	}
	if slices.ContainsFunc(a.CPUs, func(c int) bool { return slices.Contains(rep.Alloc.CPUs, c) }) {
		t.Errorf("CPUs %v handed out again while the cell holds %v", a.CPUs, rep.Alloc.CPUs)
	}
	if err := n.ledger.Release("ns/next"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(n.ledger.ConfigPath(rep.Record.Cell)); err != nil {
		t.Errorf("the cell's saved config: %v", err)
	}

	// `containerd-shim-runphi-v2 delete` after the crash.
	if err := DestroyRecord(context.Background(), n.driver, nil, *rep.Record); err != nil {
		t.Fatalf("DestroyRecord: %v", err)
	}
	n.checkEmpty(t)
	if _, err := os.Stat(n.ledger.ConfigPath(rep.Record.Cell)); !os.IsNotExist(err) {
		t.Errorf("the saved config outlived the partition: %v", err)
	}
}
