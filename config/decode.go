package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// decode parses data strictly into c: a syntax error, a value of the wrong
// type and an unknown key are errors naming the file, the line and the
// key. It returns the line of each key the file sets (by its name in
// Config's tags), for the errors of validation, which comes later.
//
// Lines come from the TOML library's own positions, never from its error
// text or from scanning the file: syntax errors and the errors of a
// value's UnmarshalText/UnmarshalTOML are toml.ParseErrors with a
// Position; keys come from MetaData.Keys(); a key's line is the position
// the library reports for it (see keys.line).
func decode(path string, data []byte, c *Config) (map[string]int, error) {
	var doc toml.Primitive
	md, err := toml.Decode(string(data), &doc)
	if err != nil {
		return nil, decodeErr(path, err)
	}
	ks := &keys{md: &md, doc: doc, input: lexed(data)}
	var top map[string]toml.Primitive
	if err := md.PrimitiveDecode(doc, &top); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err) // a document is a table
	}
	fields := fieldsOf(c)
	if err := caseTwice(path, ks, fields); err != nil {
		return nil, err
	}
	lines := map[string]int{}
	var unknown []toml.Key
	seen := map[string]bool{}
	for _, k := range md.Keys() {
		name, ok := fields.name(k[0])
		if !ok {
			if !seen[k.String()] { // [[t]] lists its keys once per table
				unknown = append(unknown, k)
			}
			seen[k.String()] = true
			continue
		}
		if seen[k[0]] {
			continue
		}
		// A known key decodes here even when the file only implies it
		// ("workers.x = 1" has the key workers.x, not workers): its value
		// is then a table, and the wrong type.
		seen[k[0]] = true
		line := ks.line(k[:1])
		lines[name] = line
		if err := md.PrimitiveDecode(top[k[0]], fields[name].Addr().Interface()); err != nil {
			var pe toml.ParseError
			if errors.As(err, &pe) { // the field's own UnmarshalText or UnmarshalTOML
				return nil, fmt.Errorf("%s: key %q: %s", at(path, line), k[0], pe.Message)
			}
			return nil, fmt.Errorf("%s: key %q: incompatible types: TOML value has type %s; destination has type %s",
				at(path, line), k[0], ks.typeOf(top[k[0]]), goType(fields[name].Type()))
		}
	}
	if len(unknown) > 0 {
		var msgs []string
		for _, k := range unknown {
			msgs = append(msgs, fmt.Sprintf("%s: unknown key %q", at(path, ks.line(k)), k.String()))
		}
		return nil, errors.New(strings.Join(msgs, "\n"))
	}
	// Values are validated by Load once flags have overridden them: a flag
	// may replace a value the file got wrong.
	// Relative paths in a file mean relative to the file, not to wherever
	// the daemon happens to start (/ under systemd).
	for _, p := range []struct {
		key string
		v   *string
	}{{"root", &c.Root}, {"control", &c.Control}, {"digest_cache", &c.DigestCache}, {"access_log_path", &c.AccessLogPath}} {
		if _, set := lines[p.key]; set && *p.v != "" && *p.v != DigestCacheMemory && !filepath.IsAbs(*p.v) {
			*p.v = filepath.Join(filepath.Dir(path), *p.v)
		}
	}
	return lines, nil
}

// decodeErr is a decoding error as "FILE:LINE: key "K": message", from the
// library's ParseError where it is one.
func decodeErr(path string, err error) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", path, err)
	}
	msg := pe.Message
	if pe.LastKey != "" {
		msg = fmt.Sprintf("key %q: %s", pe.LastKey, msg)
	}
	return fmt.Errorf("%s: %s", at(path, pe.Position.Line), msg)
}

// at is "FILE:LINE", or "FILE" for line 0 (unknown).
func at(path string, line int) string {
	if line <= 0 {
		return path
	}
	return fmt.Sprintf("%s:%d", path, line)
}

// fields maps the TOML names of Config's fields to the fields of one value.
type fields map[string]reflect.Value

func fieldsOf(c *Config) fields {
	v := reflect.ValueOf(c).Elem()
	f := fields{}
	for i := range v.NumField() {
		if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("toml"), ","); name != "" && name != "-" {
			f[name] = v.Field(i)
		}
	}
	return f
}

// name is the field a key in the file sets: the one of that name, else,
// as the library matches struct fields, one whose name differs only in
// case.
func (f fields) name(key string) (string, bool) {
	if _, ok := f[key]; ok {
		return key, true
	}
	for name := range f {
		if strings.EqualFold(name, key) {
			return name, true
		}
	}
	return "", false
}

// caseTwice refuses a file that sets one field under two spellings that
// differ only in case ("root" and "Root"): TOML keeps them apart, but
// fields match keys regardless of case, so the file would set the field
// twice, and the last would win unseen. Each later spelling is reported
// with the line of the first.
func caseTwice(path string, ks *keys, f fields) error {
	type spelling struct {
		key  string
		line int
	}
	byField := map[string][]spelling{}
	done := map[string]bool{}
	for _, k := range ks.md.Keys() {
		name, ok := f.name(k[0])
		if !ok || done[k[0]] {
			continue
		}
		done[k[0]] = true
		byField[name] = append(byField[name], spelling{k[0], ks.line(k[:1])})
	}
	var again []spelling // each later spelling, its key the message
	for _, ss := range byField {
		slices.SortStableFunc(ss, func(a, b spelling) int { return a.line - b.line })
		for _, s := range ss[1:] {
			again = append(again, spelling{fmt.Sprintf("%s: key %q is key %q again (%s): keys are matched regardless of case",
				at(path, s.line), s.key, ss[0].key, at(path, ss[0].line)), s.line})
		}
	}
	if len(again) == 0 {
		return nil
	}
	slices.SortFunc(again, func(a, b spelling) int { return cmp.Or(a.line-b.line, strings.Compare(a.key, b.key)) }) // in the file's order
	var msgs []string
	for _, s := range again {
		msgs = append(msgs, s.key)
	}
	return errors.New(strings.Join(msgs, "\n"))
}

