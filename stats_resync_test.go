package realtime

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	var l logLimiter
	now := time.Unix(1000, 0)
	for i := range gapLogBurst {
		if ok, sup := l.allow(now); !ok || sup != 0 {
			t.Fatalf("line %d: %v %d", i, ok, sup)
		}
	}
	for range 5 {
		if ok, _ := l.allow(now); ok {
			t.Fatal("a line over the burst was let through")
		}
	}
	if ok, sup := l.allow(now.Add(time.Second)); !ok || sup != 5 {
		t.Errorf("next second: %v, suppressed %d, want 5", ok, sup)
	}
}
