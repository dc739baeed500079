package daemon

import (
	"bufio"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/wire"
)

// TestDispatchLimits: each supervisor refusal names the limit that was
// hit, and per-client counts and worker capacities are kept.
func TestDispatchLimits(t *testing.T) {
	tests := []struct {
		name      string
		maxConns  int64
		perClient int64
		capacity  [2]int64 // 0: no bound
		peers     []string
		want      []string // per connection: "" handed over, else the refusal
		// per worker: its connections are to be reported done promptly
		// (not connLazy): a limit is near or counts per client
		prompt [2]bool
	}{
		{"no limits", 100, 0, [2]int64{}, []string{"10.0.0.1:1", "10.0.0.1:2", "10.0.0.1:3"}, []string{"", "", ""}, [2]bool{}},
		// Those that fit are handed over, not the whole batch refused.
		{"max_connections", 2, 0, [2]int64{}, []string{"10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"},
			[]string{"", "", busyMaxConns}, [2]bool{true, true}},
		{"half of max_connections", 6, 0, [2]int64{}, []string{"10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"},
			[]string{"", "", ""}, [2]bool{true, true}},
		{"below half of max_connections", 7, 0, [2]int64{}, []string{"10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"},
			[]string{"", "", ""}, [2]bool{}},
		{"max_connections before per client", 3, 1, [2]int64{}, []string{"10.0.0.1:1", "10.0.0.1:2", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.1:3"},
			[]string{"", busyPerClient, "", "", busyMaxConns}, [2]bool{true, true}},
		{"per client", 100, 2, [2]int64{}, []string{"10.0.0.1:1", "10.0.0.1:2", "10.0.0.2:1", "10.0.0.1:3", "[::1]:4", "[::1]:5"},
			[]string{"", "", "", busyPerClient, "", ""}, [2]bool{true, true}},
		{"capacity", 100, 0, [2]int64{1, 2}, []string{"10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3", "10.0.0.4:4"},
			[]string{"", "", "", busyNoFDs}, [2]bool{true, true}},
		// Worker 0 fills half of its descriptors' room, worker 1 a sixth.
		{"half of capacity", 100, 0, [2]int64{2, 6}, []string{"10.0.0.1:1", "10.0.0.2:2"},
			[]string{"", ""}, [2]bool{true, false}},
		{"per client before capacity", 100, 1, [2]int64{1, 1}, []string{"10.0.0.1:1", "10.0.0.1:2", "10.0.0.2:1", "10.0.0.3:1"},
			[]string{"", busyPerClient, "", busyNoFDs}, [2]bool{true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Supervisor{log: quietLog(), cfg: config.Default()}
			s.maxConns.Store(tt.maxConns)
			s.perClient.Store(tt.perClient)
			var ws []*workerProc
			var remotes []*net.UnixConn
			for i := range 2 {
				local, remote := channel(t)
				w := &workerProc{ch: local, pid: 100 + i}
				w.capacity.Store(tt.capacity[i])
				ws = append(ws, w)
				remotes = append(remotes, remote)
			}
			s.dispatch.Store(&ws)
			d := &dispatcher{s: s}
			var clients []net.Conn
			for _, p := range tt.peers {
				c, fd := acceptedPair(t)
				// Native, so that a refusal is a wire response.
				if err := wire.WriteRequest(c, &wire.Request{Op: wire.OpGet, Path: "/f"}); err != nil {
					t.Fatal(err)
				}
				clients = append(clients, c)
				d.fds, d.peers = append(d.fds, fd), append(d.peers, p)
			}
			d.distribute()
			handed := 0
			for i, c := range clients {
				if tt.want[i] == "" {
					handed++
					continue
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				r, err := wire.ReadResponse(bufio.NewReader(c))
				if err != nil || r.Status != wire.StatusBusy || r.Message != tt.want[i] {
					t.Errorf("connection %d (%s): %+v %v; want busy %q", i, tt.peers[i], r, err, tt.want[i])
				}
			}
			got := 0
			for i, w := range ws {
				got += int(w.active.Load())
				if c := tt.capacity[i]; c > 0 && w.active.Load() > c {
					t.Errorf("worker %d holds %d connections, its capacity is %d", i, w.active.Load(), c)
				}
				for n := w.active.Load(); n > 0; {
					m := recvMsg(t, remotes[i])
					ms, err := parseConns(m[1:])
					if err != nil {
						t.Fatal(err)
					}
					for _, c := range ms {
						if got := c.flags&connLazy == 0; got != tt.prompt[i] {
							t.Errorf("worker %d: connection %d prompt = %v, want %v", i, c.id, got, tt.prompt[i])
						}
					}
					n -= int64(len(ms))
				}
			}
			if got != handed || s.inflight.Load() != int64(handed) {
				t.Errorf("%d handed over (inflight %d), want %d", got, s.inflight.Load(), handed)
			}
			// Every counted connection ends its count when done.
			for _, w := range ws {
				var ds []doneMeta
				for id := range w.clients {
					ds = append(ds, doneMeta{id: id})
				}
				s.releaseClients(w, ds)
			}
			if n := len(s.clients.m); n != 0 {
				t.Errorf("client counts left after every connection is done: %v", s.clients.m)
			}
		})
	}
}

// TestPerClientCountEnds: a done report ends the per-client count of its
// connection, and a worker's death that of every connection it held.
func TestPerClientCountEnds(t *testing.T) {
	s := &Supervisor{log: quietLog(), events: make(chan event, 1), finished: make(chan struct{})}
	close(s.finished) // the exit's report to the loop goes nowhere
	local, remote := channel(t)
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &workerProc{ch: local, proc: osProc{cmd}, gone: make(chan struct{}), queries: map[uint64]chan []byte{}}
	for i, key := range []string{"a", "a", "b"} {
		if !s.clients.acquire(key, 2) {
			t.Fatalf("connection %d of %s refused", i, key)
		}
		w.addClients([]connMeta{{id: uint64(i)}}, []string{key})
	}
	if s.clients.acquire("a", 2) {
		t.Fatal("a third connection of a counted")
	}
	s.releaseClients(w, []doneMeta{{id: 0}, {id: 42}})
	if s.clients.count("a") != 1 || s.clients.count("b") != 1 {
		t.Fatalf("after one of a is done: a %d b %d", s.clients.count("a"), s.clients.count("b"))
	}
	remote.Close() // the worker dies
	s.readWorker(w)
	if len(s.clients.m) != 0 {
		t.Fatalf("counts left after the worker died: %v", s.clients.m)
	}
}

func TestClientKey(t *testing.T) {
	for _, tt := range []struct{ peer, want string }{
		{"127.0.0.1:5000", "127.0.0.1"},
		{"[::1]:6000", "::1"},
		{"[2001:db8::1]:1", "2001:db8::1"},
		{"unix", "unix"},
		{"unix:@abstract", "unix"},
	} {
		if got := clientKey(tt.peer); got != tt.want {
			t.Errorf("clientKey(%q) = %q, want %q", tt.peer, got, tt.want)
		}
	}
}

// TestFDShortLowersCapacity: a worker that lost passed fds gets no more
// connections than it held then, and never more again.
func TestFDShortLowersCapacity(t *testing.T) {
	for _, tt := range []struct {
		capacity int64
		reports  []uint32
		want     int64
	}{
		{100, []uint32{7}, 7},
		{100, []uint32{7, 20}, 7},
		{100, []uint32{7, 3}, 3},
		{100, []uint32{0}, 1},
		{0, []uint32{50}, 50}, // no bound before
		{5, []uint32{9}, 5},
	} {
		s := &Supervisor{log: quietLog(), events: make(chan event, 1), finished: make(chan struct{})}
		close(s.finished)
		local, remote := channel(t)
		cmd := exec.Command("true")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w := &workerProc{ch: local, proc: osProc{cmd}, gone: make(chan struct{}), queries: map[uint64]chan []byte{}}
		w.capacity.Store(tt.capacity)
		for _, r := range tt.reports {
			if err := fdpass.Send(remote, appendU32(nil, msgFDShort, r)); err != nil {
				t.Fatal(err)
			}
		}
		remote.Close()
		s.readWorker(w)
		if got := w.capacity.Load(); got != tt.want {
			t.Errorf("capacity %d, reports %v: %d, want %d", tt.capacity, tt.reports, got, tt.want)
		}
	}
}
