package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/wire"
)

// drainingWithTransfer starts a daemon on addr (and metrics on maddr, if
// not ""), puts a transfer in flight that holds until the test ends, and
// drains it: a draining instance to take over from.
func drainingWithTransfer(t *testing.T, root, addr, maddr string) *Daemon {
	t.Helper()
	var args []string
	if maddr != "" {
		args = []string{"--metrics", maddr}
	}
	d := StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Args: args})
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	startSlowGet(t, d.Addr, "/big.bin", gate)
	if r := d.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %+v", r)
	}
	d.WaitState(ctl.StateDraining, 10*time.Second)
	return d
}

// healthz returns the status code and body of GET /healthz at addr.
func healthz(t *testing.T, addr string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestTakeoverWithMetrics: a new instance with the same configuration,
// metrics_listen included, takes over from a draining one: the file port,
// the control socket and the metrics address, whose /healthz then answers
// for the new instance.
func TestTakeoverWithMetrics(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	addr, maddr := freeAddr(t), freeAddr(t)
	d1 := drainingWithTransfer(t, root, addr, maddr)
	if code, body := healthz(t, maddr); code != http.StatusServiceUnavailable || body != "unavailable: draining" {
		t.Fatalf("the draining instance's /healthz: %d %q", code, body)
	}
	d2 := StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Control: d1.Control, Args: []string{"--metrics", maddr}})
	if st := d2.MustStatus(); st.PID != d2.Cmd.Process.Pid {
		t.Fatalf("the control socket leads to pid %d, want the new instance's %d", st.PID, d2.Cmd.Process.Pid)
	}
	var code int
	var body string
	if !waitFor(10*time.Second, func() bool { code, body = healthz(t, maddr); return code == http.StatusOK }) {
		t.Errorf("/healthz after the takeover: %d %q, want 200 from the new instance", code, body)
	}
	if ok, _ := d1.Exited(); ok {
		t.Error("the draining instance exited before its transfer finished")
	}
}

// TestTakeoverFailedStart: a new instance that takes the control socket
// over from a draining one but then fails to start (here its metrics
// address is held by something else) leaves the draining one its control
// socket and its port: zctl still reaches it, and new connections are
// answered "draining".
func TestTakeoverFailedStart(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	addr := freeAddr(t)
	d1 := drainingWithTransfer(t, root, addr, "")
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	d2 := StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Control: d1.Control, NoWait: true,
		Args: []string{"--metrics", held.Addr().String()}})
	if code := d2.WaitExit(30 * time.Second); code == 0 {
		t.Fatalf("the new instance started with its metrics address held by another process:\n%s", d2.Log())
	}
	st, err := d1.Status()
	if err != nil {
		t.Fatalf("zctl cannot reach the draining instance after a failed takeover: %v", err)
	}
	if st.PID != d1.Cmd.Process.Pid || st.State != ctl.StateDraining {
		t.Errorf("the control socket leads to pid %d (%s), want the draining instance %d", st.PID, st.State, d1.Cmd.Process.Pid)
	}
	if msg := drainingAnswers(addr); msg != "" {
		t.Errorf("after a failed takeover: %s", msg)
	}
}

