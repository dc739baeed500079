package daemon

import (
	"io"
	"log/slog"
	"testing"

	"github.com/zfs-serve/zfs-serve/config"
)

// TestUrgentHandler: a record at warn or above asks for a flush, one
// below does not, through loggers derived with With and WithGroup too.
func TestUrgentHandler(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		flushes := 0
		c := &config.Config{LogFormat: format, LogLevel: "debug"}
		inner := NewLogger(io.Discard, c, new(slog.LevelVar)).Handler()
		log := slog.New(urgentHandler{inner, func() { flushes++ }})
		derived := log.With("proc", "worker").WithGroup("g")
		for _, tc := range []struct {
			log   *slog.Logger
			level slog.Level
			want  int
		}{
			{log, slog.LevelDebug, 0},
			{log, slog.LevelInfo, 0},
			{log, slog.LevelWarn, 1},
			{derived, slog.LevelInfo, 1},
			{derived, slog.LevelError, 2},
		} {
			tc.log.Log(t.Context(), tc.level, "m")
			if flushes != tc.want {
				t.Fatalf("%s: after a %v record: %d flushes, want %d", format, tc.level, flushes, tc.want)
			}
		}
	}
}

// TestNewLoggerUrgentOnLogbuf: NewLogger adds the flush only over a
// logbuf.Writer.
func TestNewLoggerUrgentOnLogbuf(t *testing.T) {
	c := &config.Config{LogFormat: "text", LogLevel: "info"}
	if _, ok := NewLogger(io.Discard, c, new(slog.LevelVar)).Handler().(urgentHandler); ok {
		t.Fatal("urgentHandler over a plain writer")
	}
	lb := newLogWriter(func() *slog.Logger { return slog.New(slog.DiscardHandler) })
	defer lb.Close(logFlushTimeout)
	if _, ok := NewLogger(lb, c, new(slog.LevelVar)).Handler().(urgentHandler); !ok {
		t.Fatal("no urgentHandler over a logbuf.Writer")
	}
}
