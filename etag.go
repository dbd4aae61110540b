package realtime

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// ETagger is implemented by records that carry their own version (a version
// column, an updated-at stamp). Its ETag must be a valid HTTP entity tag,
// quotes included, and is used instead of Config.ETag.
type ETagger interface {
	ETag() string
}

// Versioner is ETagger's sibling: implemented by records that carry their
// position in their record's order (a version column kept by the app, 1,
// 2, 3, … consecutive per record, in commit order). The plugin reads it from
// the records a RecordLoader returns (a subscriber then never gets an event
// older than its snapshot); publishers read it for Publication.Version.
type Versioner interface {
	RecordVersion() uint64
}

// VersionedRecord is what a RecordLoader may return instead of the bare
// record when it knows the loaded version's position in the record's order
// (read in one consistent snapshot with the record). Record nil means the
// record is absent (deleted) at that version.
type VersionedRecord struct {
	Record  any
	Version uint64
}

// DefaultETag is a strong ETag over collection, id and the record's JSON: the
// same inputs give the same string on every node.
func DefaultETag(collection, id string, recordJSON []byte) string {
	return hashETag('r', collection, id, recordJSON)
}

// TombstoneETag is the ETag of a deleted event for collection and id. It never
// equals the ETag of a record version.
func TombstoneETag(collection, id string) string {
	return hashETag('d', collection, id, nil)
}

func hashETag(kind byte, collection, id string, body []byte) string {
	h := sha256.New()
	var n [8]byte
	h.Write([]byte{kind})
	for _, s := range []string{collection, id} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	h.Write(body)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
}

// ETag returns the ETag the plugin gives this version of a record: the
// string the app's REST handlers must send in their ETag header so that HTTP
// caching and SSE resume points agree.
func (p *Plugin) ETag(collection, id string, record any) (string, error) {
	data, err := recordJSON(record)
	if err != nil {
		return "", fmt.Errorf("realtime: etag of %s/%s: %w", collection, id, err)
	}
	return p.etagOf(collection, id, record, data), nil
}

func (p *Plugin) etagOf(collection, id string, record any, data []byte) string {
	if t, ok := asETagger(record); ok {
		if e := t.ETag(); e != "" {
			return e
		}
	}
	return p.cfg.ETag(collection, id, data)
}

// asETagger finds ETagger on a record or, for a struct value whose method
// has a pointer receiver, on a pointer to a copy: the app's handler passing
// a value and the GORM hook passing a pointer get the same ETag.
func asETagger(record any) (ETagger, bool) {
	if t, ok := record.(ETagger); ok {
		return t, true
	}
	rv := reflect.ValueOf(record)
	if !rv.IsValid() || rv.Kind() == reflect.Pointer || !reflect.PointerTo(rv.Type()).Implements(etaggerType) {
		return nil, false
	}
	pv := reflect.New(rv.Type())
	pv.Elem().Set(rv)
	return pv.Interface().(ETagger), true
}

var etaggerType = reflect.TypeFor[ETagger]()

// recordJSON marshals a record; raw JSON is compacted and validated.
func recordJSON(record any) ([]byte, error) {
	switch v := record.(type) {
	case nil:
		return nil, badRequest("record is nil")
	case json.RawMessage:
		return compactJSON(v)
	case []byte:
		return compactJSON(v)
	}
	b, err := json.Marshal(record)
	if err != nil {
		return nil, fmt.Errorf("%w: marshal record: %w", ErrBadRequest, err)
	}
	return b, nil
}

func compactJSON(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return nil, badRequest("data is not valid JSON")
	}
	return buf.Bytes(), nil
}

// validETag reports whether s can be written as an SSE id and an HTTP header.
func validETag(s string) bool {
	return s != "" && !strings.ContainsAny(s, "\r\n\x00")
}
