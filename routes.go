package realtime

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// Every route of the plugin is mounted here.

// Register mounts the generic routes on rg, for every collection:
//
//	GET  /:collection/subscribe       collection stream (SSE)
//	GET  /:collection/:id/subscribe   record stream (SSE)
//	GET  /:collection/:id/poll        long poll
//	POST /:collection/:id/events      publish (publish scope)
//	GET  /ws                          WebSocket (records, pushes, channels, presence)
//	POST /notify                      push to users (publish scope)
//	GET  /presence, /presence/:user   presence (publish scope)
//	GET  /channels/subscribe          channel pushes as SSE (?channels=…)
//	GET  /channels/:channel/history   a channel's buffered pushes
//	GET  /pushes/subscribe            the caller's pushes as SSE
//	GET  /pushes/poll                 the caller's pushes as a long poll
//	POST /acks                        an ack of a push received over HTTP
//
// The last nine are mounted once per group, whether by Register or by
// RegisterCollection (which may be called several times on one group);
// "channels" and "pushes" are therefore not usable as collection names
// with Register.
//
// gin's router does not backtrack: when the app has its own routes under rg
// such as GET /posts/:id, use RegisterCollection for those collections.
func (p *Plugin) Register(rg gin.IRoutes) {
	rg.GET("/:collection/subscribe", p.handleSubscribe("", false))
	rg.GET("/:collection/:id/subscribe", p.handleSubscribe("", true))
	rg.GET("/:collection/:id/poll", p.handlePoll(""))
	p.publishRoute(rg, http.MethodPost, "/:collection/:id/events", p.handlePublish(""))
	p.mountGroup(rg)
}

// RegisterCollection mounts the routes of Register for the named
// collections, next to the app's own routes (GET /posts/:id coexists with
// GET /posts/:id/subscribe), and the group's other routes once per group.
func (p *Plugin) RegisterCollection(rg gin.IRoutes, collections ...string) {
	p.mountGroup(rg)
	for _, name := range collections {
		base := "/" + name
		rg.GET(base+"/subscribe", p.handleSubscribe(name, false))
		rg.GET(base+"/:id/subscribe", p.handleSubscribe(name, true))
		rg.GET(base+"/:id/poll", p.handlePoll(name))
		p.publishRoute(rg, http.MethodPost, base+"/:id/events", p.handlePublish(name))
	}
}

// mountGroup adds the routes that do not name a collection to rg, once per
// group (Register and RegisterCollection may both be called, the latter
// several times).
func (p *Plugin) mountGroup(rg gin.IRoutes) {
	var key any = rg
	if g, ok := rg.(interface{ BasePath() string }); ok {
		key = g.BasePath()
	}
	p.mountMu.Lock()
	defer p.mountMu.Unlock()
	if p.mounted[key] {
		return
	}
	p.mounted[key] = true
	rg.GET("/ws", p.ws.handleWS)
	// The publish-scope API, with CORS for Config.CORSAllowedOrigins.
	p.publishRoute(rg, http.MethodPost, "/notify", p.handleNotify)
	p.publishRoute(rg, http.MethodGet, "/presence", p.handlePresence)
	p.publishRoute(rg, http.MethodGet, "/presence/:user", p.handleUserPresence)
	rg.GET("/channels/subscribe", p.handleChannelSubscribe)
	rg.GET("/channels/:channel/history", p.handleChannelHistory)
	rg.GET("/pushes/subscribe", p.handlePushSubscribe)
	rg.GET("/pushes/poll", p.handlePushPoll)
	rg.POST("/acks", p.handleAck)
}

// publishRoute mounts a publish endpoint (publish scope: record events,
// notify, presence) on rg, with CORS for Config.CORSAllowedOrigins: the
// preflight (OPTIONS) is answered for allowed origins, a request from
// another origin is refused (403, no CORS headers).
func (p *Plugin) publishRoute(rg gin.IRoutes, method, path string, h gin.HandlerFunc) {
	if p.cors == nil {
		rg.Handle(method, path, h)
		return
	}
	rg.Handle(method, path, p.cors, h)
	rg.OPTIONS(path, p.cors)
}
