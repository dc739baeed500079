package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/internal/logbuf"
)

// logFlushTimeout bounds how long a process that exits waits for its log's
// reader to take the lines still in memory.
const logFlushTimeout = 2 * time.Second

// newLogWriter is stderr for a process's logger: records wait in memory
// and one goroutine writes them in batches (internal/logbuf), so that
// neither a busy log (access_log) nor a reader that stops (a hung
// journal) holds up serving. Dropped records are reported through the
// logger log returns, once stderr takes lines again.
func newLogWriter(log func() *slog.Logger) *logbuf.Writer {
	return logbuf.New(os.Stderr, func(n int) {
		log().Warn("log lines dropped: stderr (the journal, under systemd) did not take them as fast as they came", "lines", n)
	})
}

// NewLogger builds the logger the configuration asks for, with its level
// in lv so a reload can change it while goroutines keep logging. The
// daemon's processes log to stderr (under systemd, the journal) through
// newLogWriter.
func NewLogger(w io.Writer, c *config.Config, lv *slog.LevelVar) *slog.Logger {
	setLevel(lv, c)
	opts := &slog.HandlerOptions{Level: lv}
	out := w
	lb, isStderr := w.(*logbuf.Writer)
	if isStderr {
		// Each line's level as the journal's priority (journal.go).
		out = journalWriter(w)
	}
	var h slog.Handler = slog.NewTextHandler(out, opts)
	if c.LogFormat == "json" {
		h = slog.NewJSONHandler(out, opts)
	}
	if isStderr {
		h = urgentHandler{h, lb.Flush}
	}
	return slog.New(h)
}

// urgentHandler has a record at level warn or above written at once
// (flush) instead of within logbuf.Delay: whoever reads the journal after
// a refused reload, a killed worker or a failed start finds the line
// there, and a process that dies has written its last error.
type urgentHandler struct {
	slog.Handler
	flush func()
}

func (h urgentHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.flush()
	}
	return err
}

func (h urgentHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return urgentHandler{h.Handler.WithAttrs(as), h.flush}
}

func (h urgentHandler) WithGroup(name string) slog.Handler {
	return urgentHandler{h.Handler.WithGroup(name), h.flush}
}

func setLevel(lv *slog.LevelVar, c *config.Config) {
	var l slog.Level
	if l.UnmarshalText([]byte(c.LogLevel)) == nil {
		lv.Set(l)
	}
}
