package realtime

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
)

// pollResponse is the long poll's answer.
type pollResponse struct {
	Events []pollEvent `json:"events"`
}

// handlePoll serves GET …/:id/poll: the selection of the record stream as
// JSON, waiting up to timeout seconds for something to send.
func (p *Plugin) handlePoll(collection string) gin.HandlerFunc {
	return func(c *gin.Context) {
		ident, ok := p.identify(c)
		if !ok {
			return
		}
		key, err := routeKey(c, ident, collection, true)
		if err != nil {
			writeError(c, err)
			return
		}
		wait := p.cfg.PollTimeout
		if v := c.Query("timeout"); v != "" {
			secs, err := strconv.ParseFloat(v, 64)
			if err != nil || secs < 0 || math.IsNaN(secs) || math.IsInf(secs, 0) {
				writeError(c, badRequest("timeout must be a number of seconds"))
				return
			}
			// Cap before converting: a float beyond int64 nanoseconds
			// converts to a negative Duration (no wait at all).
			wait = p.cfg.PollMaxTimeout
			if secs < wait.Seconds() {
				wait = time.Duration(secs * float64(time.Second))
			}
		}
		lastID := c.GetHeader("Last-Event-ID")
		if lastID == "" {
			lastID = c.Query("lastEventId")
		}
		s := newSubscriber(p, key, ident, viaHandler)
		s.poll = true
		if !p.track(s) {
			writeError(c, fmt.Errorf("poll: %w", ErrClosed))
			return
		}
		defer p.untrack(s)
		first, base, skip, err := p.prepare(c.Request.Context(), s, lastID)
		if err != nil {
			p.logFailure("poll", err)
			writeError(c, err)
			return
		}
		s.release(first, base, skip)
		timer := time.NewTimer(wait)
		select {
		case <-s.wake:
		case <-s.done:
		case <-timer.C:
		case <-c.Request.Context().Done():
		}
		timer.Stop()
		batch, _ := s.take()
		s.close(errClientGone)
		p.detach(s)
		evs, _ := s.filter(p.baseCtx, batch, nil)
		resp := pollResponse{Events: make([]pollEvent, 0, len(evs))}
		for _, ev := range evs {
			if ev == keepaliveEvent {
				continue
			}
			resp.Events = append(resp.Events, pollEvent{Event: ev.Type, ID: ev.ETag, Data: ev.Data})
		}
		c.Header("Cache-Control", "no-store")
		c.JSON(http.StatusOK, resp)
	}
}
