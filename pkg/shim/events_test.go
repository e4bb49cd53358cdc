package shim

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// recorder is a publisher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	topics []string
	events []proto.Message
}

func (r *recorder) publish(topic string, ev proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, topic)
	r.events = append(r.events, ev)
}

func (r *recorder) snapshot() ([]string, []proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.topics...), append([]proto.Message(nil), r.events...)
}

// fakeEvents plays containerd's ttrpc Events service.
type fakeEvents struct {
	mu        sync.Mutex
	envelopes []*eventsapi.ForwardRequest
	failures  int // the next n Forward calls fail
	namespace []string
}

func (f *fakeEvents) Forward(ctx context.Context, r *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures > 0 {
		f.failures--
		return nil, context.DeadlineExceeded
	}
	md, _ := ttrpc.GetMetadata(ctx)
	f.namespace = append(f.namespace, md[namespaceHeader]...)
	f.envelopes = append(f.envelopes, r)
	return &emptypb.Empty{}, nil
}

func (f *fakeEvents) topics() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.envelopes {
		out = append(out, e.GetEnvelope().GetTopic())
	}
	return out
}

func serveFakeEvents(t *testing.T, path string, f *fakeEvents) {
	t.Helper()
	server, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	eventsapi.RegisterTTRPCEventsService(server, f)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go server.Serve(context.Background(), l)
	t.Cleanup(func() { server.Close() })
}

func TestForwarderKeepsOrderAndRetries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "containerd.sock.ttrpc")
	fake := &fakeEvents{failures: 2}
	serveFakeEvents(t, path, fake)

	f := newForwarder(context.Background(), "unix://"+path, "default")
	want := []string{topicTaskCreate, topicTaskStart, topicTaskExit, topicTaskDelete}
	for _, topic := range want {
		f.publish(topic, &eventstypes.TaskStart{ContainerID: "t1", Pid: 1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.close(ctx)

	got := fake.topics()
	if len(got) != len(want) {
		t.Fatalf("forwarded %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("forwarded %v, want %v", got, want)
		}
	}
	env := fake.envelopes[0].GetEnvelope()
	if env.GetNamespace() != "default" || env.GetTimestamp() == nil {
		t.Errorf("envelope namespace %q timestamp %v", env.GetNamespace(), env.GetTimestamp())
	}
	if fake.namespace[0] != "default" {
		t.Errorf("ttrpc namespace header %v", fake.namespace)
	}
	ev, err := typeurl.UnmarshalAny(env.GetEvent())
	if err != nil {
		t.Fatal(err)
	}
	if ts, ok := ev.(*eventstypes.TaskStart); !ok || ts.GetContainerID() != "t1" {
		t.Fatalf("event %#v", ev)
	}
	if env.GetEvent().GetTypeUrl() != "containerd.events.TaskStart" {
		t.Errorf("type url %q, want containerd.events.TaskStart (what 1.6 resolves)", env.GetEvent().GetTypeUrl())
	}
}

func TestForwarderNeverBlocksPublish(t *testing.T) {
	// Nothing listens: every send fails, slowly, with back-off.
	f := newForwarder(context.Background(), filepath.Join(t.TempDir(), "absent"), "default")
	start := time.Now()
	for i := 0; i < maxQueuedEvents+10; i++ {
		f.publish(topicTaskExit, &eventstypes.TaskExit{ContainerID: "t1"})
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("publishing took %v", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	f.close(ctx)
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("close took %v despite its deadline", d)
	}
}
