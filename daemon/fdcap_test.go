package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/serve"
)

func TestCapacityFor(t *testing.T) {
	sendfile := serve.Options{Mode: config.ModeSendfile, FileCache: time.Second}
	tests := []struct {
		name        string
		o           serve.Options
		limit, open int
		want        int
	}{
		// 64 - 10 open - 16 cache - 8 reserve = 30, 3 per connection.
		{"nofile 64", sendfile, 64, 10, 10},
		{"nofile 64, no cache", serve.Options{Mode: config.ModeSendfile}, 64, 10, 15},
		// 64 - 10 - 16 - 32 idle pipes - 8 < 0: one connection still.
		{"nofile 64, splice", serve.Options{Mode: config.ModeSplice, FileCache: time.Second}, 64, 10, 1},
		{"nofile 1024", sendfile, 1024, 12, (1024 - 12 - 256 - 8) / 3},
		{"nofile 1024, splice", serve.Options{Mode: config.ModeSplice, FileCache: time.Second}, 1024, 12, (1024 - 12 - 256 - 32 - 8) / 5},
		// The cache is at most 4096 descriptors.
		{"systemd's 524288", sendfile, 524288, 12, (524288 - 12 - 4096 - 8) / 3},
	}
	for _, tt := range tests {
		if got := capacityFor(tt.o, tt.limit, tt.open); got != tt.want {
			t.Errorf("%s: capacity %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestFDCapacity: this process's own figures are sane.
func TestFDCapacity(t *testing.T) {
	c, limit, open := fdCapacity(serve.Options{Mode: config.ModeSendfile})
	if limit > 0 && (open < 3 || open >= limit || c < 1 || c > limit/3) {
		t.Fatalf("capacity %d from limit %d with %d open", c, limit, open)
	}
}

// TestWarnCapacity: the warning says what happens past the capacity in
// each dispatch mode, and nothing is said when the share fits.
func TestWarnCapacity(t *testing.T) {
	for _, c := range []struct {
		dispatch string
		capacity int
		want     string
	}{
		{config.DispatchHandoff, 10, "past it connections are answered busy"},
		{config.DispatchAccept, 10, "connections wait in the listen backlog"},
		{config.DispatchHandoff, 1000, ""},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		cfg := &config.Config{MaxConnections: 200, Workers: 2, Dispatch: c.dispatch}
		warnCapacity(log, cfg, c.capacity, 64, 5)
		got := buf.String()
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%s, capacity %d: logged %q, want %q", c.dispatch, c.capacity, got, c.want)
		}
	}
}
