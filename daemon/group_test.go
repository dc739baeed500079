package daemon

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestLeaveGroup: with two draining instances and a new one on a port,
// steering sends every new connection to the second draining one; its
// group watch tells it to leave once connections keep coming with the
// newer socket there, and then the new one gets them. The draining
// instances keep their sockets while no newer one has joined, or while
// the connections they get are the last ones before it joined.
func TestLeaveGroup(t *testing.T) {
	old1 := testListener(t, "127.0.0.1:0")
	if err := steerAway(old1.f); err != nil {
		t.Fatal(err)
	}
	w1, err := watchGroup(old1.f, old1.addr)
	if err != nil {
		t.Fatal(err)
	}
	old2 := testListener(t, old1.addr) // took the port over, then drains too
	w2, err := watchGroup(old2.f, old2.addr)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	step := func() time.Time { now = now.Add(groupCheckEvery); return now }

	// Two draining instances, no new one: old2 gets the connections and
	// keeps its socket (there is no better one).
	dialN(t, old1.addr, 2)
	if n := acceptAll(t, old2, 2); n != 2 {
		t.Fatalf("old2 accepted %d of 2", n)
	}
	for range 3 {
		if w2.accepted(step()) {
			t.Fatal("old2 leaves with no newer socket in its group")
		}
	}
	// old1 got a connection by the hash while alone, just before old2
	// joined: one look finds old2 newer, but nothing more comes.
	if w1.accepted(step()) {
		t.Fatal("old1 leaves at its first look")
	}

	next := testListener(t, old1.addr)
	dialN(t, old1.addr, 4)
	if n := acceptAll(t, next, 4); n != 0 {
		t.Fatalf("before old2 leaves, the new instance got %d of 4 connections; the test's premise (steering to index 1) is wrong", n)
	}
	if n := acceptAll(t, old2, 4); n != 4 {
		t.Fatalf("old2 accepted %d of 4", n)
	}
	if w2.accepted(step()) {
		t.Fatal("old2 leaves at its first look")
	}
	if w2.accepted(now.Add(time.Millisecond)) {
		t.Fatal("old2 looks again before groupCheckEvery")
	}
	if !w2.accepted(step()) {
		t.Fatal("old2 keeps its socket while a newer one is in its group and connections keep coming")
	}
	if w2.accepted(step()) {
		t.Fatal("accepted says to leave twice")
	}
	old2.f.Close()
	dialN(t, old1.addr, 8)
	if n := acceptAll(t, next, 8); n != 8 {
		t.Errorf("once old2 left, the new instance got %d of 8 connections", n)
	}
}

// TestLeaveGroupAfterOldestExit: [old1, old2, new] becomes [new, old2]
// when old1 exits first; old2 then gets everything and leaves.
func TestLeaveGroupAfterOldestExit(t *testing.T) {
	old1 := testListener(t, "127.0.0.1:0")
	if err := steerAway(old1.f); err != nil {
		t.Fatal(err)
	}
	old2 := testListener(t, old1.addr)
	w2, err := watchGroup(old2.f, old2.addr)
	if err != nil {
		t.Fatal(err)
	}
	next := testListener(t, old1.addr)
	old1.f.Close()
	dialN(t, old1.addr, 4)
	if n := acceptAll(t, old2, 4); n != 4 {
		t.Fatalf("old2 accepted %d of 4; the test's premise (the last socket replaces the one that left) is wrong", n)
	}
	now := time.Now()
	if w2.accepted(now) || !w2.accepted(now.Add(groupCheckEvery)) {
		t.Fatal("old2 does not leave")
	}
	old2.f.Close()
	dialN(t, old1.addr, 4)
	if n := acceptAll(t, next, 4); n != 4 {
		t.Errorf("the new instance got %d of 4", n)
	}
}

// TestLeaveGroupForWildcard: a new instance listening on the wildcard
// address of the port (its own group) gets nothing a draining one on
// the exact address gets, until that one leaves; its watch sees it.
func TestLeaveGroupForWildcard(t *testing.T) {
	old := testListener(t, "127.0.0.1:0")
	if err := steerAway(old.f); err != nil {
		t.Fatal(err)
	}
	w, err := watchGroup(old.f, old.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(old.addr)
	next := testListener(t, "0.0.0.0:"+port)
	dialN(t, old.addr, 2)
	if n := acceptAll(t, old, 2); n != 2 {
		t.Fatalf("the draining socket accepted %d of 2; the test's premise (the exact address wins) is wrong", n)
	}
	now := time.Now()
	if w.accepted(now) || !w.accepted(now.Add(groupCheckEvery)) {
		t.Fatal("the draining socket does not leave for the wildcard one")
	}
	old.f.Close()
	dialN(t, old.addr, 2)
	if n := acceptAll(t, next, 2); n != 2 {
		t.Errorf("the wildcard socket got %d of 2", n)
	}
}

// TestGroupWatchIgnoresOtherUsers: a socket another user listens with on
// the port's wildcard address (an IPv6-only one can coexist with ours) is
// no newer instance of ours: it must not make a draining one let go of
// its address.
func TestGroupWatchIgnoresOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	old := testListener(t, "127.0.0.1:0")
	w, err := watchGroup(old.f, old.addr)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(old.addr)
	cmd := exec.Command(py, "-c", `import socket,sys,time
s=socket.socket(socket.AF_INET6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind(("::", `+port+`))
s.listen(8)
print("ok", flush=True)
time.sleep(60)`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ok\n" {
		t.Fatalf("helper: %q %v", line, err)
	}
	now := time.Now()
	if w.accepted(now) || w.accepted(now.Add(groupCheckEvery)) || w.accepted(now.Add(2*groupCheckEvery)) {
		t.Fatal("another user's IPv6-only socket on the wildcard address made the draining socket leave")
	}
}
