package realtime

// The record stream over HTTP/2 and over HTTP/1.1 without hijacking (both
// written by the handler goroutine), next to the hijacked HTTP/1.1 stream.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestStreamTransports(t *testing.T) {
	modes := []struct {
		name          string
		tls           bool
		disableHijack bool
		proto         int
	}{
		{"HTTP/2", true, false, 2},
		{"HTTP/1.1 without hijack", false, true, 1},
		{"HTTP/1.1 hijacked", false, false, 1},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			store := newRecordStore()
			rt, srv := newPluginServer(t, Config{Loader: store.Load, DisableHijack: m.disableHijack}, nil,
				func(s *httptest.Server) {
					if m.tls {
						s.EnableHTTP2 = true
						s.StartTLS()
						return
					}
					s.Start()
				})
			e := &env{rt: rt, srv: srv, store: store, tok: userToken(t, "u1")}
			client := srv.Client()
			if !m.tls {
				client = &http.Client{Transport: &http.Transport{}}
				defer client.CloseIdleConnections()
			}

			v1 := e.put(t, "42", 1)
			s := openStream(t, client, recordURL(srv, "42"), e.tok, nil)
			if s.resp.ProtoMajor != m.proto {
				t.Fatalf("protocol %s, want HTTP/%d", s.resp.Proto, m.proto)
			}
			for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
				if got := s.resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			expectFrames(t, s, frame{EventSnapshot, v1, recJSON("42", 1)})
			v2 := e.put(t, "42", 2)
			v3 := e.put(t, "42", 3)
			expectFrames(t, s, frame{EventChanged, v2, recJSON("42", 2)}, frame{EventChanged, v3, recJSON("42", 3)})

			// Resume from v1 on the same client (one HTTP/2 connection).
			r := openStream(t, client, recordURL(srv, "42"), e.tok, http.Header{"Last-Event-ID": {v1}})
			expectFrames(t, r, frame{EventChanged, v2, ""}, frame{EventChanged, v3, ""})
			// A miss: resync, then the snapshot.
			m2 := openStream(t, client, recordURL(srv, "42"), e.tok, http.Header{"Last-Event-ID": {`"gone"`}})
			expectFrames(t, m2, resyncFrame, frame{EventSnapshot, v3, recJSON("42", 3)})

			// Many streams of different records side by side.
			others := make([]*stream, 8)
			for i := range others {
				id := fmt.Sprint("o", i)
				v := e.put(t, id, 0)
				others[i] = openStream(t, client, recordURL(srv, id), e.tok, nil)
				expectFrames(t, others[i], frame{EventSnapshot, v, recJSON(id, 0)})
			}
			v4 := e.put(t, "42", 4)
			for _, x := range []*stream{s, r, m2} {
				expectFrames(t, x, frame{EventChanged, v4, recJSON("42", 4)})
			}
			for i, o := range others {
				id := fmt.Sprint("o", i)
				expectFrames(t, o, frame{EventChanged, e.put(t, id, 1), recJSON(id, 1)})
			}

			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			if err := rt.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			for i, x := range append([]*stream{s, r, m2}, others...) {
				if fs := readToEnd(t, x.fr); len(fs) != 0 {
					t.Errorf("stream %d: frames %v after Close", i, framesOf(fs))
				}
			}
			if n := rt.Subscribers(); n != 0 {
				t.Errorf("%d subscribers after Close", n)
			}
		})
	}
}

// TestHandlerStreamClientLeaves: a client leaving an HTTP/2 or unhijacked
// stream frees its subscriber.
func TestHandlerStreamClientLeaves(t *testing.T) {
	for _, h2 := range []bool{true, false} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			rt, srv := newPluginServer(t, Config{DisableHijack: !h2}, nil, func(s *httptest.Server) {
				if h2 {
					s.EnableHTTP2 = true
					s.StartTLS()
					return
				}
				s.Start()
			})
			client := srv.Client()
			if !h2 {
				client = &http.Client{Transport: &http.Transport{}}
				defer client.CloseIdleConnections()
			}
			tok := userToken(t, "u1")
			a := openStream(t, client, recordURL(srv, "42"), tok, nil)
			b := openStream(t, client, recordURL(srv, "42"), tok, nil)
			waitFor(t, "two subscribers", func() bool { return rt.Subscribers() == 2 })
			a.close()
			waitFor(t, "the subscriber that left to be freed", func() bool { return rt.Subscribers() == 1 })
			etag, err := rt.Changed(context.Background(), "posts", "42", rec{ID: "42", N: 1})
			if err != nil {
				t.Fatal(err)
			}
			expectFrames(t, b, frame{EventChanged, etag, ""})
		})
	}
}
