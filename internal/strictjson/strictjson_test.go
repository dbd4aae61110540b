package strictjson

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

type rec struct {
	Collection string `json:"collection"`
	ID         string `json:"id"`
}

type msg struct {
	Type    string            `json:"type"`
	Users   []string          `json:"users"`
	N       int               `json:"n"`
	OK      bool              `json:"ok"`
	Data    json.RawMessage   `json:"data"`
	Since   map[string]string `json:"since"`
	Records []rec             `json:"records"`
	One     *rec              `json:"one"`
	Name    *string           `json:"name"`
	Skip    string            `json:"-"`
	hidden  string
}

func TestDecode(t *testing.T) {
	var m msg
	in := `{"type":"x","users":["a","b"],"n":3,"ok":true,"data":{"k":[1]},"since":{"c":"e"},
		"records":[{"collection":"posts","id":"1"}],"one":{"id":"2"},"name":null}`
	if err := Decode([]byte(in), &m); err != nil {
		t.Fatal(err)
	}
	want := msg{Type: "x", Users: []string{"a", "b"}, N: 3, OK: true, Data: json.RawMessage(`{"k":[1]}`),
		Since: map[string]string{"c": "e"}, Records: []rec{{"posts", "1"}}, One: &rec{ID: "2"}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v, want %+v", m, want)
	}
}

func TestRefusals(t *testing.T) {
	for _, c := range []struct{ in, msg, field string }{
		{`{"exclude_users":[]}`, `unknown field "exclude_users"`, "exclude_users"},
		{`{"Type":"x"}`, `unknown field "Type"`, "Type"}, // exact names only
		{`{"Skip":"x"}`, `unknown field "Skip"`, "Skip"},
		{`{"hidden":"x"}`, `unknown field "hidden"`, "hidden"},
		{`{"users":"u1"}`, `field "users" must be an array of strings`, "users"},
		{`{"users":[1]}`, `field "users" must be an array of strings`, "users"},
		{`{"type":1}`, `field "type" must be a string`, "type"},
		{`{"n":"1"}`, `field "n" must be a number`, "n"},
		{`{"ok":1}`, `field "ok" must be a boolean`, "ok"},
		{`{"since":[]}`, `field "since" must be an object of strings`, "since"},
		{`{"records":{}}`, `field "records" must be an array of objects`, "records"},
		{`{"records":[1]}`, `field "records[0]" must be an object`, "records[0]"},
		{`{"records":[{"id":"1"},{"id":2}]}`, `field "records[1].id" must be a string`, "records[1].id"},
		{`{"records":[{"lastEventID":"x"}]}`, `unknown field "records[0].lastEventID"`, "records[0].lastEventID"},
		{`{"one":{"x":1}}`, `unknown field "one.x"`, "one.x"},
		{`{"name":3}`, `field "name" must be a string`, "name"},
		{`[]`, `not a JSON object`, ""},
		{``, `not a JSON object`, ""},
		{`null`, `not a JSON object`, ""},
		{`{"type":"x"} {}`, `data after the JSON object`, ""},
		{`{"type":"x"} x`, `data after the JSON object`, ""},
		{`{"type":"x"`, `not a JSON object`, ""},
		{` {"type":"x"} `, ``, ""},
		{`{"b":1,"a":1}`, `unknown field "a"`, "a"}, // the first in order of names
	} {
		var m msg
		err := Decode([]byte(c.in), &m)
		if c.msg == "" {
			if err != nil {
				t.Errorf("%s: %v", c.in, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: err %v, want an *Error", c.in, err)
			continue
		}
		if e.Error() != c.msg || e.Field != c.field {
			t.Errorf("%s: %q (field %q), want %q (field %q)", c.in, e.Error(), e.Field, c.msg, c.field)
		}
	}
}
