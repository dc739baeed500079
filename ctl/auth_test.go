package ctl

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestAuthorizeRefusal(t *testing.T) {
	refusal := "permission denied: uid 1000 is not root or the daemon's uid 0"
	h := &fakeHandler{status: &Status{}}
	var mu sync.Mutex
	var seen []Peer
	path, _ := startServer(t, h, func(p Peer) error {
		mu.Lock()
		seen = append(seen, p)
		mu.Unlock()
		return errors.New(refusal)
	})
	for _, req := range []Request{{Cmd: CmdStatus}, {Cmd: CmdKill}, {Cmd: CmdDrain, Wait: true}} {
		r, err := dial(t, path).Do(req, nil)
		if err == nil || err.Error() != refusal {
			t.Errorf("%s: got %v, want the refusal %q", req.Cmd, err, refusal)
		}
		if r == nil || r.OK {
			t.Errorf("%s: response %+v", req.Cmd, r)
		}
	}
	if len(h.Calls()) != 0 {
		t.Errorf("a refused peer reached the handler: %q", h.Calls())
	}
	mu.Lock()
	if len(seen) != 3 || seen[0].UID != os.Getuid() || seen[0].GID != os.Getgid() || seen[0].PID != os.Getpid() {
		t.Errorf("Authorize saw %+v", seen)
	}
	mu.Unlock()

	// A refused peer that sends a long line still gets the refusal.
	c := rawDial(t, path)
	c.Write(append(bytes.Repeat([]byte("y"), 2*MaxLine), '\n'))
	lines := readAll(t, c)
	if len(lines) != 1 || decodeResponse(t, lines[0]).Error != refusal {
		t.Errorf("long line from a refused peer: %q", lines)
	}
}

func TestAuthorizeAllows(t *testing.T) {
	h := &fakeHandler{status: &Status{PID: 1}}
	path, _ := startServer(t, h, Allow(os.Getuid(), -1))
	if _, err := dial(t, path).Do(Request{Cmd: CmdStatus}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestAllow(t *testing.T) {
	const self, group = 1000, 2000
	tests := []struct {
		name  string
		gid   int
		peer  Peer
		ok    bool
		error string
	}{
		{"root", group, Peer{UID: 0, GID: 0}, true, ""},
		{"root without group", -1, Peer{UID: 0, GID: 5}, true, ""},
		{"self", group, Peer{UID: self, GID: self}, true, ""},
		{"self without group", -1, Peer{UID: self, GID: self}, true, ""},
		{"primary group", group, Peer{UID: 3000, GID: group}, true, ""},
		{"supplementary group", group, Peer{UID: 3000, GID: 3000, Groups: []int{10, group, 20}}, true, ""},
		{"stranger", group, Peer{UID: 3000, GID: 3000, Groups: []int{10, 20}}, false,
			"permission denied: uid 3000 is not root, the daemon's uid 1000, or in group 2000"},
		{"stranger without group", -1, Peer{UID: 3000, GID: 3000}, false,
			"permission denied: uid 3000 is not root or the daemon's uid 1000"},
		{"gid -1 is not a group", -1, Peer{UID: 3000, GID: -1, Groups: []int{-1}}, false, "permission denied"},
		{"group 0 when configured", 0, Peer{UID: 3000, GID: 0}, true, ""},
	}
	for _, tt := range tests {
		err := Allow(self, tt.gid)(tt.peer)
		if tt.ok != (err == nil) {
			t.Errorf("%s: got %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !strings.HasPrefix(err.Error(), tt.error) {
			t.Errorf("%s: error %q, want %q", tt.name, err, tt.error)
		}
	}
}

func TestPeerOf(t *testing.T) {
	path := filepath.Join(shortDir(t), "p.sock")
	ln, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rawDial(t, path)
	s, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := PeerOf(s)
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != os.Getpid() || p.UID != os.Getuid() || p.GID != os.Getgid() {
		t.Errorf("PeerOf = %+v, want pid %d uid %d gid %d", p, os.Getpid(), os.Getuid(), os.Getgid())
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(groups)
	got := slices.Clone(p.Groups)
	slices.Sort(got)
	if !slices.Equal(got, groups) && !(len(got) == 0 && len(groups) == 0) {
		t.Errorf("peer groups %v, want %v", got, groups)
	}
}

// A peer's rights are checked for every request: taken away (a reload
// changed control_group), they end on a connection it keeps open too.
func TestAuthorizeEveryRequest(t *testing.T) {
	h := &fakeHandler{status: &Status{PID: 1}}
	var denied atomic.Bool
	path, _ := startServer(t, h, func(Peer) error {
		if denied.Load() {
			return errors.New("permission denied: not any more")
		}
		return nil
	})
	c := dial(t, path)
	if _, err := c.Do(Request{Cmd: CmdStatus}, nil); err != nil {
		t.Fatal(err)
	}
	denied.Store(true)
	if _, err := c.Do(Request{Cmd: CmdKill}, nil); err == nil || !strings.Contains(err.Error(), "not any more") {
		t.Fatalf("kill after the rights were taken away: %v", err)
	}
	for _, call := range h.Calls() {
		if strings.HasPrefix(call, "kill") {
			t.Fatalf("the handler was called: %q", h.Calls())
		}
	}
}