// typeOf names the TOML type of a value for a person. It looks at the
// value, not at MetaData.Type: the library's record of a key's type is
// overwritten by an empty key in its table ("" = 1 under [[t]] makes t an
// Integer) and by "t = 1" after "t.x = 1", which it does not refuse.
func (ks *keys) typeOf(p toml.Primitive) string {
	var v any
	if err := ks.md.PrimitiveDecode(p, &v); err != nil {
		return "value"
	}
	switch v.(type) {
	case int64:
		return "integer"
	case float64:
		return "float"
	case string:
		return "string"
	case bool:
		return "boolean"
	case time.Time:
		return "datetime"
	case []map[string]any:
		return "array of tables"
	case []any:
		return "array"
	}
	return "table"
}

// goType names the TOML type a field takes.
func goType(t reflect.Type) string {
	if t == reflect.TypeFor[Duration]() {
		return "duration"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "boolean"
	case reflect.Int:
		return "integer"
	case reflect.Slice:
		return "array of " + goType(t.Elem()) + "s"
	}
	return t.Kind().String() // string
}

// keys finds where a file's keys are.
type keys struct {
	md     *toml.MetaData
	doc    toml.Primitive
	input  []byte                               // the text the library's byte offsets count in
	tables map[string]map[string]toml.Primitive // table's by key, decoded once
}

// table returns the values of the table at path, whose value is v, nil if
// v is not a table. For an array of tables ([[t]], or an array of inline
// tables) it is the first value of each key any of them has: the library
// keeps one position per key name, so any will do. Tables are decoded
// once: a file with many keys (the wrong file, with thousands) would
// otherwise decode its tables once per key.
func (ks *keys) table(path toml.Key, v toml.Primitive) map[string]toml.Primitive {
	name := path.String()
	if t, ok := ks.tables[name]; ok {
		return t
	}
	var table map[string]toml.Primitive
	if t := ks.md.Type(path...); len(path) > 0 && (t == "ArrayHash" || t == "Array") {
		var tables []map[string]toml.Primitive
		if ks.md.PrimitiveDecode(v, &tables) == nil {
			table = map[string]toml.Primitive{}
			for _, t := range tables {
				for k, v := range t {
					if _, ok := table[k]; !ok {
						table[k] = v
					}
				}
			}
		}
	} else if ks.md.PrimitiveDecode(v, &table) != nil {
		table = nil
	}
	if ks.tables == nil {
		ks.tables = map[string]map[string]toml.Primitive{}
	}
	ks.tables[name] = table
	return table
}

// lexed is the text the library lexes: data without the byte order mark
// it skips, so that its byte offsets index it.
func lexed(data []byte) []byte {
	switch {
	case bytes.HasPrefix(data, []byte("\xff\xfe")), bytes.HasPrefix(data, []byte("\xfe\xff")):
		return data[2:]
	case bytes.HasPrefix(data, []byte("\xef\xbb\xbf")):
		return data[3:]
	}
	return data
}

// line returns the line that defines key: the position the library
// recorded for it, or, for a table the file only implies ("[a.b]" and
// "a.b = 1" imply a), that of the first key under it. 0: unknown.
func (ks *keys) line(key toml.Key) int {
	if n := ks.recorded(key); n > 0 {
		return n
	}
	for _, k := range ks.md.Keys() {
		if len(k) > len(key) && slices.Equal(k[:len(key)], key) {
			if n := ks.recorded(k); n > 0 {
				return n
			}
		}
	}
	return 0
}

// recorded returns the line the library recorded for key, 0 if none.
// BurntSushi/toml v1.6.0 keeps a position per key but exports it only in
// the ParseError it returns when a key's value refuses to decode, so
// recorded finds the key's value and decodes it into a refusal. (A later
// version that exports key positions makes this a map lookup.)
func (ks *keys) recorded(key toml.Key) int {
	v := ks.doc
	for i := range key {
		var ok bool
		if v, ok = ks.table(key[:i], v)[key[i]]; !ok {
			return 0
		}
	}
	var pe toml.ParseError
	if err := ks.md.PrimitiveDecode(v, refusal{}); errors.As(err, &pe) {
		// Position.Line is the line the value ends on (a multi-line
		// string's last); its start is where the key is.
		if s := pe.Position.Start; s > 0 && s <= len(ks.input) {
			return 1 + bytes.Count(ks.input[:s], []byte("\n"))
		}
		return pe.Position.Line
	}
	return 0
}

// refusal refuses any value, so that the library reports its position.
type refusal struct{}

func (refusal) UnmarshalTOML(any) error { return errRefused }

var errRefused = errors.New("refused")
