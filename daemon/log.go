package daemon

import (
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
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func setLevel(lv *slog.LevelVar, c *config.Config) {
	var l slog.Level
	if l.UnmarshalText([]byte(c.LogLevel)) == nil {
		lv.Set(l)
	}
}
