package config

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// decode parses data strictly into c.
func decode(path string, data []byte, c *Config) error {
	md, err := toml.Decode(string(data), c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			msg := pe.Message
			if pe.LastKey != "" {
				msg = fmt.Sprintf("key %q: %s", pe.LastKey, msg)
			}
			return fmt.Errorf("%s:%d: %s", path, pe.Position.Line, msg)
		}
		// Type mismatches come as "toml: line N (last key "k"): ...".
		if m := typeErr.FindStringSubmatch(err.Error()); m != nil {
			return fmt.Errorf("%s:%s: key %q: %s", path, m[1], m[2], m[3])
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		var msgs []string
		for _, k := range und {
			msgs = append(msgs, fmt.Sprintf("%s:%d: unknown key %q", path, keyLine(data, k), k.String()))
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	// Values are validated by Load once flags have overridden them: a flag
	// may replace a value the file got wrong.
	// Relative paths in a file mean relative to the file, not to wherever
	// the daemon happens to start (/ under systemd).
	for _, p := range []struct {
		key string
		v   *string
	}{{"root", &c.Root}, {"control", &c.Control}, {"digest_cache", &c.DigestCache}} {
		if md.IsDefined(p.key) && *p.v != "" && *p.v != DigestCacheMemory && !filepath.IsAbs(*p.v) {
			*p.v = filepath.Join(filepath.Dir(path), *p.v)
		}
	}
	return nil
}

var typeErr = regexp.MustCompile(`^toml: line (\d+) \(last key "(.*?)"\): (.*)$`)

// keyLine finds the line that defines key: the assignment "a = ..." in
// the right [table], a dotted assignment "t.a = ...", or the [table] or
// [[array]] header of a table key. When a key has no line of its own (a key
// inside an inline table, or a table created implicitly by [a.b]), it
// falls back to the first line that defines its parent or one of its
// children. It returns 0 if it cannot tell (the error then names only file
// and key).
func keyLine(data []byte, key toml.Key) int {
	var table []string
	fallback := 0
	for i, line := range bytes.Split(data, []byte("\n")) {
		l := strings.TrimSpace(string(line))
		var full []string
		if strings.HasPrefix(l, "[") {
			h, _ := cutUnquoted(strings.TrimLeft(l, "["), ']')
			table = splitKey(h)
			full = table
		} else {
			k, ok := cutUnquoted(l, '=')
			if !ok || strings.HasPrefix(l, "#") {
				continue
			}
			full = append(append([]string(nil), table...), splitKey(k)...)
		}
		if slices.Equal(full, key) {
			return i + 1
		}
		if fallback == 0 && (hasPrefix(full, key) || hasPrefix(key, full)) {
			fallback = i + 1
		}
	}
	return fallback
}

// splitKey splits a TOML key ("a.b", "a . \"b.c\"") into its parts.
func splitKey(s string) []string {
	var parts []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case quote != 0:
			if ch == quote {
				quote = 0
			} else {
				cur.WriteByte(ch)
			}
		case ch == '"' || ch == '\'':
			quote = ch
		case ch == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(ch)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}

// cutUnquoted returns s up to the first sep outside quotes.
func cutUnquoted(s string, sep byte) (string, bool) {
	var quote byte
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case quote != 0:
			if ch == quote {
				quote = 0
			}
		case ch == '"' || ch == '\'':
			quote = ch
		case ch == sep:
			return s[:i], true
		}
	}
	return s, false
}

// hasPrefix reports whether key starts with the parts of prefix and is longer.
func hasPrefix(key, prefix []string) bool {
	return len(key) > len(prefix) && slices.Equal(key[:len(prefix)], prefix)
}
