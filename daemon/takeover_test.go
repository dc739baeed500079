package daemon

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// testListener binds addr as the supervisor does, closed at cleanup.
func testListener(t *testing.T, addr string) *listener {
	t.Helper()
	l, err := listenTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.f.Close() })
	return l
}

// acceptAll accepts what l has queued (after giving the handshakes of
// connections just dialled time to complete), closes it, and counts it.
func acceptAll(t *testing.T, l *listener, want int) int {
	t.Helper()
	n := 0
	deadline := time.Now().Add(2 * time.Second)
	for {
		fd, _, err := syscall.Accept4(int(l.f.Fd()), syscall.SOCK_CLOEXEC)
		if err == nil {
			unix.Close(fd)
			n++
			continue
		}
		if err != syscall.EAGAIN {
			t.Fatalf("accept: %v", err)
		}
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitQueued waits until n connections are in l's accept queue (for a
// listening socket, TCP_INFO's unacked is the queue's length).
func waitQueued(t *testing.T, l *listener, n int) {
	t.Helper()
	// Through SyscallConn: l.f.Fd() would put the listener in blocking
	// mode, and an accept4 on it would then wait instead of EAGAIN.
	rc, err := l.f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ti *unix.TCPInfo
		var err error
		if cerr := rc.Control(func(fd uintptr) { ti, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); cerr != nil {
			t.Fatal(cerr)
		}
		if err != nil {
			t.Fatal(err)
		}
		if int(ti.Unacked) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections queued, want %d", ti.Unacked, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func dialN(t *testing.T, addr string, n int) {
	t.Helper()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
}

// TestSteerAway: once a draining instance has steered its SO_REUSEPORT
// group, every new connection goes to the socket that joined after it;
// while it is alone (or again alone), it still gets them.
func TestSteerAway(t *testing.T) {
	old := testListener(t, "127.0.0.1:0")
	if err := steerAway(old.f); err != nil {
		t.Fatal(err)
	}
	dialN(t, old.addr, 4)
	if n := acceptAll(t, old, 4); n != 4 {
		t.Fatalf("a steered socket alone in its group accepted %d of 4 connections", n)
	}

	next := testListener(t, old.addr)
	const n = 32
	dialN(t, old.addr, n)
	if got := acceptAll(t, next, n); got != n {
		t.Errorf("the new instance's socket accepted %d of %d connections", got, n)
	}
	if got := acceptAll(t, old, 0); got != 0 {
		t.Errorf("the draining socket accepted %d connections after a new one joined", got)
	}

	next.f.Close()
	dialN(t, old.addr, 2)
	if got := acceptAll(t, old, 2); got != 2 {
		t.Errorf("alone again, the steered socket accepted %d of 2 connections", got)
	}
}

// drainingSupervisor is a Supervisor with no worker, draining: the
// dispatcher refuses every connection "draining".
func drainingSupervisor() *Supervisor {
	s := &Supervisor{log: slog.New(slog.DiscardHandler)}
	s.dispatch.Store(&[]*workerProc{})
	s.stateNow.Store(int32(stateDraining))
	s.httpOn.Store(true)
	return s
}

// TestCloseListenerAnswersQueued: connections still in a listener's accept
// queue when it closes get "draining" (native) or 503 (HTTP) instead of
// a reset.
func TestCloseListenerAnswersQueued(t *testing.T) {
	s := drainingSupervisor()
	l := testListener(t, "127.0.0.1:0")
	var native []net.Conn
	for range 8 {
		c, err := net.Dial("tcp", l.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := wire.WriteRequest(c, &wire.Request{Op: wire.OpGet, Path: "/f"}); err != nil {
			t.Fatal(err)
		}
		native = append(native, c)
	}
	hc, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Close() })
	io.WriteString(hc, "GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
	waitQueued(t, l, 9)

	s.closeListener(l)

	for i, c := range native {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		r, err := wire.ReadResponse(c)
		if err != nil || r.Status != wire.StatusDraining {
			t.Errorf("connection %d: %+v, %v; want draining", i, r, err)
		}
	}
	hc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(hc), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("HTTP: %v, %v; want 503", resp, err)
	}
	if _, err := net.Dial("tcp", l.addr); err == nil {
		t.Error("the listener still accepts after closeListener")
	}
}

// serveOnce answers every connection to a new listener with resp (nil:
// accept and say nothing), until the test ends.
func serveOnce(t *testing.T, resp *wire.Response) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if resp == nil {
				t.Cleanup(func() { c.Close() })
				continue
			}
			var hdr [wire.RequestHeaderLen]byte
			wire.ReadRequest(c, &hdr)
			c.Write(wire.AppendResponse(nil, resp))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// freeAddr is a loopback address nothing listens on (the kernel's choice
// of a port, closed again).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestCheckTakeover(t *testing.T) {
	defer func(d time.Duration) { probeTimeout = d }(probeTimeout)
	probeTimeout = 300 * time.Millisecond
	for _, c := range []struct {
		name     string
		addr     string
		draining bool
		err      string
	}{
		{"port 0", "127.0.0.1:0", false, ""},
		{"nothing listens", freeAddr(t), false, ""},
		{"a draining zfs-serve", serveOnce(t, &wire.Response{Status: wire.StatusDraining, Message: "draining"}), true, ""},
		{"a serving zfs-serve", serveOnce(t, &wire.Response{Status: wire.StatusOK, Kind: wire.KindDir}), false, "address already in use"},
		{"a busy zfs-serve", serveOnce(t, &wire.Response{Status: wire.StatusBusy}), false, "address already in use"},
		{"something silent", serveOnce(t, nil), false, "address already in use"},
	} {
		draining, err := checkTakeover(c.addr, false)
		if draining != c.draining || (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: draining %v, err %v; want %v, %q", c.name, draining, err, c.draining, c.err)
		}
	}
}

// TestMetricsTakeover: a new instance binds the metrics address of one
// that drains (its /healthz says so), and of no other: not of a serving
// one, nor of something else.
func TestMetricsTakeover(t *testing.T) {
	defer func(d time.Duration) { probeTimeout = d }(probeTimeout)
	probeTimeout = 300 * time.Millisecond
	for _, state := range []supState{stateDraining, stateStopping, stateServing, stateStarting} {
		t.Run(state.String(), func(t *testing.T) {
			old := loopSupervisor(t, stateServing)
			old.dispatch.Store(&[]*workerProc{{}})
			old.cfg.MetricsListen = "127.0.0.1:0"
			if err := old.openMetrics(nil); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(old.closeMetrics)
			addr := old.metrics.listener.addr
			old.call(t.Context(), func() { old.setState(state) })

			s := loopSupervisor(t, stateStarting)
			ml, err := s.bindMetrics(addr)
			if ml != nil {
				ml.ln.Close()
			}
			takeover := state.exiting()
			if takeover != (err == nil) || err != nil && !strings.Contains(err.Error(), "address already in use") {
				t.Errorf("bindMetrics over a %s instance: %v", state, err)
			}
		})
	}
	other := serveOnce(t, &wire.Response{Status: wire.StatusDraining})
	if _, err := loopSupervisor(t, stateStarting).bindMetrics(other); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("bindMetrics over something that does not speak HTTP: %v", err)
	}
}

