package ctl

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// digestHandler is fakeHandler that also answers digest.
type digestHandler struct {
	fakeHandler
	got     []string
	timeout time.Duration
}

func (h *digestHandler) Digest(ctx context.Context, paths []string, timeout time.Duration) ([]Digest, error) {
	h.got, h.timeout = paths, timeout
	var ds []Digest
	for _, p := range paths {
		if strings.HasPrefix(p, "/missing") {
			ds = append(ds, Digest{Path: p, Error: "not found: " + p})
			continue
		}
		ds = append(ds, Digest{Path: p, SHA256: strings.Repeat("ab", 32), Size: 1})
	}
	return ds, nil
}

func TestDigestCommand(t *testing.T) {
	h := &digestHandler{}
	path, _ := startServer(t, h, nil)
	c := dial(t, path)
	r, err := c.Do(Request{Cmd: CmdDigest, Paths: []string{"/a", "/missing"}, Timeout: "90s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Digests) != 2 || r.Digests[0].SHA256 == "" || r.Digests[1].Error == "" || h.timeout != 90*time.Second {
		t.Fatalf("response %+v, handler saw %q %v", r, h.got, h.timeout)
	}
	if _, err := c.Do(Request{Cmd: CmdDigest, Paths: []string{"/a"}}, nil); err != nil || h.timeout != DefaultDigestTimeout {
		t.Fatalf("default timeout: %v, %v", h.timeout, err)
	}
	many := make([]string, MaxDigestPaths+1)
	for i := range many {
		many[i] = fmt.Sprintf("/f%d", i)
	}
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Cmd: CmdDigest}, "at least one path"},
		{Request{Cmd: CmdDigest, Paths: many}, "at most 64 per request"},
		{Request{Cmd: CmdDigest, Paths: []string{"a\x00b"}}, "bad path"},
		{Request{Cmd: CmdDigest, Paths: []string{"/a"}, Timeout: "-1s"}, "bad timeout"},
	} {
		if _, err := dial(t, path).Do(tc.req, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error with %q", tc.req, err, tc.want)
		}
	}
}

// TestDigestNotImplemented: a Handler without Digest answers with an error.
func TestDigestNotImplemented(t *testing.T) {
	path, _ := startServer(t, &fakeHandler{}, nil)
	_, err := dial(t, path).Do(Request{Cmd: CmdDigest, Paths: []string{"/a"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "does not compute digests") {
		t.Fatalf("err = %v", err)
	}
}

// TestDigestClientWaits: the client waits for a digest's answer for the
// request's timeout, not the usual answer timeout.
func TestDigestClientWaits(t *testing.T) {
	slow := &slowDigest{digestHandler: &digestHandler{}, delay: 300 * time.Millisecond}
	path, _ := startServer(t, slow, nil)
	c := dial(t, path)
	c.Timeouts = Timeouts{Answer: 100 * time.Millisecond}
	if _, err := c.Do(Request{Cmd: CmdDigest, Paths: []string{"/a"}, Timeout: "10s"}, nil); err != nil {
		t.Fatalf("digest answered after %v: %v", slow.delay, err)
	}
}

type slowDigest struct {
	*digestHandler
	delay time.Duration
}

func (h *slowDigest) Digest(ctx context.Context, paths []string, timeout time.Duration) ([]Digest, error) {
	time.Sleep(h.delay) // a daemon hashing
	return h.digestHandler.Digest(ctx, paths, timeout)
}
