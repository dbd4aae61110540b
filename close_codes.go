package realtime

import "time"

// WebSocket close codes the plugin sends (PROTOCOL.md §6). Every close is
// a close frame written after the frames already written, then the
// connection is read (and what comes discarded) until the client answers
// or closeGrace passes, so that the client reads the code: closing a
// socket with unread input would reset it, and the client would see 1006.
const (
	// closeProtocolError (1002): a frame the RFC forbids (unmasked,
	// reserved bits, a bad length or opcode).
	closeProtocolError = 1002
	// closeGoingAway (1001): the plugin is closing.
	closeGoingAway = 1001
	// closeInvalidPayload (1007): a text frame that is not valid UTF-8.
	closeInvalidPayload = 1007
	// closePolicyViolation (1008): the token expired, or the client sent
	// messages faster than Config.WSMessageRate allows.
	closePolicyViolation = 1008
	// closeMessageTooBig (1009): a client frame over WSMaxMessageBytes
	// (written by gorilla's reader).
	closeMessageTooBig = 1009
	// closeTryAgainLater (1013): the connection could not keep up (its
	// queue overflowed); the client reconnects and resumes.
	closeTryAgainLater = 1013

	// The refusals of an upgrade (ws_refusal.go), each after one error
	// frame on a socket that was never registered: a browser cannot read
	// the status of a refused handshake, but it reads these.

	// closeUnauthorized (4401): missing or bad credentials (401).
	closeUnauthorized = 4401
	// closeForbidden (4403): an identity refused (403).
	closeForbidden = 4403
	// closeTooManyConnections (4429): over a connection cap (429).
	closeTooManyConnections = 4429
)

// closeGrace is how long the server keeps reading after its close frame,
// waiting for the client's, before it closes the TCP connection.
const closeGrace = 2 * time.Second
