package serve

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TestConnAllocs: a connection that asks for one small file kept in
// memory and closes costs the worker a handful of allocations (the conn,
// the request's path, its response buffer, a leader's turn), and each
// further request on a kept-alive connection at most two. The client
// here is raw system calls on a socketpair, so the process's allocation
// count is the server's.
func TestConnAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	settleNow(t)
	ts := newTestServer(t, "sendfile", func(o *Options) { o.FileCache = time.Hour })
	ts.write(t, "f", random(4096))
	for range 2 {
		ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
	}
	if !kept(ts, "/f") {
		t.Fatal("the file is not kept in memory")
	}
	req := wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/f"})
	resp := make([]byte, 64<<10)
	done := make(chan Result, 1)
	finished := func(r Result) { done <- r }
	send := func(fd int) {
		if _, err := unix.Write(fd, req); err != nil {
			t.Fatal(err)
		}
	}
	// read reads one whole response from fd.
	read := func(fd int) {
		for got := 0; got < wire.ResponseHeaderLen+4096; {
			n, err := unix.Read(fd, resp)
			if err != nil || n == 0 {
				t.Fatalf("after %d bytes: %v", got, err)
			}
			got += n
		}
	}
	// perConn serves n connections of reqs requests each, one after the
	// other, and returns the allocations per connection.
	perConn := func(n, reqs int) float64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range n {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.SetNonblock(fds[0], true)
			// The first request is there before Run, as the supervisor
			// hands a connection over once it has data (TCP_DEFER_ACCEPT):
			// Run serves on the caller's goroutine until the connection
			// waits without one.
			send(fds[1])
			ts.srv.Run(fds[0], ConnInfo{Client: "c", Nonblocking: true}, finished)
			read(fds[1])
			for range reqs - 1 {
				send(fds[1])
				read(fds[1])
			}
			unix.Close(fds[1])
			if r := <-done; r.Outcome != OutcomeClosed || r.Requests != reqs {
				t.Fatalf("result %+v", r)
			}
		}
		runtime.ReadMemStats(&after)
		return float64(after.Mallocs-before.Mallocs) / float64(n)
	}
	perConn(50, 1) // warm: the leader, the parker's set, pools
	one := perConn(500, 1)
	ten := perConn(200, 10)
	t.Logf("%.2f allocations per connection of one request, %.2f per further request", one, (ten-one)/9)
	if one > 5 {
		t.Errorf("%.2f allocations per connection of one request, want at most 5", one)
	}
	// This client sends its next request as soon as it has the response,
	// so the connection's goroutine finds it before parking and hands the
	// leader's place on (leader.go): the path and a new leader's turn.
	if per := (ten - one) / 9; per > 2.5 {
		t.Errorf("%.2f allocations per further request, want at most 2.5", per)
	}
}
