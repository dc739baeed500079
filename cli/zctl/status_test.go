package zctl

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time {
	t := now.Add(d)
	return &t
}

// drainingStatus is a supervisor draining with a restarting slot, two
// transfers shown and three left out.
func drainingStatus() *ctl.Status {
	return &ctl.Status{
		Version:    "0.1.0",
		State:      ctl.StateDraining,
		PID:        4181,
		Started:    now.Add(-192 * time.Second),
		Uptime:     192.4,
		Config:     "/etc/zfs-serve/zfs-serve.toml + --listen",
		Root:       "/srv/zfs-serve",
		ZeroCopy:   "splice",
		Generation: 2,
		Control:    "/run/zfs-serve/control.sock",
		Listeners: []ctl.Listener{
			{Name: "zfs", Addr: "127.0.0.1:7070", Activated: true},
			{Name: "zfs", Addr: "[::1]:40123"},
		},
		Workers: []ctl.Worker{
			{PID: 4190, Generation: 2, Slot: 0, State: "draining", Active: 2, Connections: 512, BytesSent: 3 << 30, Started: now.Add(-182 * time.Second)},
			{PID: 0, Generation: 2, Slot: 1, State: "restarting", Restarts: 1, LastExit: "killed by signal SIGKILL", NextStart: at(2 * time.Second)},
			{PID: 0, Generation: 2, Slot: 2, State: "restarting", Restarts: 12},
			{PID: 4411, Generation: 1, Slot: 0, State: "draining", Active: 1, Connections: 1, BytesSent: 1536 << 20, Started: now.Add(-3 * time.Hour)},
		},
		Transfers: []ctl.Transfer{
			{WorkerPID: 4190, Protocol: "native", Client: "127.0.0.1:50432", Path: "/big.iso", Sent: 1 << 30, Total: 4 << 30, Age: 12.4},
			{WorkerPID: 4411, Protocol: "http", Client: "[::1]:50500", Path: "/a\tb.txt", Sent: 512, Total: 0, Age: 0.2},
		},
		TransfersOmitted: 3,
		Totals:           ctl.Totals{Workers: 2, Active: 3, Connections: 1024, BytesSent: 5 << 30, Restarts: 13},
		DrainDeadline:    at(45 * time.Second),
		LastReload:       "ok: generation 2 serving with 3 workers",
	}
}

