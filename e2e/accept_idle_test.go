package e2e

import (
	"bufio"
	"errors"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// TestAcceptModeIdleParked: in the accept mode, kept-alive connections
// parked by the workers that accepted them count as active in status; a
// reload closes those of the old generation (their clients read EOF, the
// counts go to 0) while the new one serves; a worker killed with parked
// connections takes only those; a drain closes the rest and the daemon
// exits 0.
func TestAcceptModeIdleParked(t *testing.T) {
	const n = 100
	root := shortTempDir(t)
	small := WriteRandom(t, filepath.Join(root, "small.bin"), 4096)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2, Config: acceptConf + "log_level = \"debug\"\nlog_format = \"text\"\nidle_timeout = \"5m\"\n"})
	open := func(k int) []*idleClient {
		cs := make([]*idleClient, k)
		for i := range cs {
			c, err := net.Dial("tcp", d.Addr)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			t.Cleanup(func() { c.Close() })
			cs[i] = &idleClient{c: c, br: bufio.NewReader(c), http: i%2 == 1}
			if sum, err := cs[i].get("/small.bin"); err != nil || sum != small {
				t.Fatalf("connection %d: %v (sha256 %s, want %s)", i, err, sum, small)
			}
		}
		return cs
	}
	active := func(st *ctl.Status) int {
		a := 0
		for _, w := range st.Workers {
			a += w.Active
		}
		return a
	}
	closed := func(what string, cs []*idleClient) {
		t.Helper()
		for i, ic := range cs {
			ic.c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := ic.br.ReadByte(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("%s: connection %d: %v, want EOF", what, i, err)
			}
		}
	}

	old := open(n)
	if !waitFor(30*time.Second, func() bool { return parkedNow(d.Log()) == n }) {
		t.Fatalf("%d of %d connections parked\n%s", parkedNow(d.Log()), n, tail(d.Log(), 20))
	}
	d.WaitStatus(10*time.Second, "the parked connections active", func(st *ctl.Status) bool {
		return active(st) == n && st.Totals.Active == n
	})
	if r := d.Zctl("reload"); r.Code != 0 {
		t.Fatalf("reload: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	closed("after the reload", old)
	d.WaitStatus(10*time.Second, "the old generation gone, nothing active", func(st *ctl.Status) bool {
		for _, w := range st.Workers {
			if w.Generation == 1 {
				return false
			}
		}
		return active(st) == 0 && st.Totals.Active == 0
	})

	cur := open(20)
	d.WaitStatus(10*time.Second, "20 active", func(st *ctl.Status) bool { return st.Totals.Active == 20 })
	st := d.MustStatus()
	victim := st.Workers[0]
	syscall.Kill(victim.PID, syscall.SIGKILL)
	d.WaitStatus(10*time.Second, "the killed worker's connections gone from the counts", func(st *ctl.Status) bool {
		return st.Totals.Active == 20-victim.Active && active(st) == 20-victim.Active
	})
	if r := d.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %d\n%s", r.Code, r.Stderr)
	}
	closed("after the drain", cur)
	if code := d.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("exit status %d after the drain\n%s", code, tail(d.Log(), 20))
	}
}

// TestAcceptModeRetire: a worker sent SIGTERM in the accept mode (the only
// one) keeps accepting until its replacement is ready and gets the
// sockets; its parked connection is closed by its drain; new connections
// made all along are each answered whole.
func TestAcceptModeRetire(t *testing.T) {
	root := shortTempDir(t)
	small := WriteRandom(t, filepath.Join(root, "small.bin"), 4096)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: acceptConf + "log_level = \"debug\"\nlog_format = \"text\"\nidle_timeout = \"5m\"\n"})
	c, err := net.Dial("tcp", d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	parked := &idleClient{c: c, br: bufio.NewReader(c)}
	if sum, err := parked.get("/small.bin"); err != nil || sum != small {
		t.Fatalf("first request: %v", err)
	}
	if !waitFor(30*time.Second, func() bool { return parkedNow(d.Log()) == 1 }) {
		t.Fatalf("not parked\n%s", tail(d.Log(), 20))
	}
	victim := WorkerPIDs(d.MustStatus())[0]
	one := func(i int) {
		t.Helper()
		c, err := net.Dial("tcp", d.Addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		// One request each: the retiring worker, draining, may answer
		// one it accepted just before its drain with Connection: close.
		ic := &idleClient{c: c, br: bufio.NewReader(c), http: i%2 == 1, once: true}
		if sum, err := ic.get("/small.bin"); err != nil || sum != small {
			t.Fatalf("connection %d: %v (sha256 %s)", i, err, sum)
		}
	}
	one(0)
	syscall.Kill(victim, syscall.SIGTERM)
	replaced := func() bool {
		ps := WorkerPIDs(d.MustStatus())
		return len(ps) == 1 && ps[0] != victim
	}
	for i := 1; i < 400 && !replaced(); i++ {
		one(i)
	}
	if !replaced() {
		t.Fatalf("worker %d not replaced\n%s", victim, tail(d.Log(), 20))
	}
	for i := range 20 {
		one(i)
	}
	parked.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := parked.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("the retired worker's parked connection: %v, want EOF", err)
	}
}

// TestAcceptModeTakeover: a draining instance in the accept mode answers
// new connections "draining" until a new instance (also in the accept
// mode) has joined the port, whose workers then take every new one; a
// connection parked on the old instance is closed by its drain, and the
// old instance exits 0.
func TestAcceptModeTakeover(t *testing.T) {
	root := shortTempDir(t)
	small := WriteRandom(t, filepath.Join(root, "small.bin"), 4096)
	big := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	addr := freeAddr(t)
	conf := acceptConf + "log_level = \"debug\"\nlog_format = \"text\"\nidle_timeout = \"5m\"\n"
	d1 := StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Config: conf})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	parked := &idleClient{c: c, br: bufio.NewReader(c)}
	if sum, err := parked.get("/small.bin"); err != nil || sum != small {
		t.Fatalf("first request: %v", err)
	}
	if !waitFor(30*time.Second, func() bool { return parkedNow(d1.Log()) == 1 }) {
		t.Fatalf("not parked\n%s", tail(d1.Log(), 20))
	}
	// A stalled transfer keeps the old instance draining.
	gate := make(chan struct{})
	slow := startSlowGet(t, addr, "/big.bin", gate)
	if r := d1.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %d\n%s", r.Code, r.Stderr)
	}
	parked.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := parked.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("the parked connection after the drain: %v, want EOF", err)
	}
	if msg := drainingAnswers(addr); msg != "" {
		t.Fatalf("while draining, before a new instance: %s", msg)
	}
	d2 := StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Control: d1.Control, Config: conf})
	for i := range 40 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		ic := &idleClient{c: c, br: bufio.NewReader(c), http: i%2 == 1}
		sum, err := ic.get("/small.bin")
		c.Close()
		if err != nil || sum != small {
			t.Fatalf("connection %d to the new instance: %v", i, err)
		}
	}
	if st := d2.MustStatus(); st.Totals.Connections < 40 {
		t.Fatalf("the new instance served %d connections, want 40", st.Totals.Connections)
	}
	close(gate)
	slow.wait(t, big)
	if code := d1.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("the drained instance exited %d, want 0\n%s", code, tail(d1.Log(), 20))
	}
}
