package shim

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
)

// syncBuffer is a log sink that caronte's goroutines may write to while the
// test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var phaseLine = regexp.MustCompile(`msg="phase timing" .*ms=[0-9.]+ phase="?([a-z ]+)"?`)

// phasesIn lists the phases logged, in order, leaving out "shim start"
// (logged only by the first timed Create of the process).
func phasesIn(logs string) []string {
	var out []string
	for _, m := range phaseLine.FindAllStringSubmatch(logs, -1) {
		if m[1] != "shim start" {
			out = append(out, m[1])
		}
	}
	return out
}

// The phase log `make bench` reads: at debug level every phase of a
// partition's start is logged once, in order; at info level nothing is.
func TestPhaseTimingLog(t *testing.T) {
	all := []string{"mount", "prepare", "plan", "create", "load", "caronte", "start", "first console byte"}
	for _, tc := range []struct {
		name  string
		level logrus.Level
		want  []string
	}{
		{"debug level logs every phase in order", logrus.DebugLevel, all},
		{"info level times nothing", logrus.InfoLevel, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			var sink syncBuffer
			l := logrus.New()
			l.SetOutput(&sink)
			l.SetLevel(tc.level)
			ctx := log.WithLogger(context.Background(), logrus.NewEntry(l))
			bundle := h.bundle(t, "t1", partitionImage(inmateForever), "")
			out := newStdout(t, bundle)
			if _, err := h.svc.Create(ctx, &taskv3.CreateTaskRequest{ID: "t1", Bundle: bundle, Stdout: out.path}); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if _, err := h.svc.Start(ctx, &taskv3.StartRequest{ID: "t1"}); err != nil {
				t.Fatalf("Start: %v", err)
			}
			// The inmate prints "up" at once; wait for the pump to read it.
			deadline := time.Now().Add(5 * time.Second)
			for tc.want != nil && len(phasesIn(sink.String())) < len(tc.want) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if _, err := h.svc.Kill(ctx, &taskv3.KillRequest{ID: "t1", Signal: 9}); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			if _, err := h.svc.Wait(wctx, &taskv3.WaitRequest{ID: "t1"}); err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if _, err := h.svc.Delete(ctx, &taskv3.DeleteRequest{ID: "t1"}); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			out.wait(t)
			if got := phasesIn(sink.String()); strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("phases logged %q, want %q\nlog:\n%s", got, tc.want, sink.String())
			}
		})
	}
}
