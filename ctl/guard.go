package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultMaxConns is Server.MaxConns unless set: zctl uses one connection
// per command, so even a busy machine's monitoring needs few.
const DefaultMaxConns = 64

// reject answers a connection over the MaxConns limit with an error and
// closes it, without waiting for the peer: its request is not read.
func (s *Server) reject(c *net.UnixConn, max int) {
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	b, _ := json.Marshal(&Response{V: Version, Error: fmt.Sprintf("too many control connections (%d); try again", max)})
	c.Write(append(b, '\n'))
	c.Close()
	s.rejectLog.Log(s.Log, s.clock(), slog.LevelWarn, "control connection rejected: too many open", "max", max)
}

// clock is the time for the log limits; tests set s.now.
func (s *Server) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// duplicateKey reports a key that appears twice in one object of the JSON
// text b (compared as encoding/json matches keys to fields: without
// regard to case). encoding/json would keep the last one silently, so
// {"cmd":"status","cmd":"kill"} would be a kill that a reader of the
// request, or a log, could take for a status. Malformed JSON is not its
// business: it returns nil and json.Unmarshal says what is wrong.
func duplicateKey(b []byte) error {
	type object struct {
		keys    map[string]bool
		wantKey bool
	}
	var stack []*object // nil entries are arrays
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		top := (*object)(nil)
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, &object{keys: map[string]bool{}, wantKey: true})
				continue
			case '[':
				stack = append(stack, nil)
				continue
			}
			stack = stack[:len(stack)-1] // '}' or ']': a value of the enclosing object ends
			if len(stack) > 0 {
				top = stack[len(stack)-1]
			} else {
				top = nil
			}
		case string:
			if top != nil && top.wantKey {
				k := foldKey(v)
				if top.keys[k] {
					return fmt.Errorf("duplicate key %q", v)
				}
				top.keys[k] = true
				top.wantKey = false
				continue
			}
		}
		if top != nil {
			top.wantKey = true // a value ended
		}
	}
}

// foldKey folds k as encoding/json does to match a key to a field
// (its foldName): ASCII letters to upper case, any other rune to the
// smallest of its simple case folding orbit ("ſ" to "S", the Kelvin sign
// to "K").
func foldKey(k string) string {
	out := make([]byte, 0, len(k))
	for _, r := range k {
		if r < utf8.RuneSelf {
			out = append(out, byte(unicode.ToUpper(r)))
			continue
		}
		for {
			r2 := unicode.SimpleFold(r)
			if r2 <= r {
				r = r2
				break
			}
			r = r2
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}
