package realtime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"
)

// maxFilters is the most filters one subscribe message may carry.
const maxFilters = 50

// pushFilter is one exact-match filter of a connection (PROTOCOL.md §6):
// "type" compares to the push's event name, every other key to the
// top-level field of its data of the same name. All keys of a filter must
// match (AND); a connection with several filters receives a push when one
// of them matches (OR, see anyFilterMatches).
//
// Comparison is exact, never numeric or case-insensitive:
//   - a string value matches a string field with the same decoded text
//     ({"k":"a\u0062"} matches data {"k":"ab"}), and nothing else;
//   - a number or boolean value matches a field of the same JSON kind whose
//     JSON text is identical to the filter's: {"n":1} matches data {"n":1}
//     but not {"n":"1"}, {"n":1.0} nor {"n":1e0}; {"b":true} matches
//     {"b":true} only;
//   - a key whose field is missing, null, an object or an array, or whose
//     data is not a JSON object, never matches.
//
// A pushFilter is immutable once parsed and safe for concurrent use.
type pushFilter struct {
	typ     string        // the "type" value when hasType
	hasType bool          // the filter has a "type" key
	fields  []filterField // the other keys, sorted by key; nil when none
}

// filterField is one non-"type" key of a filter.
type filterField struct {
	key string
	str bool   // val is a decoded string; else the JSON text of a number or boolean
	val string // decoded string, or compact JSON text ("1", "-2.5e3", "true")
}

// parseFilters parses the filters of a subscribe message: each element a
// JSON object with at least one key, whose values are strings, numbers or
// booleans (a "type" value a string), without duplicate keys; at most
// maxFilters elements. An error wraps ErrBadRequest and names the filter
// (by index from 0) and key at fault. No filters give (nil, nil).
func parseFilters(raw []json.RawMessage) ([]pushFilter, error) {
	if len(raw) > maxFilters {
		return nil, badRequest(fmt.Sprintf("too many filters: %d, at most %d per message", len(raw), maxFilters))
	}
	if len(raw) == 0 {
		return nil, nil
	}
	fs := make([]pushFilter, 0, len(raw))
	for i, r := range raw {
		f, err := parseFilter(r)
		if err != nil {
			return nil, badRequest(fmt.Sprintf("filter %d: %s", i, err.Error()))
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// parseFilter parses one filter; its error text is shown to the client.
func parseFilter(r json.RawMessage) (pushFilter, error) {
	var f pushFilter
	dec := json.NewDecoder(bytes.NewReader(r))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return f, errors.New("must be a JSON object of string, number or boolean values")
	}
	seen := make(map[string]struct{})
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return f, errors.New("invalid JSON")
		}
		key, ok := tok.(string) // the decoder yields string keys or an error
		if !ok {
			return f, errors.New("invalid JSON")
		}
		if _, dup := seen[key]; dup {
			return f, fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = struct{}{}
		tok, err = dec.Token()
		if err != nil {
			return f, errors.New("invalid JSON")
		}
		var field filterField
		switch v := tok.(type) {
		case string:
			field = filterField{key: key, str: true, val: v}
		case json.Number:
			field = filterField{key: key, val: string(v)}
		case bool:
			field = filterField{key: key, val: "false"}
			if v {
				field.val = "true"
			}
		default: // nil, or a Delim opening an object or array
			return f, fmt.Errorf("key %q: value must be a string, number or boolean", key)
		}
		if key == "type" {
			if !field.str {
				return f, errors.New(`key "type": value must be a string (an event name)`)
			}
			f.typ, f.hasType = field.val, true
			continue
		}
		f.fields = append(f.fields, field)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return f, errors.New("invalid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return f, errors.New("invalid JSON: data after the object")
	}
	if !f.hasType && len(f.fields) == 0 {
		return f, errors.New("empty object; a filter needs at least one key")
	}
	slices.SortFunc(f.fields, func(a, b filterField) int { return strings.Compare(a.key, b.key) })
	return f, nil
}

// equal reports whether f and g are the same filter, whatever the order of
// their keys in the JSON they were parsed from (parseFilter sorts them; so
// reflect.DeepEqual agrees with equal).
func (f pushFilter) equal(g pushFilter) bool {
	return f.hasType == g.hasType && f.typ == g.typ && slices.Equal(f.fields, g.fields)
}

// pushData is a push's data decoded once for filter matching: the
// top-level fields when data is a JSON object. Build it with
// decodePushData once per push and match every connection's filters
// against it (anyFilterMatchesData). It is not modified after
// decodePushData and so is safe for concurrent use.
type pushData struct {
	// fields are the top-level fields of data (the last of duplicate
	// keys); nil when data is not a JSON object.
	fields map[string]json.RawMessage
}

// decodePushData decodes data's top-level fields. Data that is not a JSON
// object (an array, a scalar, null, invalid JSON) gives a pushData on which
// only "type"-only filters can match.
func decodePushData(data json.RawMessage) pushData {
	var d pushData
	i := 0
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	if i == len(data) || data[i] != '{' {
		return d
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return d
	}
	d.fields = m // not nil: data starts with "{"
	return d
}

// matchesField reports whether data's field fl.key equals fl (see
// pushFilter for the rules).
func (d *pushData) matchesField(fl *filterField) bool {
	raw, ok := d.fields[fl.key]
	if !ok || len(raw) == 0 {
		return false
	}
	if fl.str {
		if raw[0] != '"' {
			return false
		}
		inner := raw[1 : len(raw)-1]
		if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
			return string(inner) == fl.val // no escapes: the text is the string
		}
		var s string
		return json.Unmarshal(raw, &s) == nil && s == fl.val
	}
	// A number or boolean: the raw field is its exact JSON text (no
	// surrounding whitespace), so a string field ("1") cannot equal it.
	return string(raw) == fl.val
}

// matchesData reports whether the push (event name, decoded data) passes f.
func (f *pushFilter) matchesData(event string, d *pushData) bool {
	if f.hasType && f.typ != event {
		return false
	}
	for i := range f.fields {
		if !d.matchesField(&f.fields[i]) {
			return false
		}
	}
	return true
}

// matches reports whether the push (event name, data JSON) passes f. It
// decodes data; to test many filters against one push, decode it once with
// decodePushData and use matchesData.
func (f pushFilter) matches(event string, data json.RawMessage) bool {
	if f.hasType && f.typ != event {
		return false
	}
	if len(f.fields) == 0 {
		return true
	}
	d := decodePushData(data)
	return f.matchesData(event, &d)
}

// anyFilterMatches reports whether a connection with filters fs receives
// the push: true with no filters, else when one filter matches. It decodes
// data at most once per call, and only when a filter needs a data field;
// to fan one push out to many connections, decode it once with
// decodePushData (lazily, on the first connection with filters) and call
// anyFilterMatchesData per connection instead.
func anyFilterMatches(fs []pushFilter, event string, data json.RawMessage) bool {
	if len(fs) == 0 {
		return true
	}
	var d *pushData
	for i := range fs {
		f := &fs[i]
		if f.hasType && f.typ != event {
			continue
		}
		if len(f.fields) == 0 {
			return true
		}
		if d == nil {
			dd := decodePushData(data)
			d = &dd
		}
		if f.matchesData(event, d) {
			return true
		}
	}
	return false
}

// anyFilterMatchesData is anyFilterMatches on data decoded once per push
// with decodePushData, for fanning one push out to many connections.
func anyFilterMatchesData(fs []pushFilter, event string, d *pushData) bool {
	if len(fs) == 0 {
		return true
	}
	for i := range fs {
		if fs[i].matchesData(event, d) {
			return true
		}
	}
	return false
}
