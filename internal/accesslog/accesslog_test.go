package accesslog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// attrs are the worker's attributes, as daemon/worker.go gives them.
var attrs = []any{"proc", "worker", "pid", 4242, "gen", 3, "slot", 1}

// slogLine is what slog writes for e: the record the serve package used
// to log, through a handler made With attrs.
func slogLine(t testing.TB, json bool, e *Entry) string {
	var buf bytes.Buffer
	var h slog.Handler = slog.NewTextHandler(&buf, nil)
	if json {
		h = slog.NewJSONHandler(&buf, nil)
	}
	r := slog.NewRecord(e.Time, slog.LevelInfo, "access", 0)
	var status any = e.Status
	if e.StatusName != "" {
		status = e.StatusName
	}
	r.Add("proto", e.Proto, "client", e.Client, "method", e.Method, "path", e.Path,
		"status", status, "bytes", e.Bytes, "duration", e.Duration)
	if err := slog.New(h).With(attrs...).Handler().Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func ourLine(t testing.TB, json bool, e *Entry) string {
	var buf bytes.Buffer
	l, err := New(&buf, json, slog.LevelInfo, attrs...)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(e)
	return buf.String()
}

func TestSameAsSlog(t *testing.T) {
	at := time.Date(2026, 12, 7, 9, 30, 1, 234567891, time.UTC)
	for _, e := range []Entry{
		{Time: at, Proto: "http", Client: "127.0.0.1:51234", Method: "GET", Path: "/small/0001.bin", Status: 200, Bytes: 4096, Duration: 12345 * time.Nanosecond},
		{Time: at.Add(-at.Sub(at.Truncate(time.Second))), Proto: "native", Client: "[::1]:9", Method: "GET", Path: "/", StatusName: "not found", Duration: 0},
		{Time: at.In(time.FixedZone("x", -7*3600)), Proto: "http", Client: "10.0.0.1:1", Method: "HEAD", Path: "/a b=c\"d\\e\x00\x7f\u2028\xff/é", Status: 400, Bytes: -1, Duration: 90 * time.Minute},
		{Time: at, Proto: "", Client: "", Method: "", Path: "", Status: 0},
		{Time: at, Proto: "http", Client: "c", Method: "GET", Path: "/\t\n\r\u00a0\u200b", Status: 206, Bytes: 1 << 40, Duration: time.Microsecond},
	} {
		for _, json := range []bool{false, true} {
			if got, want := ourLine(t, json, &e), slogLine(t, json, &e); got != want {
				t.Errorf("json=%v:\n got %q\nwant %q", json, got, want)
			}
		}
	}
}

// TestSameAsSlogEachRule: every quoting and escaping rule on its own, in
// a string nothing else makes slog quote or escape: a rule the
// implementation got wrong shows even where another rule would have hidden
// it (a backslash alone is not quoted in text; a rune that is not
// printable, or invalid UTF-8, alone is; JSON's \u escapes have two
// nonzero hex digits; U+2029 is not U+2028).
func TestSameAsSlogEachRule(t *testing.T) {
	at := time.Date(2026, 12, 7, 9, 30, 1, 234567891, time.Local)
	for _, s := range []string{
		"/a\\b", "/\u200b", "/\u00ad", "/\ufeff", "/\xff", "/\xe2\x80", "/\x1f", "/\x1b[0m", "/\x7f",
		"/\u2028", "/\u2029", "/=", "/ ", "/\t", "/\"", "/é", "/\U0001F600", "/<&>", "", "/\u0085",
	} {
		e := Entry{Time: at, Proto: s, Client: s, Method: s, Path: s, StatusName: s, Bytes: 1, Duration: time.Millisecond}
		for _, json := range []bool{false, true} {
			if got, want := ourLine(t, json, &e), slogLine(t, json, &e); got != want {
				t.Errorf("%q, json=%v:\n got %q\nwant %q", s, json, got, want)
			}
		}
	}
}

// FuzzSameAsSlog: for any strings, times and numbers, a line is slog's,
// in both formats.
func FuzzSameAsSlog(f *testing.F) {
	f.Add("http", "127.0.0.1:1", "GET", "/x", "", 200, int64(4096), int64(12345), int64(1796635801234567891))
	f.Add("native", "[::1]:2", "STAT", "/a b", "not found", 0, int64(0), int64(-5), int64(0))
	f.Add("h\x00", "=", "\"", "\\\xff\u2029", " ", -1, int64(-1), int64(1<<62), int64(-1<<62))
	f.Fuzz(func(t *testing.T, proto, client, method, path, name string, status int, n, d, ns int64) {
		e := Entry{Time: time.Unix(0, ns).UTC(), Proto: proto, Client: client, Method: method, Path: path,
			Status: status, StatusName: name, Bytes: n, Duration: time.Duration(d)}
		if y := e.Time.Year(); y < 0 || y >= 10000 {
			return // slog writes an error there instead of the time; no clock of ours says so
		}
		for _, json := range []bool{false, true} {
			if got, want := ourLine(t, json, &e), slogLine(t, json, &e); got != want {
				t.Fatalf("json=%v:\n got %q\nwant %q", json, got, want)
			}
		}
	})
}

func TestLevel(t *testing.T) {
	var buf bytes.Buffer
	var lv slog.LevelVar
	lv.Set(slog.LevelWarn)
	l, err := New(&buf, false, &lv)
	if err != nil {
		t.Fatal(err)
	}
	e := Entry{Time: time.Now(), Proto: "http", Status: 200}
	l.Log(&e)
	if buf.Len() != 0 || l.Enabled() {
		t.Fatalf("log_level warn: wrote %q, enabled %v", buf.String(), l.Enabled())
	}
	lv.Set(slog.LevelDebug)
	l.Log(&e)
	if !strings.HasSuffix(buf.String(), " status=200 bytes=0 duration=0s\n") {
		t.Fatalf("log_level debug: wrote %q", buf.String())
	}
	buf.Reset()
	l, err = New(&buf, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.Log(&e); buf.Len() == 0 {
		t.Fatal("a nil level: no line (slog's default level is info)")
	}
	var nilLogger *Logger
	if nilLogger.Enabled() {
		t.Fatal("a nil Logger is enabled")
	}
}

func TestNewRefuses(t *testing.T) {
	for _, a := range [][]any{{"odd"}, {1, "x"}, {"k", 1.5}, {"k", []byte("x")}} {
		if _, err := New(nil, false, slog.LevelInfo, a...); err == nil {
			t.Errorf("New with attributes %v: no error", a)
		}
	}
}

// A line costs no allocation once the pool has a buffer.
func TestNoAllocs(t *testing.T) {
	l, err := New(discard{}, false, slog.LevelInfo, attrs...)
	if err != nil {
		t.Fatal(err)
	}
	e := Entry{Time: time.Now(), Proto: "http", Client: "127.0.0.1:5", Method: "GET", Path: "/small/0001.bin", Status: 200, Bytes: 4096, Duration: time.Millisecond}
	l.Log(&e)
	if n := testing.AllocsPerRun(100, func() { l.Log(&e) }); n > 1 {
		t.Errorf("%v allocations per line", n)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func BenchmarkLine(b *testing.B) {
	e := Entry{Time: time.Now(), Proto: "http", Client: "127.0.0.1:51234", Method: "GET", Path: "/small/0001.bin", Status: 200, Bytes: 4096, Duration: 12345 * time.Nanosecond}
	b.Run("accesslog", func(b *testing.B) {
		l, _ := New(discard{}, false, slog.LevelInfo, attrs...)
		for b.Loop() {
			l.Log(&e)
		}
	})
	b.Run("slog", func(b *testing.B) {
		log := slog.New(slog.NewTextHandler(discard{}, nil)).With(attrs...)
		for b.Loop() {
			log.Info("access", "proto", e.Proto, "client", e.Client, "method", e.Method, "path", e.Path,
				"status", e.Status, "bytes", e.Bytes, "duration", e.Duration)
		}
	})
}