// TestTakeoverTwice: an instance takes the port over from a draining one
// and drains in turn before that one has finished (a second restart
// during a long download); a third takes over from it. New connections,
// and the health checks on the metrics address, reach the third at once,
// not "draining" from the second until both old ones have exited.
func TestTakeoverTwice(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	sum := WriteRandom(t, filepath.Join(root, "small.bin"), 64<<10)
	addr, maddr := freeAddr(t), freeAddr(t)
	metrics := []string{"--metrics", maddr}
	d1 := drainingWithTransfer(t, root, addr, maddr)
	d2 := StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Control: d1.Control, Args: metrics})
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	startSlowGet(t, addr, "/big.bin", gate)
	if r := d2.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %+v", r)
	}
	d2.WaitState(ctl.StateDraining, 10*time.Second)
	d3 := StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Control: d1.Control, Args: metrics})

	start := time.Now()
	var last string
	ok := waitFor(15*time.Second, func() bool {
		r := Zfetch(t, "--retries", "0", "-q", "-o", "-", "zfs://"+addr+"/small.bin")
		last = r.Stderr
		return r.Code == 0 && sha(r.Stdout) == sum
	})
	t.Logf("the third instance served %v after it was ready (last failure: %q)", time.Since(start).Round(time.Millisecond), strings.TrimSpace(last))
	if !ok {
		t.Fatalf("with two instances draining, new connections never reached the third: %s", last)
	}
	for i, d := range []*Daemon{d1, d2} {
		if ok, _ := d.Exited(); ok {
			t.Errorf("instance %d exited before its transfer finished", i+1)
		}
	}
	if st := d3.MustStatus(); st.Totals.Connections == 0 {
		t.Error("the third instance served nothing")
	}
	var code int
	var body string
	if !waitFor(15*time.Second, func() bool { code, body = healthz(t, maddr); return code == http.StatusOK }) {
		t.Errorf("/healthz with two instances draining: %d %q, want 200 from the third", code, body)
	}
	for i := range 20 {
		if r := Zfetch(t, "--retries", "0", "-q", "-o", "-", "zfs://"+addr+"/small.bin"); r.Code != 0 || sha(r.Stdout) != sum {
			t.Fatalf("download %d after the third took over: %s", i, r.Stderr)
		}
	}
}

// TestTakeoverWildcard: a new instance configured with the wildcard
// address of the port a draining one listens on at 127.0.0.1 (another
// configuration) takes the loopback connections over too: the kernel
// prefers the exact address, so the draining one must let go of it.
func TestTakeoverWildcard(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	sum := WriteRandom(t, filepath.Join(root, "small.bin"), 64<<10)
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	d1 := drainingWithTransfer(t, root, addr, "")
	d2 := StartDaemon(t, DaemonOpts{Root: root, Listen: "0.0.0.0:" + port})
	start := time.Now()
	var last string
	if !waitFor(15*time.Second, func() bool {
		r := Zfetch(t, "--retries", "0", "-q", "-o", "-", "zfs://"+addr+"/small.bin")
		last = r.Stderr
		return r.Code == 0 && sha(r.Stdout) == sum
	}) {
		t.Fatalf("loopback connections never reached the new instance on the wildcard address: %s", last)
	}
	t.Logf("served on loopback by the new instance %v after it was ready", time.Since(start).Round(time.Millisecond))
	if ok, _ := d1.Exited(); ok {
		t.Error("the draining instance exited before its transfer finished")
	}
	if st := d2.MustStatus(); st.Totals.Connections == 0 {
		t.Error("the new instance served nothing")
	}
}

// TestTakeoverOldKilled: the draining instance is killed (SIGKILL) while
// the new one serves and clients keep connecting: the kernel drops its
// socket from the port's group and its steering program sends the rest to
// the new one (alone, by the hash): no connection is refused, reset or
// answered "draining" at any moment.
func TestTakeoverOldKilled(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	addr := freeAddr(t)
	d1 := drainingWithTransfer(t, root, addr, "")
	StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Control: d1.Control})
	var ok atomic.Int64
	var mu sync.Mutex
	var bad []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				st, err := probeStat(addr)
				if err != nil || st != wire.StatusOK {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%v %v", st, err))
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}()
	}
	waitFor(10*time.Second, func() bool { return ok.Load() >= 200 })
	if err := d1.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d1.WaitExit(10 * time.Second)
	before := ok.Load()
	waitFor(10*time.Second, func() bool { return ok.Load() >= before+500 })
	close(stop)
	wg.Wait()
	t.Logf("%d connections answered, %d before the kill", ok.Load(), before)
	if len(bad) > 0 {
		t.Errorf("%d connections failed around the kill of the draining instance: %v", len(bad), bad[:min(len(bad), 5)])
	}
}

// probeStat asks addr for STAT / on a new connection.
func probeStat(addr string) (wire.Status, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteRequest(c, &wire.Request{Op: wire.OpStat, Path: "/"}); err != nil {
		return 0, err
	}
	r, err := wire.ReadResponse(c)
	return r.Status, err
}
