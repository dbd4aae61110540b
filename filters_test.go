package realtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// fltRaw splits a JSON array into its elements, as a subscribe message's
// decoder would.
func fltRaw(t testing.TB, array string) []json.RawMessage {
	t.Helper()
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(array), &raw); err != nil {
		t.Fatalf("bad test array %s: %v", array, err)
	}
	return raw
}

func TestParseFilters(t *testing.T) {
	many := make([]string, maxFilters)
	for i := range many {
		many[i] = fmt.Sprintf(`{"k":%d}`, i)
	}
	cases := []struct {
		name  string
		array string
		n     int    // filters parsed when ok
		msg   string // a fragment of the error message; "" when ok
	}{
		{"none", `[]`, 0, ""},
		{"type and string", `[{"type":"chat_message","questId":"q1"}]`, 1, ""},
		{"several", `[{"type":"a"},{"n":1,"b":true,"s":"x"},{"f":-2.5e3,"z":false}]`, 3, ""},
		{"escaped key and value", `[{"ty\u0070e":"a\u0062","k\"":"\n"}]`, 1, ""},
		{"empty key", `[{"":"x"}]`, 1, ""},
		{"maximum", "[" + strings.Join(many, ",") + "]", maxFilters, ""},

		{"too many", "[" + strings.Join(many, ",") + `,{"k":1}]`, 0, "too many filters: 51, at most 50"},
		{"empty object", `[{"type":"a"},{}]`, 0, "filter 1: empty object"},
		{"array element", `[["type","a"]]`, 0, "filter 0: must be a JSON object"},
		{"string element", `["chat_message"]`, 0, "filter 0: must be a JSON object"},
		{"null element", `[null]`, 0, "filter 0: must be a JSON object"},
		{"number element", `[1]`, 0, "filter 0: must be a JSON object"},
		{"nested object", `[{"a":{"b":1}}]`, 0, `filter 0: key "a": value must be a string, number or boolean`},
		{"nested array", `[{"type":"x","a":[1]}]`, 0, `key "a": value must be a string, number or boolean`},
		{"null value", `[{"a":null}]`, 0, `key "a": value must be a string, number or boolean`},
		{"type not a string", `[{"type":1}]`, 0, `key "type": value must be a string`},
		{"type bool", `[{"type":true}]`, 0, `key "type": value must be a string`},
		{"duplicate key", `[{"a":1,"a":2}]`, 0, `duplicate key "a"`},
		{"duplicate type", `[{"type":"x","t\u0079pe":"y"}]`, 0, `duplicate key "type"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := parseFilters(fltRaw(t, tc.array))
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("parseFilters(%s) = %v", tc.array, err)
				}
				if len(fs) != tc.n {
					t.Fatalf("parseFilters(%s): %d filters, want %d", tc.array, len(fs), tc.n)
				}
				return
			}
			if err == nil {
				t.Fatalf("parseFilters(%s) accepted, want an error", tc.array)
			}
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("parseFilters(%s) = %v, does not wrap ErrBadRequest", tc.array, err)
			}
			if msg := publicMessage(err); !strings.Contains(msg, tc.msg) {
				t.Fatalf("parseFilters(%s) message %q, want it to contain %q", tc.array, msg, tc.msg)
			}
		})
	}
}

// TestParseFiltersMalformed feeds raw elements that are not single valid
// JSON values (a caller may not have split them with encoding/json).
func TestParseFiltersMalformed(t *testing.T) {
	for _, raw := range []string{``, `{`, `{"a"}`, `{"a":}`, `{"a":1`, `{"a":1,}`, `{1:2}`, `{"a":1} {"b":2}`, `{"a":1} x`, `{"a":tru}`, `{"a":"\x"}`} {
		fs, err := parseFilters([]json.RawMessage{json.RawMessage(raw)})
		if err == nil || !errors.Is(err, ErrBadRequest) {
			t.Errorf("parseFilters(%q) = %v, %v; want a bad request", raw, fs, err)
		}
	}
}

func TestFilterMatches(t *testing.T) {
	cases := []struct {
		name   string
		filter string
		event  string
		data   string
		want   bool
	}{
		{"type only", `{"type":"chat_message"}`, "chat_message", `{"questId":"q1"}`, true},
		{"type only other event", `{"type":"chat_message"}`, "other", `{}`, false},
		{"type only, data not an object", `{"type":"chat_message"}`, "chat_message", `[1,2]`, true},
		{"type is the event, not a data field", `{"type":"chat_message"}`, "other", `{"type":"chat_message"}`, false},
		{"type and field", `{"type":"chat_message","questId":"q1"}`, "chat_message", `{"questId":"q1","x":2}`, true},
		{"type and field, other value", `{"type":"chat_message","questId":"q1"}`, "chat_message", `{"questId":"q2"}`, false},
		{"type and field, other event", `{"type":"chat_message","questId":"q1"}`, "other", `{"questId":"q1"}`, false},
		{"field missing", `{"questId":"q1"}`, "e", `{"quest":"q1"}`, false},
		{"all keys must match", `{"a":"1","b":"2"}`, "e", `{"a":"1","b":"3"}`, false},
		{"all keys match", `{"a":"1","b":"2"}`, "e", `{"b":"2","a":"1"}`, true},
		{"key case matters", `{"questId":"q1"}`, "e", `{"questid":"q1"}`, false},
		{"value case matters", `{"questId":"q1"}`, "e", `{"questId":"Q1"}`, false},
		{"type case matters", `{"type":"Chat"}`, "chat", `{}`, false},

		{"number", `{"n":1}`, "e", `{"n":1}`, true},
		{"number vs string", `{"n":1}`, "e", `{"n":"1"}`, false},
		{"string vs number", `{"n":"1"}`, "e", `{"n":1}`, false},
		{"number exact text 1 vs 1.0", `{"n":1}`, "e", `{"n":1.0}`, false},
		{"number exact text 1.0 vs 1", `{"n":1.0}`, "e", `{"n":1}`, false},
		{"number exact text 1e2 vs 100", `{"n":1e2}`, "e", `{"n":100}`, false},
		{"number exact text -0 vs 0", `{"n":-0}`, "e", `{"n":0}`, false},
		{"number with exponent", `{"n":-2.5E+3}`, "e", `{"n":-2.5E+3}`, true},
		{"number, whitespace in data", `{"n": 42 }`, "e", "{ \"n\" :\n\t42 ,\"m\":1}", true},
		{"bool", `{"b":true}`, "e", `{"b":true}`, true},
		{"bool false", `{"b":false}`, "e", `{"b":false}`, true},
		{"bool other", `{"b":true}`, "e", `{"b":false}`, false},
		{"bool vs string", `{"b":true}`, "e", `{"b":"true"}`, false},
		{"string vs bool", `{"b":"true"}`, "e", `{"b":true}`, false},
		{"field null", `{"a":"null"}`, "e", `{"a":null}`, false},
		{"field object", `{"a":"x"}`, "e", `{"a":{"x":1}}`, false},
		{"field array", `{"a":"x"}`, "e", `{"a":["x"]}`, false},
		{"nested fields not searched", `{"b":"x"}`, "e", `{"a":{"b":"x"}}`, false},

		{"escaped data string", `{"s":"ab"}`, "e", `{"s":"a\u0062"}`, true},
		{"escaped filter string", `{"s":"a\u0062"}`, "e", `{"s":"ab"}`, true},
		{"escaped quote", `{"s":"a\"b"}`, "e", `{"s":"a\u0022b"}`, true},
		{"escaped key", `{"k\u0065y":"v"}`, "e", `{"key":"v"}`, true},
		{"unicode", `{"s":"héllo ☃"}`, "e", `{"s":"h\u00e9llo \u2603"}`, true},
		{"string escape differs", `{"s":"a\nb"}`, "e", `{"s":"a\\nb"}`, false},
		{"empty string", `{"s":""}`, "e", `{"s":""}`, true},
		{"empty string vs missing", `{"s":""}`, "e", `{}`, false},
		{"duplicate data keys: last wins", `{"s":"b"}`, "e", `{"s":"a","s":"b"}`, true},

		{"data array", `{"a":"x"}`, "e", `[{"a":"x"}]`, false},
		{"data string", `{"a":"x"}`, "e", `"x"`, false},
		{"data null", `{"a":"x"}`, "e", `null`, false},
		{"data empty", `{"a":"x"}`, "e", ``, false},
		{"data invalid", `{"a":"x"}`, "e", `{"a":"x"`, false},
		{"data with leading space", `{"a":"x"}`, "e", ` {"a":"x"}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := parseFilters([]json.RawMessage{json.RawMessage(tc.filter)})
			if err != nil {
				t.Fatalf("parseFilters(%s): %v", tc.filter, err)
			}
			data := json.RawMessage(tc.data)
			if got := fs[0].matches(tc.event, data); got != tc.want {
				t.Errorf("matches(%q, %s) = %v, want %v", tc.event, tc.data, got, tc.want)
			}
			d := decodePushData(data)
			if got := fs[0].matchesData(tc.event, &d); got != tc.want {
				t.Errorf("matchesData(%q, %s) = %v, want %v", tc.event, tc.data, got, tc.want)
			}
			if got := anyFilterMatches(fs, tc.event, data); got != tc.want {
				t.Errorf("anyFilterMatches(%q, %s) = %v, want %v", tc.event, tc.data, got, tc.want)
			}
			if got := anyFilterMatchesData(fs, tc.event, &d); got != tc.want {
				t.Errorf("anyFilterMatchesData(%q, %s) = %v, want %v", tc.event, tc.data, got, tc.want)
			}
		})
	}
}

func TestAnyFilterMatches(t *testing.T) {
	fs, err := parseFilters(fltRaw(t, `[{"type":"chat_message","questId":"q1"},{"type":"quest_done"},{"priority":1}]`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		event, data string
		want        bool
	}{
		{"chat_message", `{"questId":"q1"}`, true},
		{"chat_message", `{"questId":"q2"}`, false},
		{"quest_done", `null`, true},
		{"anything", `{"priority":1}`, true},
		{"anything", `{"priority":2}`, false},
		{"chat_message", `{"questId":"q2","priority":1}`, true},
		{"anything", `not json`, false},
	}
	for _, tc := range cases {
		data := json.RawMessage(tc.data)
		if got := anyFilterMatches(fs, tc.event, data); got != tc.want {
			t.Errorf("anyFilterMatches(%q, %s) = %v, want %v", tc.event, tc.data, got, tc.want)
		}
		d := decodePushData(data)
		if got := anyFilterMatchesData(fs, tc.event, &d); got != tc.want {
			t.Errorf("anyFilterMatchesData(%q, %s) = %v, want %v", tc.event, tc.data, got, tc.want)
		}
	}
	// No filters: every push passes, whatever its data.
	if !anyFilterMatches(nil, "e", json.RawMessage(`garbage`)) {
		t.Error("anyFilterMatches with no filters = false")
	}
	d := decodePushData(json.RawMessage(`garbage`))
	if !anyFilterMatchesData(nil, "e", &d) {
		t.Error("anyFilterMatchesData with no filters = false")
	}
}

func TestPushFilterEqual(t *testing.T) {
	fs, err := parseFilters(fltRaw(t, `[
		{"a":1,"b":"x","type":"t"},
		{"type":"t","b":"x","a":1},
		{"a":"1","b":"x","type":"t"},
		{"a":1,"b":"x"},
		{"a":1,"b":"x","type":"u"},
		{"a":1.0,"b":"x","type":"t"},
		{"type":"t"},
		{"type":"t"}
	]`))
	if err != nil {
		t.Fatal(err)
	}
	for i := range fs {
		for j := range fs {
			want := i == j || (i < 2 && j < 2) || (i >= 6 && j >= 6)
			if got := fs[i].equal(fs[j]); got != want {
				t.Errorf("filters %d and %d: equal = %v, want %v", i, j, got, want)
			}
			if got := reflect.DeepEqual(fs[i], fs[j]); got != want {
				t.Errorf("filters %d and %d: DeepEqual = %v, want %v", i, j, got, want)
			}
		}
	}
}

// TestFilterMatchAllocs checks that matching decoded data allocates
// nothing (strings without escapes are compared in place).
func TestFilterMatchAllocs(t *testing.T) {
	fs, err := parseFilters(fltRaw(t, `[{"type":"chat_message","questId":"q1","n":3},{"type":"other"}]`))
	if err != nil {
		t.Fatal(err)
	}
	d := decodePushData(json.RawMessage(`{"questId":"q1","n":3,"body":"hello"}`))
	if a := testing.AllocsPerRun(100, func() {
		if !anyFilterMatchesData(fs, "chat_message", &d) {
			t.Fatal("no match")
		}
	}); a != 0 {
		t.Errorf("anyFilterMatchesData: %v allocs, want 0", a)
	}
	// Type-only filters never decode the data.
	typeOnly, _ := parseFilters(fltRaw(t, `[{"type":"a"},{"type":"b"}]`))
	data := json.RawMessage(`{"questId":"q1"}`)
	if a := testing.AllocsPerRun(100, func() { anyFilterMatches(typeOnly, "b", data) }); a != 0 {
		t.Errorf("anyFilterMatches with type-only filters: %v allocs, want 0", a)
	}
}

// FuzzParseFilters checks that parseFilters never panics, that every
// error is a bad request, and that an accepted filter matches the data
// made of its own JSON object (with its "type" as the event), but not that
// data with one of its keys removed.
func FuzzParseFilters(f *testing.F) {
	for _, s := range []string{
		`[{"type":"chat_message","questId":"q1"}]`,
		`[{"n":1,"b":true,"f":-2.5e3},{"s":"a\u0062\n"}]`,
		`[{"a":{"b":1}}]`,
		`[{}]`,
		`[{"a":1,"a":1}]`,
		`[null,1,"x",[]]`,
		`{"type":"x"}`,
		`[{"type":"x","\u00e9":"\ud83d\ude00"}]`,
		"[{\"k\":\"\xff\"}]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var raw []json.RawMessage
		if json.Unmarshal(in, &raw) != nil {
			raw = []json.RawMessage{in} // not an array: one raw element
		}
		fs, err := parseFilters(raw)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if len(fs) != len(raw) {
			t.Fatalf("%d filters from %d elements", len(fs), len(raw))
		}
		for i, r := range raw {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(r, &obj); err != nil {
				t.Fatalf("accepted filter %s is not an object: %v", r, err)
			}
			event := "some-event"
			if typ, ok := obj["type"]; ok {
				if err := json.Unmarshal(typ, &event); err != nil {
					t.Fatalf("accepted filter %s: type is not a string", r)
				}
			}
			if !fs[i].matches(event, r) {
				t.Fatalf("filter %s does not match its own object as data (event %q)", r, event)
			}
			if !anyFilterMatches(fs, event, r) {
				t.Fatalf("filters do not match filter %s as data", r)
			}
			if !fs[i].hasType && !fs[i].matches(event+"x", r) {
				t.Fatalf("filter %s without type depends on the event", r)
			}
			if fs[i].hasType && fs[i].matches(event+"x", r) {
				t.Fatalf("filter %s matches another event", r)
			}
			for key := range obj {
				if key == "type" {
					continue
				}
				without := make(map[string]json.RawMessage, len(obj))
				for k, v := range obj {
					if k != key {
						without[k] = v
					}
				}
				data, err := json.Marshal(without)
				if err != nil {
					t.Fatal(err)
				}
				if fs[i].matches(event, data) {
					t.Fatalf("filter %s matches %s, which lacks key %q", r, data, key)
				}
			}
		}
	})
}

// BenchmarkFilterMatch measures one push against a connection's filters:
// decoding the data once, then matching.
func BenchmarkFilterMatch(b *testing.B) {
	fs, err := parseFilters(fltRaw(b, `[{"type":"chat_message","questId":"q1"},{"type":"quest_done","questId":"q1"},{"priority":1}]`))
	if err != nil {
		b.Fatal(err)
	}
	data := json.RawMessage(`{"questId":"q1","author":"u42","body":"hello there, this is a chat message","priority":3}`)
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			decodePushData(data)
		}
	})
	b.Run("decoded", func(b *testing.B) {
		d := decodePushData(data)
		b.ReportAllocs()
		for b.Loop() {
			anyFilterMatchesData(fs, "chat_message", &d)
		}
	})
}
