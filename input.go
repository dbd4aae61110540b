package realtime

import (
	"github.com/gin-gonic/gin"
	"github.com/ginrealtime/realtime/internal/strictjson"
)

// Strict inputs (PROTOCOL.md §1): every JSON object the plugin reads — a
// request body, a WebSocket message, a queued request (redisbroker) — is
// decoded by one decoder (internal/strictjson) that refuses unknown
// fields, keys spelt otherwise than the contract's, wrong types and data
// after the object, naming the field at fault: `unknown field
// "exclude_users"`, `field "users" must be an array of strings`. Nothing
// is published or changed on a refused input.

// decodeInput decodes one JSON object of client input into dst (a pointer
// to a struct); an error wraps ErrBadRequest, its message names the field.
func decodeInput(data []byte, dst any) error {
	if err := strictjson.Decode(data, dst); err != nil {
		return badRequest(err.Error())
	}
	return nil
}

// decodeBody reads c's JSON body, capped at MaxBodyBytes, into dst. On
// failure it has answered (413, 400) and returns false.
func (p *Plugin) decodeBody(c *gin.Context, op string, dst any) bool {
	body, err := p.readBody(c, op)
	if err != nil {
		writeError(c, err)
		return false
	}
	if err := decodeInput(body, dst); err != nil {
		writeError(c, err)
		return false
	}
	return true
}
