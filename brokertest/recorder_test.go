package brokertest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ginrealtime/realtime"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRecorderWaits(t *testing.T) {
	r := NewRecorder()
	key := recKey("1")
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 5 {
			r.Deliver(key, realtime.Entry{Seq: uint64(i + 1), Event: event(key, "e", time.Now())})
			r.Message("topic", []byte{byte(i)})
		}
	})
	if got := r.WaitDeliveries(t, key, 5); len(got) != 5 || got[4].Seq != 5 {
		t.Fatalf("deliveries %v", got)
	}
	if got := r.WaitMessages(t, "topic", 5); len(got) != 5 || got[4][0] != 4 {
		t.Fatalf("messages %v", got)
	}
	wg.Wait()
	if r.Calls() != 10 || len(r.Problems()) != 0 {
		t.Fatalf("%d calls, problems %q", r.Calls(), r.Problems())
	}
}

func TestRecorderProblems(t *testing.T) {
	r := NewRecorder()
	key := recKey("1")
	r.Deliver(key, realtime.Entry{Seq: 2, Event: event(key, "e", time.Now())})
	r.Deliver(recKey("2"), realtime.Entry{Seq: 1, Event: event(key, "e", time.Now())}) // another stream: fine
	r.Deliver(key, realtime.Entry{Seq: 2, Event: event(key, "e", time.Now())})
	r.Deliver(key, realtime.Entry{Seq: 3})
	if p := r.Problems(); len(p) != 2 {
		t.Fatalf("problems %q, want a repeated position and a nil event", p)
	}
}

type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = format
	panic(f)
}

func TestRecorderGivesUp(t *testing.T) {
	old := WaitTimeout
	WaitTimeout = 10 * time.Millisecond
	defer func() { WaitTimeout = old }()
	f := &fatalRecorder{TB: t}
	func() {
		defer func() {
			if recover() != f {
				t.Fatal("no failure")
			}
		}()
		NewRecorder().WaitDeliveries(f, recKey("1"), 1)
	}()
	if f.msg == "" {
		t.Fatal("no message")
	}
}

func TestRecorderStreamCalls(t *testing.T) {
	r := NewRecorder()
	key, other := recKey("1"), recKey("2")
	r.Deliver(key, realtime.Entry{Seq: 1, Event: event(key, "a", time.Now())})
	r.Gap(other)
	r.Gap(key)
	r.Deliver(key, realtime.Entry{Seq: 2, Event: event(key, "b", time.Now())})
	got := fmt.Sprint(r.StreamCalls(key))
	if want := `[deliver "a"@1 gap deliver "b"@2]`; got != want {
		t.Fatalf("StreamCalls %s, want %s", got, want)
	}
	if got := fmt.Sprint(r.StreamCalls(other)); got != "[gap]" {
		t.Fatalf("StreamCalls of the other stream %s", got)
	}
}
