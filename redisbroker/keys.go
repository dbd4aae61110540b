package redisbroker

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ginrealtime/realtime"
)

// Key layout (P is Config.Prefix; T, C, I, U are the escaped tenant,
// collection, record id and user; see doc.go):
//
//	P{T:C}:c        collection stream (Redis stream)
//	P{T:C}:r:I      record stream
//	S:e             head of stream S (one of the above, or a channel's):
//	                "<epoch> <last generated id>"
//	P{T:C}:r:I:v    last version appended to the record (decimal)
//	P{T:C}:ix       set of the collection's stream keys (for Invalidate)
//	P{T:C}:d:<uuid> dedupe key of one Append (value: the entry ids)
//	P{p:T}:pt       presence of the tenant (zset: U ":" connID → expiry ms)
//	P{p:T}:pu:U     presence of one user (zset: connID → expiry ms)
//
// Channels: a stream's channel is its key's name; a topic's is P "t:" topic;
// a broker's probe channel is P "p:" <broker id>.

// escaper makes names safe inside keys: the hash tag braces and the
// separator cannot appear in an escaped name, so no name can end a hash
// tag or a part early.
var escaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D", ":", "%3A")

func esc(s string) string {
	if !strings.ContainsAny(s, "%{}:") {
		return s
	}
	return escaper.Replace(s)
}

var unescaper = strings.NewReplacer("%25", "%", "%7B", "{", "%7D", "}", "%3A", ":")

func unesc(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	return unescaper.Replace(s)
}

// keys builds the names of one broker.
type keys struct{ prefix string }

// tag is the hash tag of a collection: every key of it is in one slot.
func (k keys) tag(tenant, collection string) string {
	return k.prefix + "{" + esc(tenant) + ":" + esc(collection) + "}"
}

// stream is the key (and channel) of key's stream.
func (k keys) stream(key realtime.StreamKey) string {
	if key.ID == "" {
		return k.tag(key.Tenant, key.Collection) + ":c"
	}
	return k.tag(key.Tenant, key.Collection) + ":r:" + esc(key.ID)
}

// epochKey is the key of the head (epoch and last id) of the stream whose
// key is stream. An escaped record id has no ':', so no stream's key ends
// like another's epoch key.
func epochKey(stream string) string { return stream + ":e" }

// version is the key of the last version appended to record's stream.
func (k keys) version(record realtime.StreamKey) string { return k.stream(record) + ":v" }

func (k keys) index(tenant, collection string) string {
	return k.tag(tenant, collection) + ":ix"
}

func (k keys) dedupe(key realtime.StreamKey, id string) string {
	return k.tag(key.Tenant, key.Collection) + ":d:" + id
}

func (k keys) topic(topic string) string { return k.prefix + "t:" + topic }

func (k keys) probe(brokerID string) string { return k.prefix + "p:" + brokerID }

func (k keys) presenceTenant(tenant string) string {
	return k.prefix + "{p:" + esc(tenant) + "}:pt"
}

func (k keys) presenceUser(tenant, user string) string {
	return k.prefix + "{p:" + esc(tenant) + "}:pu:" + esc(user)
}

// presenceMember is a tenant zset's member of one connection.
func presenceMember(user, connID string) string { return esc(user) + ":" + connID }

// memberUser is the user of a tenant zset's member.
func memberUser(m string) string {
	u, _, _ := strings.Cut(m, ":")
	return unesc(u)
}

// seqBits is the width of an entry id's sequence part in a position.
const seqBits = 20

// position converts a stream entry id "ms-n" to a position ms<<20 | n
// ("" is 0: no entry).
func position(id string) (uint64, error) {
	if id == "" {
		return 0, nil
	}
	msStr, nStr, ok := strings.Cut(id, "-")
	if !ok {
		return 0, fmt.Errorf("%w: entry id %q", ErrCorrupt, id)
	}
	ms, err1 := strconv.ParseUint(msStr, 10, 64)
	n, err2 := strconv.ParseUint(nStr, 10, 64)
	if err1 != nil || err2 != nil || n >= 1<<seqBits || ms >= 1<<(64-seqBits) {
		return 0, fmt.Errorf("%w: entry id %q", ErrCorrupt, id)
	}
	return ms<<seqBits | n, nil
}

// entryID is the inverse of position.
func entryID(pos uint64) string {
	if pos == 0 {
		return ""
	}
	return strconv.FormatUint(pos>>seqBits, 10) + "-" + strconv.FormatUint(pos&(1<<seqBits-1), 10)
}
