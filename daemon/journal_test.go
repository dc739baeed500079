package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestSyslogPrefix: each record of slog's text and JSON handlers gets its
// level as sd-daemon(3)'s prefix, so the journal files it at that
// PRIORITY; a line that names no level at its start (an access log line)
// is left alone.
func TestSyslogPrefix(t *testing.T) {
	for _, json := range []bool{false, true} {
		for _, c := range []struct {
			level slog.Level
			want  string
		}{{slog.LevelError, "<3>"}, {slog.LevelWarn, "<4>"}, {slog.LevelInfo, "<6>"}, {slog.LevelDebug, "<7>"}, {slog.LevelWarn + 2, "<4>"}} {
			var buf bytes.Buffer
			w := levelPrefixer{&buf}
			opts := &slog.HandlerOptions{Level: slog.LevelDebug}
			var h slog.Handler = slog.NewTextHandler(w, opts)
			if json {
				h = slog.NewJSONHandler(w, opts)
			}
			slog.New(h).Log(t.Context(), c.level, "level=ERROR in the message", "k", `"level":"ERROR"`)
			if !strings.HasPrefix(buf.String(), c.want) || strings.Count(buf.String(), "<") != 1 {
				t.Errorf("json %v, level %v: %q, want it to start with %s", json, c.level, buf.String(), c.want)
			}
		}
	}
	for _, line := range []string{
		`127.0.0.1 - - [07/Dec/2026:19:00:00 +0000] "GET /level=ERROR HTTP/1.1" 200 5`,
		`msg=x level=ERROR`,
		``,
	} {
		if p := syslogPrefix([]byte(line)); p != "" {
			t.Errorf("syslogPrefix(%q) = %q, want none", line, p)
		}
	}
}