// TestBindRace: two instances that start at the same moment do not both
// bind one port, even when both check it before either binds (here,
// without the port lock, both would reach beforeBind together): one
// binds, the other finds its socket and fails "address already in use".
// The same for the metrics address.
func TestBindRace(t *testing.T) {
	defer func(d time.Duration, f func()) { probeTimeout, beforeBind = d, f }(probeTimeout, beforeBind)
	probeTimeout = 300 * time.Millisecond
	arrived := make(chan struct{}, 2)
	beforeBind = func() {
		arrived <- struct{}{}
		// Wait (a bounded time) for the other start to arrive too.
		deadline := time.After(time.Second)
		for len(arrived) < 2 {
			select {
			case <-deadline:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}
	for _, kind := range []string{"listen", "metrics_listen"} {
		t.Run(kind, func(t *testing.T) {
			for len(arrived) > 0 {
				<-arrived
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			errs := make(chan error, 2)
			for range 2 {
				go func() {
					s := &Supervisor{log: slog.New(slog.DiscardHandler)}
					var c io.Closer
					var err error
					if kind == "listen" {
						var l *listener
						if l, err = s.bind(addr); err == nil {
							c = l.f
						}
					} else {
						var ml *metricsListener
						if ml, err = s.bindMetrics(addr); err == nil {
							c = ml.ln
						}
					}
					if c != nil {
						t.Cleanup(func() { c.Close() })
					}
					errs <- err
				}()
			}
			bound := 0
			for range 2 {
				err := <-errs
				if err == nil {
					bound++
				} else if !strings.Contains(err.Error(), "address already in use") {
					t.Errorf("the start that lost: %v", err)
				}
			}
			if bound != 1 {
				t.Errorf("%d of two racing starts bound %s", bound, addr)
			}
		})
	}
}

// TestPortLockNotHeldByOthers: anyone can bind the abstract name of a
// port's lock, but only a process of our user can share the port: a name
// bound by a socket that does not listen, or held by another user, does
// not delay a start.
func TestPortLockNotHeldByOthers(t *testing.T) {
	defer func(d time.Duration) { portLockWait = d }(portLockWait)
	portLockWait = time.Minute // a wait would show
	s := &Supervisor{log: slog.New(slog.DiscardHandler)}
	hold := func(t *testing.T, port string) {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Bind(fd, portLockName(port)); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("not listening", func(t *testing.T) {
		hold(t, "65001")
		start := time.Now()
		s.lockPort("127.0.0.1:65001")()
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("waited %v for a lock nobody of ours holds", el)
		}
	})
	t.Run("another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to run a process as another user")
		}
		py := "/usr/bin/python3" // not a shim in root's home, which another user cannot run
		if _, err := os.Stat(py); err != nil {
			t.Skip("no /usr/bin/python3")
		}
		cmd := exec.Command(py, "-c", `import socket,sys,time
s=socket.socket(socket.AF_UNIX)
s.bind("\0zfs-serve/port/65002")
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
		start := time.Now()
		s.lockPort("127.0.0.1:65002")()
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("waited %v for a lock held by another user", el)
		}
	})
	t.Run("our user", func(t *testing.T) {
		portLockWait = 300 * time.Millisecond
		unlock := s.lockPort("127.0.0.1:65003")
		defer unlock()
		start := time.Now()
		s.lockPort("127.0.0.1:65003")()
		if el := time.Since(start); el < portLockWait {
			t.Errorf("did not wait for a lock of ours (%v)", el)
		}
	})
}

// TestTakeoverNotLocal: a listen or metrics_listen address that is not
// one of this machine's (a typo, or an interface not up yet at boot) is
// refused with bind's own reason, "cannot assign requested address",
// without the takeover probe connecting to it: that would reach
// whichever host has the address, and report its answer, or its
// silence, as "address already in use". 192.0.2.1 is TEST-NET-1 (RFC
// 5737), on no machine.
func TestTakeoverNotLocal(t *testing.T) {
	defer func(d time.Duration) { probeTimeout = d }(probeTimeout)
	probeTimeout = 300 * time.Millisecond
	const addr = "192.0.2.1:17899"
	check := func(what string, err error) {
		t.Helper()
		if err == nil || !errors.Is(err, syscall.EADDRNOTAVAIL) || strings.Contains(err.Error(), "already in use") {
			t.Errorf("%s %s: %v; want bind's EADDRNOTAVAIL", what, addr, err)
		}
	}
	_, err := checkTakeover(addr, false)
	check("listen", err)
	_, err = checkTakeover(addr, true)
	check("listen proxy:", err)
	_, err = checkMetricsTakeover(addr)
	check("metrics_listen", err)
	// An address of this machine is probed as before.
	if _, err := checkTakeover("127.0.0.1:0", false); err != nil {
		t.Errorf("127.0.0.1:0: %v", err)
	}
}

// TestReloadWidensListener: a reload that turns 127.0.0.1:PORT into
// 0.0.0.0:PORT (to open a listener to the network), for a file listener
// or metrics_listen, binds the new address. The takeover probe for
// 0.0.0.0:PORT dials 127.0.0.1:PORT, which is this daemon's own
// listener, still open until the new generation takes over: its answer
// ("ok", or "busy" here with no worker) failed the reload with "address
// already in use", about the daemon itself.
func TestReloadWidensListener(t *testing.T) {
	defer func(d time.Duration) { probeTimeout = d }(probeTimeout)
	probeTimeout = 300 * time.Millisecond
	t.Run("listen", func(t *testing.T) {
		s := loopSupervisor(t, stateServing)
		_, port, _ := net.SplitHostPort(freeAddr(t))
		s.cfg.Listen = []string{"127.0.0.1:" + port}
		if err := s.openListeners(activatedSockets{}); err != nil {
			t.Fatal(err)
		}
		s.startAccepting()
		t.Cleanup(s.closeListeners)
		l, err := s.bind("0.0.0.0:" + port)
		if err != nil {
			t.Fatalf("bind 0.0.0.0:%s beside this daemon's own 127.0.0.1:%s: %v", port, port, err)
		}
		l.f.Close()
	})
	t.Run("metrics_listen", func(t *testing.T) {
		s := loopSupervisor(t, stateServing)
		s.dispatch.Store(&[]*workerProc{{}})
		_, port, _ := net.SplitHostPort(freeAddr(t))
		s.cfg.MetricsListen = "127.0.0.1:" + port
		if err := s.openMetrics(nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.closeMetrics)
		ml, err := s.bindMetrics("0.0.0.0:" + port)
		if err != nil {
			t.Fatalf("bind metrics 0.0.0.0:%s beside this daemon's own 127.0.0.1:%s: %v", port, port, err)
		}
		ml.ln.Close()
	})
}
