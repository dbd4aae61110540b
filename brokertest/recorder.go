package brokertest

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
)

// WaitTimeout bounds every wait of a Recorder. It is a deadline for a
// broken implementation, never a timing assertion: a slow engine may raise
// it.
var WaitTimeout = 30 * time.Second

// Delivery is one Node.Deliver call.
type Delivery struct {
	Key   realtime.StreamKey
	Entry realtime.Entry
}

// Message is one Node.Message call. Msg is kept as handed over (not copied),
// so a broker that reuses the slice after the call is caught.
type Message struct {
	Topic string
	Msg   []byte
}

// StreamCall is one Deliver or Gap call about a stream.
type StreamCall struct {
	// Gap is set for a Gap call; else the call is a Deliver of Entry.
	Gap   bool
	Entry realtime.Entry
}

func (c StreamCall) String() string {
	if c.Gap {
		return "gap"
	}
	if c.Entry.Event == nil {
		return fmt.Sprintf("deliver@%d", c.Entry.Seq)
	}
	return fmt.Sprintf("deliver %s@%d", c.Entry.Event.ETag, c.Entry.Seq)
}

// Recorder is a realtime.Node that records every call, for tests of a
// Broker. Its methods never block. It also watches the Node contract: two
// Deliver calls of one stream at the same time, or a stream's positions not
// strictly increasing, are recorded as Problems.
type Recorder struct {
	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every call
	calls      int
	deliveries []Delivery
	messages   []Message
	gaps       []realtime.StreamKey
	streams    map[realtime.StreamKey][]StreamCall // Deliver and Gap calls, in call order
	health     []error
	last       map[realtime.StreamKey]uint64
	inDeliver  map[realtime.StreamKey]int
	problems   []string
}

var _ realtime.Node = (*Recorder)(nil)

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{
		changed:   make(chan struct{}),
		streams:   make(map[realtime.StreamKey][]StreamCall),
		last:      make(map[realtime.StreamKey]uint64),
		inDeliver: make(map[realtime.StreamKey]int),
	}
}

func (r *Recorder) signalLocked() {
	r.calls++
	close(r.changed)
	r.changed = make(chan struct{})
}

// Deliver implements realtime.Node.
func (r *Recorder) Deliver(key realtime.StreamKey, e realtime.Entry) {
	r.mu.Lock()
	r.inDeliver[key]++
	if r.inDeliver[key] > 1 {
		r.problems = append(r.problems, fmt.Sprintf("two Deliver calls of %v at the same time", key))
	}
	if last, ok := r.last[key]; ok && e.Seq <= last {
		r.problems = append(r.problems, fmt.Sprintf("Deliver of %v at position %d after %d", key, e.Seq, last))
	}
	r.last[key] = e.Seq
	if e.Event == nil {
		r.problems = append(r.problems, fmt.Sprintf("Deliver of %v at position %d with a nil event", key, e.Seq))
	}
	r.mu.Unlock()

	runtime.Gosched() // widen the window in which an overlapping call is seen

	r.mu.Lock()
	r.inDeliver[key]--
	r.deliveries = append(r.deliveries, Delivery{Key: key, Entry: e})
	r.streams[key] = append(r.streams[key], StreamCall{Entry: e})
	r.signalLocked()
	r.mu.Unlock()
}

// Gap implements realtime.Node.
func (r *Recorder) Gap(key realtime.StreamKey) {
	r.mu.Lock()
	r.gaps = append(r.gaps, key)
	r.streams[key] = append(r.streams[key], StreamCall{Gap: true})
	r.signalLocked()
	r.mu.Unlock()
}

// Message implements realtime.Node.
func (r *Recorder) Message(topic string, msg []byte) {
	r.mu.Lock()
	r.messages = append(r.messages, Message{Topic: topic, Msg: msg})
	r.signalLocked()
	r.mu.Unlock()
}

// Health implements realtime.Node.
func (r *Recorder) Health(err error) {
	r.mu.Lock()
	r.health = append(r.health, err)
	r.signalLocked()
	r.mu.Unlock()
}

// Calls returns the number of Node calls so far (all methods).
func (r *Recorder) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// Deliveries returns every delivery so far, in call order.
func (r *Recorder) Deliveries() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.deliveries...)
}

// DeliveriesOf returns the entries delivered for key so far, in call order.
func (r *Recorder) DeliveriesOf(key realtime.StreamKey) []realtime.Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deliveriesOfLocked(key)
}

func (r *Recorder) deliveriesOfLocked(key realtime.StreamKey) []realtime.Entry {
	var out []realtime.Entry
	for _, d := range r.deliveries {
		if d.Key == key {
			out = append(out, d.Entry)
		}
	}
	return out
}

// Messages returns every message so far, in call order.
func (r *Recorder) Messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.messages...)
}

// MessagesOf returns the messages of topic so far, in call order.
func (r *Recorder) MessagesOf(topic string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.messagesOfLocked(topic)
}

func (r *Recorder) messagesOfLocked(topic string) [][]byte {
	var out [][]byte
	for _, m := range r.messages {
		if m.Topic == topic {
			out = append(out, m.Msg)
		}
	}
	return out
}

// Gaps returns the keys reported by Gap so far.
func (r *Recorder) Gaps() []realtime.StreamKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]realtime.StreamKey(nil), r.gaps...)
}

// StreamCalls returns the Deliver and Gap calls about key so far, in call
// order: a Gap is before the deliveries that followed it.
func (r *Recorder) StreamCalls(key realtime.StreamKey) []StreamCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]StreamCall(nil), r.streams[key]...)
}

// HealthReports returns the arguments of every Health call so far.
func (r *Recorder) HealthReports() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.health...)
}

// Problems returns the breaches of the Node contract seen so far.
func (r *Recorder) Problems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.problems...)
}

// WaitFor waits until cond (called with the Recorder locked: it must not
// call the Recorder's methods) holds, and fails t after WaitTimeout.
func (r *Recorder) WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(WaitTimeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("gave up after %v waiting for %s", WaitTimeout, what)
		}
	}
}

// WaitDeliveries waits until at least n events of key were delivered and
// returns all of key's deliveries.
func (r *Recorder) WaitDeliveries(t testing.TB, key realtime.StreamKey, n int) []realtime.Entry {
	t.Helper()
	var got []realtime.Entry
	r.WaitFor(t, fmt.Sprintf("%d deliveries of %v", n, key), func() bool {
		got = r.deliveriesOfLocked(key)
		return len(got) >= n
	})
	return got
}

// WaitMessages waits until at least n messages of topic were received and
// returns all of topic's messages.
func (r *Recorder) WaitMessages(t testing.TB, topic string, n int) [][]byte {
	t.Helper()
	var got [][]byte
	r.WaitFor(t, fmt.Sprintf("%d messages on %q", n, topic), func() bool {
		got = r.messagesOfLocked(topic)
		return len(got) >= n
	})
	return got
}
