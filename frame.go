package realtime

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// AppendSSEFrame appends one SSE frame (event, id, data lines, blank line) to
// dst. An empty event or id omits that line. Data is split at every CR, LF
// and CRLF into several data: lines, so no byte of data can start a field of
// its own; an event or id containing CR, LF or NUL is refused.
func AppendSSEFrame(dst []byte, event, id string, data []byte) ([]byte, error) {
	if strings.ContainsAny(event, "\r\n\x00") || strings.ContainsAny(id, "\r\n\x00") {
		return dst, errFrameField
	}
	if event != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, event...)
		dst = append(dst, '\n')
	}
	if id != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, id...)
		dst = append(dst, '\n')
	}
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			break
		}
		dst = append(dst, "data: "...)
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	dst = append(dst, "data: "...)
	dst = append(dst, data...)
	return append(dst, '\n', '\n'), nil
}

// retryFrame is the first bytes of every stream.
func retryFrame(d time.Duration) []byte {
	return []byte("retry: " + strconv.FormatInt(d.Milliseconds(), 10) + "\n\n")
}

var keepaliveFrame = []byte(": keepalive\n\n")
