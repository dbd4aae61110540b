package redisbroker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ginrealtime/realtime"
	"github.com/ginrealtime/realtime/internal/strictjson"
)

// requestField is the field of a queue entry that holds the request's JSON.
const requestField = "request"

// Request types.
const (
	requestPublish = "publish"
	requestNotify  = "notify"
)

// queueRequest is the JSON of one queued request (see the package
// documentation): a record event (PROTOCOL.md §5 with tenant, collection
// and id) or a push (§7 with tenant).
type queueRequest struct {
	Type   string `json:"type"`
	Tenant string `json:"tenant"`
	// Both.
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	// publish.
	Collection *string `json:"collection"`
	ID         *string `json:"id"`
	ETag       *string `json:"etag"`
	// notify.
	Users        []string        `json:"users"`
	ExcludeUsers []string        `json:"excludeUsers"`
	Channel      *string         `json:"channel"`
	AwaitAcks    json.RawMessage `json:"awaitAcks"`
}

// request is a parsed, checked request: exactly one of pub and note is set.
type request struct {
	pub  *realtime.Publication
	note *realtime.Notification
	// lane groups the requests of a batch that are processed one after
	// the other, in stream order; "" is a lane of its own.
	lane string
}

// badRequestError is a request the queue rejects before handing it to the
// target; it wraps realtime.ErrBadRequest like the target's own refusals.
type badRequestError struct{ msg string }

func (e *badRequestError) Error() string { return "bad request: " + e.msg }
func (e *badRequestError) Unwrap() error { return realtime.ErrBadRequest }

func badQueued(format string, args ...any) error {
	return &badRequestError{msg: fmt.Sprintf(format, args...)}
}

// parseRequest reads the request of an entry's fields. Its checks are those
// of the HTTP endpoints; the target checks the rest (event names, ETags,
// channels) as it does for them.
func parseRequest(values map[string]any, maxBytes int) (request, error) {
	raw, ok := values[requestField]
	if !ok {
		return request{}, badQueued("no %q field", requestField)
	}
	s, ok := raw.(string)
	if !ok {
		return request{}, badQueued("field %q is not a string", requestField)
	}
	if len(s) > maxBytes {
		return request{}, badQueued("request over %d bytes", maxBytes)
	}
	// The plugin's one strict decoder (PROTOCOL.md §1): an unknown field
	// or a wrong type is refused, the reason naming the field.
	var r queueRequest
	if err := strictjson.Decode([]byte(s), &r); err != nil {
		return request{}, badQueued("request: %s", err.Error())
	}
	if r.Tenant == "" {
		r.Tenant = realtime.DefaultTenant
	}
	if err := checkName("tenant", r.Tenant); err != nil {
		return request{}, err
	}
	switch r.Type {
	case requestPublish:
		switch {
		case r.Users != nil, r.ExcludeUsers != nil, r.Channel != nil, r.AwaitAcks != nil:
			return request{}, badQueued("users, excludeUsers, channel and awaitAcks do not apply to a publish request")
		case r.Collection == nil || r.ID == nil:
			return request{}, badQueued("a publish request needs collection and id")
		}
		for _, f := range [][2]string{{"collection", *r.Collection}, {"id", *r.ID}} {
			if err := checkName(f[0], f[1]); err != nil {
				return request{}, err
			}
		}
		pub := &realtime.Publication{
			Tenant: r.Tenant, Collection: *r.Collection, ID: *r.ID, Event: r.Event, Data: r.Data,
		}
		if r.ETag != nil { // "" computes it, like the HTTP endpoint
			pub.ETag = *r.ETag
		}
		return request{pub: pub, lane: "p\x00" + r.Tenant + "\x00" + pub.Collection + "\x00" + pub.ID}, nil
	case requestNotify:
		switch {
		case r.Collection != nil, r.ID != nil, r.ETag != nil:
			return request{}, badQueued("collection, id and etag do not apply to a notify request")
		case r.AwaitAcks != nil && !bytes.Equal(r.AwaitAcks, []byte("null")):
			return request{}, badQueued("awaitAcks is not allowed on the queue (nobody waits for the answer)")
		}
		n := &realtime.Notification{
			Tenant: r.Tenant, Users: r.Users, ExcludeUsers: r.ExcludeUsers, Event: r.Event, Data: r.Data,
		}
		req := request{note: n}
		if r.Channel != nil {
			n.Channel = *r.Channel
			if n.Channel != "" {
				req.lane = "n\x00" + r.Tenant + "\x00" + n.Channel
			}
		}
		return req, nil
	case "":
		return request{}, badQueued("type is required (publish or notify)")
	default:
		return request{}, badQueued("unknown type %q (want publish or notify)", clip(r.Type))
	}
}

// checkName applies the HTTP endpoints' rule for tenants, collections and
// record ids: 1 to 512 bytes without CR, LF or NUL.
func checkName(what, s string) error {
	if s == "" || len(s) > 512 || strings.ContainsAny(s, "\r\n\x00") {
		return badQueued("invalid %s", what)
	}
	return nil
}

// clip shortens a value echoed in a dead letter's reason.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
