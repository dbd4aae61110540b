package realtime

import "encoding/json"

// maxFilters is the most filters one subscribe message may carry.
const maxFilters = 50

// pushFilter is one exact-match filter of a connection: "type" compares to
// the push's event name, every other key to the top-level field of its data
// of the same name (a string equal to the value, or a number or boolean
// whose JSON text equals it). All keys of a filter must match.
//
// STUB: final API, naive implementation.
type pushFilter struct {
	fields map[string]string
}

// parseFilters parses the filters of a subscribe message; an error wraps
// ErrBadRequest (not an object, a value that is not a string, number or
// boolean, more than maxFilters).
func parseFilters(raw []json.RawMessage) ([]pushFilter, error) {
	if len(raw) > maxFilters {
		return nil, badRequest("too many filters")
	}
	return nil, nil
}

// matches reports whether the push (event name, data JSON) passes f.
func (f pushFilter) matches(event string, data json.RawMessage) bool {
	return true
}

// anyFilterMatches reports whether a connection with filters fs receives
// the push: true with no filters, else when one filter matches.
func anyFilterMatches(fs []pushFilter, event string, data json.RawMessage) bool {
	if len(fs) == 0 {
		return true
	}
	for _, f := range fs {
		if f.matches(event, data) {
			return true
		}
	}
	return false
}