func TestWriteStatus(t *testing.T) {
	tests := []struct {
		name string
		st   *ctl.Status
		want string
	}{
		{"draining", drainingStatus(), `zfs-serve 0.1.0  draining  pid 4181  up 3m12s  generation 2
config   /etc/zfs-serve/zfs-serve.toml + --listen
root     /srv/zfs-serve (splice)
control  /run/zfs-serve/control.sock
listen   zfs 127.0.0.1:7070 (socket-activated), zfs [::1]:40123
totals   2 workers, 3 active, 1024 connections, 5.00 GiB sent, 13 restarts
served   0 native, 0 http requests (0 B over http)
drain    remaining transfers are cut off in 45s
reload   ok: generation 2 serving with 3 workers

WORKER  GEN  SLOT  STATE       ACTIVE  CONNS  SENT      RESTARTS  UP     LAST EXIT
4190    2    0     draining    2       512    3.00 GiB  0         3m02s  -
-       2    1     restarting  0       0      0 B       1         in 2s  killed by signal SIGKILL
-       2    2     restarting  0       0      0 B       12        -      -
4411    1    0     draining    1       1      1.50 GiB  0         3h00m  -

TRANSFERS (5)
CLIENT           PROTO   WORKER  PATH         SENT      TOTAL     DONE   AGE
127.0.0.1:50432  native  4190    /big.iso     1.00 GiB  4.00 GiB  25.0%  12s
[::1]:50500      http    4411    "/a\tb.txt"  512 B     0 B       -      0s
... and 3 more (see --json)
`},
		{"serving, nothing in flight", &ctl.Status{
			Version: "0.1.0", State: ctl.StateServing, PID: 7, Uptime: 5, Generation: 1,
			Config: "built-in defaults", Root: "/tmp/x", ZeroCopy: "sendfile", Control: "/tmp/c.sock",
			Workers: []ctl.Worker{{PID: 8, Generation: 1, State: "ready", Started: now.Add(-4 * time.Second)}},
			Totals:  ctl.Totals{Workers: 1},
		}, `zfs-serve 0.1.0  serving  pid 7  up 5s  generation 1
config   built-in defaults
root     /tmp/x (sendfile)
control  /tmp/c.sock
listen   none (not accepting)
totals   1 workers, 0 active, 0 connections, 0 B sent, 0 restarts
served   0 native, 0 http requests (0 B over http)

WORKER  GEN  SLOT  STATE  ACTIVE  CONNS  SENT  RESTARTS  UP  LAST EXIT
8       1    0     ready  0       0      0 B   0         4s  -

TRANSFERS (0)
none
`},
		{"only omitted transfers", &ctl.Status{
			Version: "0.1.0", State: ctl.StateReloading, PID: 7, Uptime: 3700, Generation: 3,
			Config: "c", Root: "/r", ZeroCopy: "mmap", Control: "/c", LastReload: "failed: f.toml:1: bad\x1b[2J",
			TransfersOmitted: 4, Listeners: []ctl.Listener{{Name: "metrics", Addr: "127.0.0.1:7071"}},
		}, `zfs-serve 0.1.0  reloading  pid 7  up 1h01m  generation 3
config   c
root     /r (mmap)
control  /c
listen   none (not accepting), metrics 127.0.0.1:7071
totals   0 workers, 0 active, 0 connections, 0 B sent, 0 restarts
served   0 native, 0 http requests (0 B over http)
reload   "failed: f.toml:1: bad\x1b[2J"

WORKER  GEN  SLOT  STATE  ACTIVE  CONNS  SENT  RESTARTS  UP  LAST EXIT

TRANSFERS (4)
... and 4 more (see --json)
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			writeStatus(&b, tt.st, now)
			if got := b.String(); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s\n%s", got, tt.want, firstDiff(got, tt.want))
			}
		})
	}
}

// firstDiff points at the first line where got and want differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("first difference on line %d:\n got %q\nwant %q", i+1, gl, wl)
		}
	}
	return ""
}

func TestRemaining(t *testing.T) {
	tr := func(path string, sent, total int64, client string) ctl.Transfer {
		return ctl.Transfer{Path: path, Sent: sent, Total: total, Client: client}
	}
	five := []ctl.Transfer{
		tr("/a", 1, 4, "10.0.0.1:1"), tr("/b", 1, 2, "10.0.0.2:2"), tr("/c", 0, 0, "10.0.0.3:3"),
		tr("/d", 1, 1, "10.0.0.4:4"), tr("/e", 1, 1, "10.0.0.5:5"),
	}
	tests := []struct {
		name string
		st   *ctl.Status
		want string
	}{
		{"no status", nil, "waiting..."},
		{"no transfers", &ctl.Status{Totals: ctl.Totals{Workers: 2}}, "waiting for 2 workers to exit"},
		{"no transfers, deadline", &ctl.Status{Totals: ctl.Totals{Workers: 1}, DrainDeadline: at(time.Minute)}, "waiting for 1 workers to exit"},
		{"one", &ctl.Status{Transfers: five[:1]}, "waiting for 1 transfers: /a 25.0% (10.0.0.1:1)"},
		{"three", &ctl.Status{Transfers: five[:3]}, "waiting for 3 transfers: /a 25.0% (10.0.0.1:1), /b 50.0% (10.0.0.2:2), /c - (10.0.0.3:3)"},
		{"five", &ctl.Status{Transfers: five}, "waiting for 5 transfers: /a 25.0% (10.0.0.1:1), /b 50.0% (10.0.0.2:2), /c - (10.0.0.3:3), +2 more"},
		{"five and omitted", &ctl.Status{Transfers: five, TransfersOmitted: 10}, "waiting for 15 transfers: /a 25.0% (10.0.0.1:1), /b 50.0% (10.0.0.2:2), /c - (10.0.0.3:3), +12 more"},
		{"two and omitted", &ctl.Status{Transfers: five[:2], TransfersOmitted: 3}, "waiting for 5 transfers: /a 25.0% (10.0.0.1:1), /b 50.0% (10.0.0.2:2), +3 more"},
		{"only omitted", &ctl.Status{TransfersOmitted: 4}, "waiting for 4 transfers: +4 more"},
		{"deadline", &ctl.Status{Transfers: five[:1], DrainDeadline: at(90 * time.Second)}, "waiting for 1 transfers: /a 25.0% (10.0.0.1:1); cut off in 1m30s"},
		{"deadline passed", &ctl.Status{Transfers: five[:1], DrainDeadline: at(-time.Second)}, "waiting for 1 transfers: /a 25.0% (10.0.0.1:1); cut off in 0s"},
		{"unprintable path", &ctl.Status{Transfers: []ctl.Transfer{tr("/x\n\x1b]0;owned\a", 1, 2, "c:1")}}, `waiting for 1 transfers: "/x\n\x1b]0;owned\a" 50.0% (c:1)`},
	}
	for _, tt := range tests {
		if got := remaining(tt.st, now); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
}

func TestPercentAndPrintable(t *testing.T) {
	for _, tt := range []struct {
		a, b int64
		want string
	}{{0, 0, "-"}, {5, -1, "-"}, {0, 10, "0.0%"}, {1, 3, "33.3%"}, {2, 3, "66.7%"}, {10, 10, "100.0%"}} {
		if got := percent(tt.a, tt.b); got != tt.want {
			t.Errorf("percent(%d, %d) = %q, want %q", tt.a, tt.b, got, tt.want)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"/plain/path.iso", "/plain/path.iso"},
		{"/with space/é ü 日本", "/with space/é ü 日本"},
		{"/tab\there", `"/tab\there"`},
		{"/nl\n", `"/nl\n"`},
		{"/esc\x1b[31m", `"/esc\x1b[31m"`},
		{"/del\x7f", `"/del\x7f"`},
		{"", ""},
	} {
		if got := printable(tt.in); got != tt.want {
			t.Errorf("printable(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
