package sim

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runphi/runphi/pkg/jailhouse"
)

func TestTwoDriversShareOneHost(t *testing.T) {
	dir := t.TempDir()
	d1, err := Open(dir, Options{})
	must(t, err)
	d2, err := Open(dir, Options{})
	must(t, err)

	must(t, d1.Enable(marshal(t, testSystem(t))))
	if on, err := d2.Enabled(); err != nil || !on {
		t.Fatalf("second driver: Enabled() = %v, %v after the first enabled", on, err)
	}
	run(t, d1, testCell(t, "c", []int{2}), "print hi")
	info, err := d2.Cell("c")
	must(t, err)
	if info.State != jailhouse.StateRunning || !slices.Equal(info.CPUs, []int{2}) {
		t.Errorf("second driver sees %+v, want c running on CPU 2", info)
	}
	if err := d2.CreateCell(marshal(t, testCell(t, "c", []int{3}))); err == nil {
		t.Error("second driver created a duplicate of the first driver's cell")
	}
	must(t, d2.DestroyCell("c"))
	if _, err := d1.Cell("c"); err == nil {
		t.Error("first driver still sees the cell the second destroyed")
	}
}

func TestOpenKeepsTheHostsProperties(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(dir, Options{NrCPUIDs: 16})
	must(t, err)
	if _, err := Open(dir, Options{Arch: new(jailhouse.ArchX86)}); err == nil {
		t.Error("Open with another arch than the directory's succeeded")
	}
	if _, err := Open(dir, Options{NrCPUIDs: 32}); err == nil {
		t.Error("Open with another nr_cpu_ids than the directory's succeeded")
	}
	if _, err := Open(dir, Options{Arch: new(jailhouse.ArchARM64), NrCPUIDs: 16}); err != nil {
		t.Errorf("Open with the directory's own properties: %v", err)
	}
}

func TestConcurrentRequests(t *testing.T) {
	dir := t.TempDir()
	d0, err := Open(dir, Options{})
	must(t, err)
	must(t, d0.Enable(marshal(t, testSystem(t))))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		name := fmt.Sprintf("c%d", i)
		cfg := marshal(t, testCell(t, name, []int{2 + i}))
		wg.Go(func() {
			d, err := Open(dir, Options{})
			if err != nil {
				errs <- err
				return
			}
			if err := d.CreateCell(cfg); err != nil {
				errs <- err
				return
			}
			if err := d.LoadCell(name, script("print "+name)); err != nil {
				errs <- err
				return
			}
			errs <- d.StartCell(name)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	cells, err := d0.Cells()
	must(t, err)
	ids := map[int]bool{}
	for _, c := range cells[1:] {
		ids[c.ID] = true
		if c.State != jailhouse.StateRunning {
			t.Errorf("cell %s is %v, want running", c.Name, c.State)
		}
	}
	if len(cells) != 9 || len(ids) != 8 || !ids[1] || !ids[8] {
		t.Errorf("cells %+v: want 8 running cells with ids 1-8", cells)
	}
}

// helperDirEnv makes the test binary act as the child process of
// TestCellOutlivesItsCreator: a "shim" that creates a cell and waits to be
// killed.
const helperDirEnv = "RUNPHI_SIM_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		if err := helperMain(dir); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		select {} // wait for SIGKILL
	}
	os.Exit(m.Run())
}

func helperMain(dir string) error {
	d, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	set, err := jailhouse.CPUSetFromList([]int{2}, 8)
	if err != nil {
		return err
	}
	cfg, err := (&jailhouse.Cell{
		Arch: jailhouse.ArchARM64, Name: "orphan", CPUSet: set,
		MemoryRegions: []jailhouse.Memory{{PhysStart: 0x70000000, Size: testRAMSize,
			Flags: jailhouse.MemRead | jailhouse.MemWrite | jailhouse.MemLoadable}},
	}).MarshalBinary()
	if err != nil {
		return err
	}
	if err := d.CreateCell(cfg); err != nil {
		return err
	}
	if err := d.LoadCell("orphan", script("print started", "loop forever", "sleep 50ms", "print tick", "end")); err != nil {
		return err
	}
	if err := d.StartCell("orphan"); err != nil {
		return err
	}
	fmt.Println("ready")
	return nil
}

func TestCellOutlivesItsCreator(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir, Options{})
	must(t, err)
	must(t, d.Enable(marshal(t, testSystem(t))))

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	must(t, err)
	cmd.Stderr = os.Stderr
	must(t, cmd.Start())
	ready := make(chan bool, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if s.Text() == "ready" {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("helper process exited without creating its cell")
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("helper process did not get ready")
	}
	must(t, cmd.Process.Kill()) // SIGKILL, as a shim may get
	cmd.Wait()

	wantState(t, d, "orphan", jailhouse.StateRunning)
	before := strings.Count(cellOutput(t, d, "orphan"), "tick")
	time.Sleep(300 * time.Millisecond)
	after := cellOutput(t, d, "orphan")
	if !strings.HasPrefix(after, "started\n") || strings.Count(after, "tick") <= before {
		t.Errorf("the orphaned inmate's output did not go on: %q", after)
	}
	must(t, d.DestroyCell("orphan"))
	wantCells(t, d)
}
