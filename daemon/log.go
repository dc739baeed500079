package daemon

import (
	"io"
	"log/slog"

	"github.com/zfs-serve/zfs-serve/config"
)

// NewLogger builds the logger the configuration asks for. Logs go to
// stderr; under systemd that is the journal.
func NewLogger(w io.Writer, c *config.Config) *slog.Logger {
	var lv slog.Level
	lv.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: lv}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
