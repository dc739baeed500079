package ctl

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/internal/ratelog"
)

func TestDuplicateKey(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // "" for none
	}{
		{`{"v":1,"cmd":"status"}`, ""},
		{`{"v":1,"cmd":"status","cmd":"kill"}`, `duplicate key "cmd"`},
		{`{"cmd":"kill","v":1,"wait":true,"cmd":"status"}`, `duplicate key "cmd"`},
		{`{"v":1,"cmd":"status","CMD":"kill"}`, `duplicate key "CMD"`},    // encoding/json matches without case
		{`{"v":1,"wait":true,"WAİT":false}`, ""},                          // not a fold of "wait"
		{`{"v":1,"x":{"a":1,"a":2},"cmd":"status"}`, `duplicate key "a"`}, // nested too
		{`{"v":1,"x":{"cmd":1},"cmd":"status"}`, ""},                      // one per object
		{`{"v":1,"x":[{"a":1},{"a":2}],"a":[1,"a"],"cmd":"status"}`, ""},
		{`{"v":1,"x":[],"y":{},"x2":null,"cmd":"status","z":"cmd"}`, ""},
		{`{"s":"x","ſ":"y"}`, `duplicate key "ſ"`}, // U+017F folds to s in encoding/json
		{`{"k":"x","K":"y"}`, `duplicate key "K"`}, // U+212A, the Kelvin sign, folds to k
		{`{"v":1,cmd:status}`, ""},                 // malformed: json.Unmarshal's to report
		{``, ""},
		{`[]`, ""},
	} {
		err := duplicateKey([]byte(c.in))
		if (err == nil) != (c.want == "") || err != nil && err.Error() != c.want {
			t.Errorf("%s: %v, want %q", c.in, err, c.want)
		}
	}
}

// A request with a duplicated key is refused whole: neither of its
// commands runs.
func TestDuplicateKeyRefused(t *testing.T) {
	h := &fakeHandler{status: &Status{State: StateServing}}
	path, _ := startServer(t, h, nil)
	c := rawDial(t, path)
	c.Write([]byte(`{"v":1,"cmd":"status","cmd":"kill"}` + "\n"))
	lines := readAll(t, c)
	if len(lines) != 1 || decodeResponse(t, lines[0]).Error != `malformed request: duplicate key "cmd"` {
		t.Fatalf("got %q", lines)
	}
	if calls := h.Calls(); len(calls) != 0 {
		t.Fatalf("the handler was called: %q", calls)
	}
}

// syncBuffer is a bytes.Buffer for a logger written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Refused peers cannot flood the log: at most one line a second, and the
// next says how many were left out.
func TestRefusalLogRateLimited(t *testing.T) {
	var logb syncBuffer
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := &fakeHandler{status: &Status{}}
	path, _ := startServerWith(t, &Server{Handler: h, Log: slog.New(slog.NewTextHandler(&logb, nil)), now: clock.now,
		Authorize: func(Peer) error { return errors.New("permission denied") }})
	refuse := func(n int) {
		for range n {
			if _, err := dial(t, path).Do(Request{Cmd: CmdStatus}, nil); err == nil || err.Error() != "permission denied" {
				t.Fatalf("got %v, want the refusal", err)
			}
		}
	}
	refuse(10)
	if n := strings.Count(logb.String(), "control connection refused"); n != 1 {
		t.Fatalf("%d log lines for 10 refusals within a second, want 1:\n%s", n, logb.String())
	}
	clock.add(ratelog.Every)
	refuse(1)
	lines := strings.Split(strings.TrimSpace(logb.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "control connection refused") || !strings.HasSuffix(lines[1], "suppressed=9") {
		t.Fatalf("after a second, want a second line with suppressed=9:\n%s", logb.String())
	}
	if strings.Contains(lines[0], "suppressed") {
		t.Errorf("the first line claims suppressed lines: %s", lines[0])
	}
}

// Connections beyond MaxConns are answered with an error and closed at
// once; those already open are served on, and once one closes a new one
// is let in.
func TestConnectionLimit(t *testing.T) {
	if DefaultMaxConns != 64 {
		t.Errorf("DefaultMaxConns = %d", DefaultMaxConns)
	}
	var logb syncBuffer
	h := &fakeHandler{status: &Status{PID: 7}}
	const max = 4
	path, _ := startServerWith(t, &Server{Handler: h, MaxConns: max, Log: slog.New(slog.NewTextHandler(&logb, nil))})
	var open []*Client
	for range max {
		c, err := Dial(path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A round trip: the server holds this connection now.
		if _, err := c.Do(Request{Cmd: CmdStatus}, nil); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	for range 3 {
		start := time.Now()
		c := rawDial(t, path)
		lines := readAll(t, c) // the server closes it without waiting for a request
		if len(lines) != 1 || decodeResponse(t, lines[0]).Error != "too many control connections (4); try again" {
			t.Fatalf("connection over the limit: %q", lines)
		}
		t.Logf("rejected in %v", time.Since(start))
	}
	if _, err := dial(t, path).Do(Request{Cmd: CmdStatus}, nil); err == nil || !strings.Contains(err.Error(), "too many control connections") {
		t.Fatalf("zctl's client over the limit: %v", err)
	}
	for _, c := range open {
		if _, err := c.Do(Request{Cmd: CmdStatus}, nil); err != nil {
			t.Fatalf("an open connection after the rejections: %v", err)
		}
	}
	if n := strings.Count(logb.String(), "control connection rejected: too many open"); n != 1 {
		t.Errorf("%d log lines for 4 rejections within a second, want 1:\n%s", n, logb.String())
	}
	open[0].Close()
	deadline := time.Now().Add(wait)
	for {
		c, err := Dial(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Do(Request{Cmd: CmdStatus}, nil)
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection let in after one closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
