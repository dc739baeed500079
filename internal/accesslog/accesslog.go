// Package accesslog writes access-log lines (access_log = true): the very
// bytes log/slog's TextHandler or JSONHandler writes for
//
//	logger.Info("access", "proto", p, "client", c, "method", m, "path", path,
//		"status", s, "bytes", n, "duration", d)
//
// on a logger made With the process's attributes, formatted by hand. A
// line through slog costs a Record, every value boxed, the caller's
// program counter and the handler's generic walk: 11% of a worker's CPU at
// 4 KiB keep-alive requests (bench/findings.md). Here it is appends into a
// pooled buffer and one Write: a line stays one record for the writer
// (internal/logbuf batches them), and whoever reads the journal sees the
// same lines as before.
//
// The formatting rules are slog's (log/slog's handler.go, text_handler.go
// and json_handler.go): the tests compare every line with slog's own, and
// a fuzz test does so for any strings.
package accesslog

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Entry is one access-log line.
type Entry struct {
	Time       time.Time // when the response ended
	Proto      string    // "http" or "native"
	Client     string
	Method     string
	Path       string
	Status     int    // the HTTP status; not written if StatusName is set
	StatusName string // a native status's name ("ok", "not found"); "" for HTTP
	Bytes      int64
	Duration   time.Duration
}

// Logger writes Entries to w. Its methods are safe for concurrent use.
type Logger struct {
	w      io.Writer
	json   bool
	level  slog.Leveler
	prefix []byte // the process's attributes, formatted once, each with its separator
	bufs   sync.Pool
}

// New returns a Logger that writes to w in slog's text format, or JSON if
// json, lines at level info while level (nil: info) allows them, with attrs (as
// slog.Logger.With takes them: key, value pairs of string, int, int64 or
// uint64 values) after the message.
func New(w io.Writer, json bool, level slog.Leveler, attrs ...any) (*Logger, error) {
	if len(attrs)%2 != 0 {
		return nil, fmt.Errorf("accesslog: %d attribute arguments, want key, value pairs", len(attrs))
	}
	if level == nil {
		level = slog.LevelInfo // as slog.HandlerOptions takes a nil Level
	}
	l := &Logger{w: w, json: json, level: level}
	for i := 0; i < len(attrs); i += 2 {
		k, ok := attrs[i].(string)
		if !ok {
			return nil, fmt.Errorf("accesslog: attribute key %v is a %T, want a string", attrs[i], attrs[i])
		}
		switch v := attrs[i+1].(type) {
		case string:
			l.prefix = l.appendString(l.key(l.prefix, k), v)
		case int:
			l.prefix = strconv.AppendInt(l.key(l.prefix, k), int64(v), 10)
		case int64:
			l.prefix = strconv.AppendInt(l.key(l.prefix, k), v, 10)
		case uint64:
			l.prefix = strconv.AppendUint(l.key(l.prefix, k), v, 10)
		default:
			return nil, fmt.Errorf("accesslog: attribute %q is a %T, want a string or an integer", k, v)
		}
	}
	l.bufs.New = func() any { b := make([]byte, 0, 512); return &b }
	return l, nil
}

// Enabled reports whether a line would be written: l is not nil and its
// level is info or below.
func (l *Logger) Enabled() bool {
	return l != nil && l.level.Level() <= slog.LevelInfo
}

// Log writes e's line if l is Enabled.
func (l *Logger) Log(e *Entry) {
	if !l.Enabled() {
		return
	}
	bp := l.bufs.Get().(*[]byte)
	b := l.Append((*bp)[:0], e)
	l.w.Write(b) // a logger has nowhere to report an error
	*bp = b
	l.bufs.Put(bp)
}

// Append appends e's line, its newline included, to b.
func (l *Logger) Append(b []byte, e *Entry) []byte {
	if l.json {
		b = append(b, `{"time":"`...)
		b = e.Time.Round(0).AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","level":"INFO","msg":"access"`...)
	} else {
		b = append(b, "time="...)
		b = appendRFC3339Millis(b, e.Time.Round(0))
		b = append(b, " level=INFO msg=access"...)
	}
	b = append(b, l.prefix...)
	b = l.appendString(l.key(b, "proto"), e.Proto)
	b = l.appendString(l.key(b, "client"), e.Client)
	b = l.appendString(l.key(b, "method"), e.Method)
	b = l.appendString(l.key(b, "path"), e.Path)
	if e.StatusName != "" {
		b = l.appendString(l.key(b, "status"), e.StatusName)
	} else {
		b = strconv.AppendInt(l.key(b, "status"), int64(e.Status), 10)
	}
	b = strconv.AppendInt(l.key(b, "bytes"), e.Bytes, 10)
	b = l.key(b, "duration")
	if l.json {
		b = strconv.AppendInt(b, int64(e.Duration), 10) // what encoding/json makes of a Duration
		return append(b, "}\n"...)
	}
	b = append(b, e.Duration.String()...)
	return append(b, '\n')
}

// key appends an attribute's separator and key. Every key here is a plain
// word, which neither format quotes or escapes.
func (l *Logger) key(b []byte, k string) []byte {
	if l.json {
		b = append(b, ',', '"')
		b = append(b, k...)
		return append(b, '"', ':')
	}
	b = append(b, ' ')
	b = append(b, k...)
	return append(b, '=')
}

func (l *Logger) appendString(b []byte, s string) []byte {
	if l.json {
		b = append(b, '"')
		b = appendEscapedJSONString(b, s)
		return append(b, '"')
	}
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

// appendRFC3339Millis is slog's text time: RFC 3339 with exactly three
// digits of milliseconds (truncated).
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10) // so that four digits follow the point
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...) // without the fourth
}

// needsQuoting is slog's text rule: empty, a space, '=', a character JSON
// would escape (but for a backslash), invalid UTF-8, or a rune that is a
// space or not printable.
func needsQuoting(s string) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b != '\\' && (b == ' ' || b == '=' || !safe(b)) {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// safe reports whether an ASCII byte goes into a JSON string as it is:
// not a control byte below 0x20 (DEL is safe, as in encoding/json), '"' or
// '\\'.
func safe(b byte) bool { return b >= 0x20 && b != '"' && b != '\\' }

const hexDigits = "0123456789abcdef"

// appendEscapedJSONString is slog's JSON string escaping (encoding/json's
// without the HTML escapes): '"', '\\' and control bytes escaped, invalid
// UTF-8 as U+FFFD, and U+2028 and U+2029 escaped for JavaScript.
func appendEscapedJSONString(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if safe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}
