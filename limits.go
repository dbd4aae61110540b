package realtime

import (
	"fmt"
	"sync"

	"github.com/gin-gonic/gin"
)

// ipSlots counts the open connections of each client IP for
// Config.MaxConnsPerIP: SSE streams, long polls and WebSockets together.
// A slot is taken when a connection is admitted and given back exactly
// once when it ends (untrack, or a WebSocket's onDisconnect). It is used
// once per connection, never per frame.
type ipSlots struct {
	max int // 0: no cap, nothing is counted
	mu  sync.Mutex
	n   map[string]int
}

func newIPSlots(max int) *ipSlots { return &ipSlots{max: max, n: make(map[string]int)} }

// take takes a slot for the client of c. It returns the key to give back
// ("" when nothing is counted), or ErrTooManyConnections.
func (s *ipSlots) take(c *gin.Context) (string, error) {
	if s.max <= 0 {
		return "", nil
	}
	ip := c.ClientIP()
	if ip == "" {
		ip = "?" // an address gin cannot parse: one shared slot count
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[ip] >= s.max {
		return "", fmt.Errorf("client %s: %w", ip, ErrTooManyConnections)
	}
	s.n[ip]++
	return ip, nil
}

// release gives back a slot taken by take (key "" is nothing).
func (s *ipSlots) release(key string) {
	if key == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.n[key] - 1; n > 0 {
		s.n[key] = n
	} else {
		delete(s.n, key)
	}
}

// count returns the slots held by key (tests).
func (s *ipSlots) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[key]
}

// admit admits the connection c of the request of gc: a slot of its
// client IP, then tracked (p.track), the slot given back by untrack. It
// returns ErrTooManyConnections or ErrClosed (nothing held then).
func (p *Plugin) admit(gc *gin.Context, c *conn) error {
	key, err := p.ips.take(gc)
	if err != nil {
		return err
	}
	if !p.trackSlot(c, key) {
		p.ips.release(key)
		return ErrClosed
	}
	return nil
}
