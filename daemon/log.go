package daemon

import (
	"io"
	"log/slog"

	"github.com/zfs-serve/zfs-serve/config"
)

// NewLogger builds the logger the configuration asks for, with its level
// in lv so a reload can change it while goroutines keep logging. Logs go
// to stderr; under systemd that is the journal.
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
