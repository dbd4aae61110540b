package realtime

import (
	"bytes"
	"slices"
	"testing"
)

// TestNodeMsgEncoding: what a node sends another comes back as sent: a
// count's user hashes after its JSON, a push's position before it, a
// push's users from its topic.
func TestNodeMsgEncoding(t *testing.T) {
	_, hashes := userSet([]uint64{userHash("u2"), userHash("u1"), userHash("u2")})
	count := &nodeMsg{Type: "count", Envelope: "e1", N: 3, Distinct: 2, UserHashes: hashes}
	b, err := encodeMsg(count)
	if err != nil {
		t.Fatal(err)
	}
	var got nodeMsg
	if err := decodeMsg(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Type != "count" || got.N != 3 || got.Distinct != 2 || !bytes.Equal(got.UserHashes, hashes) {
		t.Fatalf("count came back as %+v", got)
	}
	for _, tc := range []struct {
		msg  string
		seq  uint64
		body string
		bad  bool
	}{
		{`{"type":"notify"}`, 0, `{"type":"notify"}`, false},
		{"42\n{\"type\":\"notify\"}", 42, `{"type":"notify"}`, false},
		{"42", 0, "", true},
		{"4x\n{}", 0, "", true},
		{"99999999999999999999999\n{}", 0, "", true},
	} {
		seq, body, err := cutPosition([]byte(tc.msg))
		if (err != nil) != tc.bad || seq != tc.seq || (!tc.bad && string(body) != tc.body) {
			t.Errorf("cutPosition(%q) = %d %q %v", tc.msg, seq, body, err)
		}
	}
	for _, tc := range []struct {
		topic string
		users []string
	}{
		{topicUser("t", "u1"), []string{"u1"}},
		{topicUser("a:b", "c:d"), []string{"c:d"}},
		{topicUser("", ""), []string{""}},
		{topicTenant("t"), nil},
		{"u:5:ab", nil},
		{"u:x:ab:c", nil},
	} {
		m := nodeMsg{Type: "notify"}
		m.forTopic(tc.topic)
		if !slices.Equal(m.Users, tc.users) {
			t.Errorf("forTopic(%q): users %q, want %q", tc.topic, m.Users, tc.users)
		}
	}
}

// FuzzNodeMessage: a broker message of any bytes is decoded or refused,
// never a panic; a count survives its encoding.
func FuzzNodeMessage(f *testing.F) {
	f.Add([]byte(`{"type":"count","envelope":"e","n":2,"d":1}` + "\x00\x01\x02\x03\x04\x05\x06\x07\x08"))
	f.Add([]byte("12\n{\"type\":\"notify\",\"frame\":{}}"))
	f.Add([]byte("\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, body, err := cutPosition(b)
		if err != nil {
			return
		}
		var m nodeMsg
		if decodeMsg(body, &m) != nil {
			return
		}
		_ = seq
		if m.Type != "count" {
			return
		}
		again, err := encodeMsg(&m)
		if err != nil {
			t.Fatal(err)
		}
		var m2 nodeMsg
		if err := decodeMsg(again, &m2); err != nil {
			t.Fatalf("re-decoding %q: %v", again, err)
		}
		if m2.N != m.N || m2.Distinct != m.Distinct || !bytes.Equal(m2.UserHashes, m.UserHashes) {
			t.Fatalf("count %+v came back as %+v", m, m2)
		}
	})
}
