// Package strictjson decodes the JSON inputs of the plugin (PROTOCOL.md
// §1): an HTTP body, a WebSocket message, a queued request. Unlike
// encoding/json it matches keys exactly (not case-insensitively), refuses
// a key the destination does not declare, and names the field at fault in
// its error: `unknown field "exclude_users"`, `field "users" must be an
// array of strings`. Nested structs (and slices of them) are decoded with
// the same rules; every other value is decoded by encoding/json.
package strictjson

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"slices"
	"strconv"
	"sync"
)

// Error is a refused input. Its message is safe to show the client: it
// names the field at fault, never echoes a value.
type Error struct {
	// Field is the path of the field at fault ("users", "records[1].id");
	// empty for the whole input.
	Field string
	msg   string
}

func (e *Error) Error() string { return e.msg }

// Decode decodes data, one JSON object, into v (a pointer to a struct).
func Decode(data []byte, v any) error {
	obj, err := Object(data)
	if err != nil {
		return err
	}
	return Fields(obj, v)
}

// Object splits data, one JSON object (whitespace around it allowed,
// nothing else), into its members, each still encoded.
func Object(data []byte) (map[string]json.RawMessage, error) {
	return object(data, "")
}

func object(data []byte, path string) (map[string]json.RawMessage, error) {
	d := bytes.TrimLeft(data, " \t\r\n")
	if len(d) == 0 || d[0] != '{' {
		if path == "" {
			return nil, &Error{msg: "not a JSON object"}
		}
		return nil, typeError(path, "an object")
	}
	var obj map[string]json.RawMessage
	if path != "" { // a member: its JSON is valid already
		if err := json.Unmarshal(d, &obj); err != nil {
			return nil, typeError(path, "an object")
		}
		return obj, nil
	}
	dec := json.NewDecoder(bytes.NewReader(d))
	if err := dec.Decode(&obj); err != nil {
		return nil, &Error{msg: "not a JSON object"}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &Error{msg: "data after the JSON object"}
	}
	return obj, nil
}

// Fields decodes the members of an object (from Object) into v, a pointer
// to a struct: each key must be the exact JSON name of one of its fields.
func Fields(obj map[string]json.RawMessage, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		panic("strictjson: Fields needs a pointer to a struct")
	}
	return fields(obj, rv.Elem(), "")
}

func fields(obj map[string]json.RawMessage, sv reflect.Value, prefix string) error {
	table := fieldsOf(sv.Type())
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the same input always names the same field
	for _, k := range keys {
		f, ok := table[k]
		if !ok {
			return &Error{Field: prefix + k, msg: "unknown field " + strconv.Quote(prefix+k)}
		}
		if err := decodeValue(obj[k], sv.FieldByIndex(f), prefix+k); err != nil {
			return err
		}
	}
	return nil
}

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

// strict reports whether values of t are decoded by this package (a struct
// without a decoder of its own).
func strict(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(unmarshaler)
}

var null = []byte("null")

// decodeValue decodes raw into fv, the field at path.
func decodeValue(raw json.RawMessage, fv reflect.Value, path string) error {
	t := fv.Type()
	isNull := bytes.Equal(bytes.TrimSpace(raw), null)
	switch {
	case strict(t):
		if isNull {
			return nil
		}
		obj, err := object(raw, path)
		if err != nil {
			return err
		}
		return fields(obj, fv, path+".")
	case t.Kind() == reflect.Pointer && strict(t.Elem()):
		if isNull {
			fv.SetZero()
			return nil
		}
		nv := reflect.New(t.Elem())
		if err := decodeValue(raw, nv.Elem(), path); err != nil {
			return err
		}
		fv.Set(nv)
		return nil
	case t.Kind() == reflect.Slice && strict(t.Elem()):
		if isNull {
			fv.SetZero()
			return nil
		}
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			return typeError(path, describe(t))
		}
		sl := reflect.MakeSlice(t, len(elems), len(elems))
		for i, e := range elems {
			if err := decodeValue(e, sl.Index(i), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		fv.Set(sl)
		return nil
	}
	if err := json.Unmarshal(raw, fv.Addr().Interface()); err != nil {
		return typeError(path, describe(t))
	}
	return nil
}

func typeError(path, want string) error {
	return &Error{Field: path, msg: "field " + strconv.Quote(path) + " must be " + want}
}

// describe names the JSON a Go type takes, for an error message.
func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return describe(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Struct:
		return "an object"
	case reflect.Slice, reflect.Array:
		if t.Elem() == reflect.TypeFor[json.RawMessage]() {
			return "an array"
		}
		switch e := describe(t.Elem()); e {
		case "a string":
			return "an array of strings"
		case "a number":
			return "an array of numbers"
		case "a boolean":
			return "an array of booleans"
		case "an object":
			return "an array of objects"
		}
		return "an array"
	case reflect.Map:
		if describe(t.Elem()) == "a string" {
			return "an object of strings"
		}
		return "an object"
	}
	return "valid JSON"
}

// fieldTables caches each struct type's JSON names → field index.
var fieldTables sync.Map // reflect.Type → map[string][]int

func fieldsOf(t reflect.Type) map[string][]int {
	if m, ok := fieldTables.Load(t); ok {
		return m.(map[string][]int)
	}
	m := make(map[string][]int)
	collect(t, nil, m)
	fieldTables.Store(t, m)
	return m
}

// collect adds t's fields to m, those of embedded structs as their own;
// of two fields of one name, the first found wins.
func collect(t reflect.Type, index []int, m map[string][]int) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := cut(tag)
		idx := append(slices.Clone(index), i)
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				continue // not allocated by a decode: never used here
			}
			if ft.Kind() == reflect.Struct {
				collect(ft, idx, m)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, dup := m[name]; !dup {
			m[name] = idx
		}
	}
}

func cut(tag string) (string, string, bool) {
	for i := 0; i < len(tag); i++ {
		if tag[i] == ',' {
			return tag[:i], tag[i+1:], true
		}
	}
	return tag, "", false
}
