package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Event topics, as containerd's runtime package names them.
const (
	topicTaskCreate = "/tasks/create"
	topicTaskStart  = "/tasks/start"
	topicTaskExit   = "/tasks/exit"
	topicTaskDelete = "/tasks/delete"
)

// publisher queues an event for containerd. It never blocks: the service
// calls it while holding a task's lock, which is what keeps one task's
// events in order.
type publisher interface {
	publish(topic string, event proto.Message)
}

// Limits of the forwarder, the same as containerd's own shim publisher.
const (
	maxQueuedEvents  = 2048
	forwardAttempts  = 5
	forwardTimeout   = 5 * time.Second
	forwardBackoff   = 100 * time.Millisecond // times the attempt number
	forwardDialLimit = 2 * time.Second
	// While containerd's socket refuses connections (the daemon is
	// restarting) events wait, in order, instead of being dropped after
	// forwardAttempts, so that an exit during the restart still reaches
	// it (containerd#6771); a dial is retried every forwardOutagePoll, for
	// at most forwardOutageLimit.
	forwardOutagePoll  = time.Second
	forwardOutageLimit = 10 * time.Minute
)

// namespaceHeader carries the namespace in ttrpc metadata, as containerd's
// namespaces package does; the daemon's Forward handler also reads the
// envelope's namespace.
const namespaceHeader = "containerd-namespace-ttrpc"

// forwarder sends events to containerd's Events.Forward on its ttrpc socket
// (TTRPC_ADDRESS), one at a time in the order they were published, from a
// single goroutine. A failed send is retried with a linear back-off and
// then dropped with an error in the log, so that one lost event cannot hold
// back every later one. While containerd cannot be reached at all (it is
// restarting), events are held instead, up to forwardOutageLimit.
type forwarder struct {
	address   string // containerd's ttrpc socket path; empty drops every event
	namespace string
	wake      chan struct{} // capacity 1: "the queue changed"
	done      chan struct{} // closed when run returns
	stop      context.CancelFunc
	ctx       context.Context // cancelled by close when the drain deadline passes

	mu     sync.Mutex
	queue  []*types.Envelope // guarded by mu
	closed bool              // guarded by mu: no more events are accepted

	// Only the run goroutine uses these.
	client *ttrpc.Client
	events eventsapi.TTRPCEventsService
}

// newForwarder starts the forwarding goroutine. address may carry a
// unix:// prefix.
func newForwarder(ctx context.Context, address, namespace string) *forwarder {
	ctx, stop := context.WithCancel(ctx)
	f := &forwarder{
		address:   strings.TrimPrefix(address, "unix://"),
		namespace: namespace,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		stop:      stop,
		ctx:       ctx,
	}
	go f.run()
	return f
}

func (f *forwarder) publish(topic string, event proto.Message) {
	payload, err := typeurl.MarshalAnyToProto(event)
	if err != nil {
		log.G(f.ctx).WithError(err).WithField("topic", topic).Error("encode event; event lost")
		return
	}
	env := &types.Envelope{
		Timestamp: timestamppb.Now(),
		Namespace: f.namespace,
		Topic:     topic,
		Event:     payload,
	}
	f.mu.Lock()
	switch {
	case f.closed:
		f.mu.Unlock()
		log.G(f.ctx).WithField("topic", topic).Error("publish event after shutdown; event lost")
		return
	case len(f.queue) >= maxQueuedEvents:
		f.mu.Unlock()
		log.G(f.ctx).WithField("topic", topic).Error("event queue full; event lost")
		return
	}
	f.queue = append(f.queue, env)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// close stops accepting events and waits until the queue is drained or ctx
// ends; whatever is left then is dropped.
func (f *forwarder) close(ctx context.Context) {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		f.stop()
		<-f.done
	}
}

func (f *forwarder) run() {
	defer close(f.done)
	defer f.disconnect()
	for {
		f.mu.Lock()
		var env *types.Envelope
		if len(f.queue) > 0 {
			env = f.queue[0]
			f.queue[0] = nil
			f.queue = f.queue[1:]
		}
		closed := f.closed
		f.mu.Unlock()

		if env == nil {
			if closed {
				return
			}
			select {
			case <-f.wake:
			case <-f.ctx.Done():
				return
			}
			continue
		}
		if f.ctx.Err() != nil {
			f.dropAll(env)
			return
		}
		if err := f.forward(env); err != nil {
			log.G(f.ctx).WithError(err).WithField("topic", env.GetTopic()).Error("forward event to containerd; event lost")
		}
	}
}

// forward sends one envelope, retrying forwardAttempts times, and for as
// long as forwardOutageLimit while containerd's socket cannot be dialled.
func (f *forwarder) forward(env *types.Envelope) error {
	if f.address == "" {
		return errors.New("no TTRPC_ADDRESS to forward events to")
	}
	var downSince time.Time
	for attempt := 1; ; {
		err := f.send(env)
		if err == nil {
			if !downSince.IsZero() {
				log.G(f.ctx).WithField("down_for", time.Since(downSince).Round(time.Millisecond)).
					Info("containerd is reachable again; forwarding the held events")
			}
			return nil
		}
		f.disconnect()
		wait := time.Duration(attempt) * forwardBackoff
		var de *dialError
		if errors.As(err, &de) {
			if downSince.IsZero() {
				downSince = time.Now()
				log.G(f.ctx).WithError(err).WithField("topic", env.GetTopic()).
					Warn("containerd is unreachable; holding events until it is back")
			}
			if time.Since(downSince) > forwardOutageLimit {
				return fmt.Errorf("containerd unreachable for %s: %w", forwardOutageLimit, err)
			}
			wait = forwardOutagePoll
		} else {
			if attempt == forwardAttempts {
				return fmt.Errorf("after %d attempts: %w", forwardAttempts, err)
			}
			attempt++
		}
		select {
		case <-time.After(wait):
		case <-f.ctx.Done():
			return fmt.Errorf("%w (gave up at shutdown)", err)
		}
	}
}

// dialError is a failure to reach containerd's socket at all.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial containerd's ttrpc socket: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func (f *forwarder) send(env *types.Envelope) error {
	if f.client == nil {
		conn, err := net.DialTimeout("unix", f.address, forwardDialLimit)
		if err != nil {
			return &dialError{err: err}
		}
		f.client = ttrpc.NewClient(conn)
		f.events = eventsapi.NewTTRPCEventsClient(f.client)
	}
	ctx, cancel := context.WithTimeout(f.ctx, forwardTimeout)
	defer cancel()
	ctx = ttrpc.WithMetadata(ctx, ttrpc.MD{namespaceHeader: []string{f.namespace}})
	_, err := f.events.Forward(ctx, &eventsapi.ForwardRequest{Envelope: env})
	return err
}

// dropAll gives up on head and everything still queued, in one log line.
func (f *forwarder) dropAll(head *types.Envelope) {
	f.mu.Lock()
	n := 1 + len(f.queue)
	f.queue = nil
	f.mu.Unlock()
	log.G(f.ctx).WithField("first_topic", head.GetTopic()).WithField("events", n).
		Error("shim exiting before containerd took its events; events lost")
}

func (f *forwarder) disconnect() {
	if f.client != nil {
		f.client.Close()
		f.client, f.events = nil, nil
	}
}
