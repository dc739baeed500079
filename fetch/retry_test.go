package fetch

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// A connection cut mid-body is retried from the next byte, in every mode.
func TestRetryResumesWhereBytesStop(t *testing.T) {
	data := randBytes(5<<20+3, 11)
	for _, mode := range []RecvMode{RecvCopy, RecvSplice, RecvMmap} {
		t.Run(string(mode), func(t *testing.T) {
			s := newFakeServer(t)
			s.put("/big", data, mtime1)
			cuts := 0
			s.hook = func(n int, q wire.Request) fault {
				if q.Op == wire.OpGet && cuts < 3 {
					cuts++
					return fault{cutAfter: 1 << 20}
				}
				return fault{}
			}
			c, rec := testClient(t, Options{Recv: mode})
			dst := filepath.Join(t.TempDir(), "big")
			res, err := c.Fetch(context.Background(), Job{Src: s.target("/big"), Dst: dst})
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, dst, data, mtime1)
			gets := s.getLog()
			if len(gets) != 4 {
				t.Fatalf("%d GETs, want 4: %+v", len(gets), gets)
			}
			for i, q := range gets {
				if want := int64(i) << 20; q.Offset != want {
					t.Errorf("GET %d at offset %d, want %d", i, q.Offset, want)
				}
			}
			if res.Received != int64(len(data)) || s.sent.Load() != int64(len(data)) {
				t.Errorf("received %d, server sent %d, for %d bytes", res.Received, s.sent.Load(), len(data))
			}
			retries := rec.kinds(EventRetry)
			if len(retries) != 3 || Reason(retries[0].Err) != "connection closed by the server" {
				t.Errorf("retry events: %+v", retries)
			}
		})
	}
}

// Busy and draining answers are retried; "not found" is not.
func TestRetryOnBusyAndDraining(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(1000, 3)
	s.put("/f", data, mtime1)
	statuses := []wire.Status{wire.StatusDraining, wire.StatusBusy}
	s.hook = func(n int, q wire.Request) fault {
		if n < len(statuses) {
			return fault{status: statuses[n]}
		}
		return fault{}
	}
	c, rec := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, mtime1)
	r := rec.kinds(EventRetry)
	if len(r) != 2 || !strings.HasPrefix(RetryMessage(r[0]), "server draining, retrying in ") || Reason(r[1].Err) != "server busy" {
		t.Fatalf("retries: %v", r)
	}

	_, err := c.Fetch(context.Background(), Job{Src: s.target("/nope"), Dst: filepath.Join(t.TempDir(), "x")})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != wire.StatusNotFound || err.Error() != "not found: /nope" {
		t.Fatalf("missing file: %v", err)
	}
	if Retryable(err) {
		t.Fatal("not found is retryable")
	}
}

// With nobody listening, the retry budget runs out: --retries N means N
// retries after the first attempt.
func TestGiveUpAfterRetries(t *testing.T) {
	s := newFakeServer(t)
	s.stopListening()
	c, rec := testClient(t, Options{Retries: 3})
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(t.TempDir(), "f")})
	var ge *GiveUpError
	if !errors.As(err, &ge) || ge.Attempts != 4 {
		t.Fatalf("err %v, want a GiveUpError after 4 attempts", err)
	}
	if got := len(rec.kinds(EventRetry)); got != 3 {
		t.Errorf("%d retry events, want 3", got)
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %q does not say connection refused", err)
	}
	if errs := rec.kinds(EventError); len(errs) != 1 {
		t.Errorf("%d error events", len(errs))
	}

	// --retry-for: unlimited count, bounded time since the last byte.
	c2, _ := testClient(t, Options{Retries: -1, RetryFor: 50 * time.Millisecond})
	start := time.Now()
	_, err = c2.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(t.TempDir(), "f")})
	if !errors.As(err, &ge) || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("retry-for: %v after %v", err, time.Since(start))
	}
}

// A server that stops sending mid-body is given up on after the stall
// timeout and retried.
func TestStallTimeout(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(100000, 5)
	s.put("/f", data, mtime1)
	s.hook = func(n int, q wire.Request) fault {
		if q.Op == wire.OpGet && n == 1 {
			return fault{hang: true}
		}
		return fault{}
	}
	c, rec := testClient(t, Options{StallTimeout: 100 * time.Millisecond})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data, mtime1)
	if r := rec.kinds(EventRetry); len(r) != 1 || Reason(r[0].Err) != "connection timed out" {
		t.Fatalf("retries: %+v", r)
	}
}

func TestLocalErrorIsNotRetried(t *testing.T) {
	s := newFakeServer(t)
	s.put("/f", []byte("x"), mtime1)
	c, rec := testClient(t, Options{})
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(t.TempDir(), "no", "such", "dir", "f")})
	var le *LocalError
	if !errors.As(err, &le) {
		t.Fatalf("err %T %v", err, err)
	}
	if len(rec.kinds(EventRetry)) != 0 {
		t.Fatal("a local error was retried")
	}
}
