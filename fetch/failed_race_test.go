package fetch

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// siblingErr is a worker's error whose errors.As, asked for a
// *changedError (the first look failed takes after its check that the
// source is still live), first runs hook: another worker of the same
// source dropping it at that very moment, deterministically.
type siblingErr struct {
	err  error
	hook func()
}

func (e *siblingErr) Error() string { return e.err.Error() }
func (e *siblingErr) Unwrap() error { return e.err }
func (e *siblingErr) As(target any) bool {
	if _, ok := target.(**changedError); ok && e.hook != nil {
		h := e.hook
		e.hook = nil
		h()
	}
	return false
}

// twoSources is a download with sources a and b, neither dropped.
func twoSources(t *testing.T, o Options) (*download, *source, *source) {
	c, _ := testClient(t, o)
	d := &download{c: c, j: Job{Src: Target{Scheme: "http", Addr: "a:80", Path: "/f"}, Name: "f"}}
	a := &source{i: 0, t: d.j.Src}
	b := &source{i: 1, t: Target{Scheme: "http", Addr: "b:80", Path: "/f"}}
	d.srcs = []*source{a, b}
	return d, a, b
}

// The race TestMirrorsDropped met under load, made deterministic: two
// workers of source a both meet a refusal; the first drops a while the
// second is past its look at a.dropped. The second must stop without an
// error (b, live, finishes the file), not fail the download with a's 403.
func TestFailedSourceDroppedBySibling(t *testing.T) {
	d, a, b := twoSources(t, Options{Conns: 2})
	w := &worker{i: 1, src: a}
	err := &siblingErr{err: &StatusError{Status: wire.StatusForbidden, Path: "/f", HTTP: 403, Message: "HTTP 403"},
		hook: func() {
			if !d.drop(a, errors.New("HTTP 403 (the first worker)")) {
				t.Error("the first worker could not drop a")
			}
		}}
	stop, got := d.failed(context.Background(), w, false, err, nil)
	if err.hook != nil {
		t.Fatal("the hook never ran: the test proves nothing")
	}
	if !stop || got != nil {
		t.Fatalf("failed = %v, %v; want stop without an error (b is live)", stop, got)
	}
	if !a.isDropped() || b.isDropped() {
		t.Fatalf("dropped: a %v, b %v", a.isDropped(), b.isDropped())
	}
}

// The same with retries spent: the sibling drops a while this worker
// works out its backoff (Options.Now runs then).
func TestFailedGiveUpSourceDroppedBySibling(t *testing.T) {
	var d *download
	var a *source
	hooked := false
	d, a, b := twoSources(t, Options{Conns: 2, Retries: 1, Now: func() time.Time {
		if d != nil && !hooked {
			hooked = true
			d.drop(a, errors.New("given up (the first worker)"))
		}
		return time.Unix(1_700_000_000, 0)
	}})
	_ = b
	w := &worker{i: 1, src: a, fails: 1}
	hooked = false
	err := &StatusError{Status: wire.StatusBusy, Path: "/f", HTTP: 503, Message: "HTTP 503"}
	stop, got := d.failed(context.Background(), w, false, err, nil)
	if !hooked {
		t.Fatal("the hook never ran: the test proves nothing")
	}
	if !stop || got != nil {
		t.Fatalf("failed = %v, %v; want stop without an error (b is live)", stop, got)
	}
}

// The last live source's own failure is the download's, even when its
// siblings race: both of b's workers meet a refusal with a gone.
func TestFailedLastSourceFails(t *testing.T) {
	d, a, b := twoSources(t, Options{Conns: 2})
	if !d.drop(a, errors.New("gone")) {
		t.Fatal("could not drop a")
	}
	for i := range 2 {
		w := &worker{i: 2 + i, src: b}
		err := &StatusError{Status: wire.StatusForbidden, Path: "/f", HTTP: 403, Message: "HTTP 403"}
		stop, got := d.failed(context.Background(), w, false, err, nil)
		if !stop || got == nil {
			t.Fatalf("worker %d: failed = %v, %v; want the 403", i, stop, got)
		}
	}
	// Alone from the start.
	c, _ := testClient(t, Options{})
	d1 := &download{c: c, j: Job{Src: Target{Scheme: "http", Addr: "a:80", Path: "/f"}}}
	d1.srcs = []*source{{t: d1.j.Src}}
	stop, got := d1.failed(context.Background(), &worker{src: d1.srcs[0]}, false,
		&StatusError{Status: wire.StatusForbidden, HTTP: 403, Message: "HTTP 403"}, nil)
	if !stop || got == nil {
		t.Fatalf("one source: failed = %v, %v; want the 403", stop, got)
	}
}
