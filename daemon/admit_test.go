package daemon

import (
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/serve"
)

// TestAdmitCountsProxiedClients: the supervisor counts the clients
// workers ask about in the per-client table, answers past the limit no,
// and the counts end when the connections are reported done or the
// worker is written off.
func TestAdmitCountsProxiedClients(t *testing.T) {
	local, remote := channel(t)
	s := &Supervisor{log: quietLog()}
	s.perClient.Store(2)
	w := &workerProc{ch: local, pid: 1}
	ask := func(id uint64, key string) bool {
		t.Helper()
		s.admit(w, appendAdmit(nil, id, key)[1:])
		m := recvMsg(t, remote)
		if m[0] != msgAdmitted {
			t.Fatalf("answer of type %d", m[0])
		}
		got, ok, err := parseAdmitted(m[1:])
		if err != nil || got != id {
			t.Fatalf("answer for %d: %d %v", id, got, err)
		}
		return ok
	}
	// A direct connection of the same client, counted at accept.
	if !s.clients.acquire("203.0.113.7", 2) {
		t.Fatal("acquire")
	}
	if !ask(1, "203.0.113.7") || ask(2, "203.0.113.7") {
		t.Fatal("want the first admitted (2 of 2 with the direct one), the second refused")
	}
	if !ask(3, "198.51.100.1") {
		t.Fatal("another client refused")
	}
	if n := s.metrics.refused[refusedPerClient].Load(); n != 1 {
		t.Errorf("per_client refusals counted %d, want 1", n)
	}
	s.releaseClients(w, []doneMeta{{id: 1}})
	if n := s.clients.count("203.0.113.7"); n != 1 {
		t.Errorf("after id 1 is done: %d in flight, want 1 (the direct one)", n)
	}
	// The limit off: everyone admitted, nothing counted.
	s.perClient.Store(0)
	if !ask(4, "203.0.113.7") || s.clients.count("203.0.113.7") != 1 {
		t.Error("with no limit: refused, or counted")
	}
}

// TestWorkerAdmit: the worker's side asks the supervisor and turns a no
// into the per-client refusal; an answer that does not come in time lets
// the connection through.
func TestWorkerAdmit(t *testing.T) {
	local, remote := channel(t)
	srv, err := serve.New(serve.Options{Root: t.TempDir(), Mode: "sendfile"}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	w := newWorker(remote, srv, quietLog())
	go func() { // the worker's channel reader, for the answers
		buf := make([]byte, maxMsg)
		for {
			n, err := remote.Read(buf)
			if err != nil {
				return
			}
			if buf[0] == msgAdmitted {
				w.admitted(buf[1:n])
			}
		}
	}()
	res := make(chan string, 1)
	go func() { res <- w.admit(7, "203.0.113.7:1000") }()
	m := recvMsg(t, local)
	id, key, err := parseAdmit(m[1:])
	if m[0] != msgAdmit || err != nil || id != 7 || key != "203.0.113.7" {
		t.Fatalf("asked %d %d %q %v; want id 7, key 203.0.113.7", m[0], id, key, err)
	}
	local.Write(appendAdmitted(nil, 7, false))
	if got := <-res; got != busyPerClient {
		t.Errorf("refusal %q, want %q", got, busyPerClient)
	}
	start := time.Now()
	go func() { res <- w.admit(8, "203.0.113.7:1001") }()
	recvMsg(t, local) // never answered
	if got := <-res; got != "" {
		t.Errorf("unanswered: refusal %q, want none", got)
	}
	t.Logf("an unanswered question waited %v", time.Since(start).Round(time.Millisecond))
}
