package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/wire"
)

// notifyMsg is one datagram on the fake NOTIFY_SOCKET.
type notifyMsg struct {
	pid   int // the sender, from SCM_CREDENTIALS
	lines []string
	// For READY=1: the daemon's status as soon as it arrived.
	status    *ctl.Status
	statusErr error
}

func (m *notifyMsg) has(line string) bool {
	for _, l := range m.lines {
		if l == line {
			return true
		}
	}
	return false
}

func (m *notifyMsg) statusText() string {
	for _, l := range m.lines {
		if s, ok := strings.CutPrefix(l, "STATUS="); ok {
			return s
		}
	}
	return ""
}

// notifyRecorder is a fake systemd notification socket: it records every
// message in order with its sender's pid.
type notifyRecorder struct {
	t       *testing.T
	path    string
	conn    *net.UnixConn
	onReady func(*notifyMsg) // runs on the reader as a READY=1 arrives

	mu   sync.Mutex
	msgs []*notifyMsg
	done chan struct{}
}

func newNotifyRecorder(t *testing.T, path string, onReady func(*notifyMsg)) *notifyRecorder {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := conn.SyscallConn()
	var serr error
	rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1) })
	if serr != nil {
		t.Fatal(serr)
	}
	r := &notifyRecorder{t: t, path: path, conn: conn, onReady: onReady, done: make(chan struct{})}
	go r.read()
	t.Cleanup(func() {
		conn.Close()
		<-r.done
	})
	return r
}

func (r *notifyRecorder) read() {
	defer close(r.done)
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	for {
		n, oobn, _, _, err := r.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		m := &notifyMsg{lines: strings.Split(strings.TrimRight(string(buf[:n]), "\n"), "\n")}
		if cms, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range cms {
				if cred, err := syscall.ParseUnixCredentials(&cm); err == nil {
					m.pid = int(cred.Pid)
				}
			}
		}
		if m.has("READY=1") && r.onReady != nil {
			r.onReady(m)
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	}
}

func (r *notifyRecorder) all() []*notifyMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*notifyMsg(nil), r.msgs...)
}

// next waits for the first message from index from on that has line, and
// returns its index.
func (r *notifyRecorder) next(from int, line string, timeout time.Duration) int {
	r.t.Helper()
	at := -1
	waitFor(timeout, func() bool {
		ms := r.all()
		for i := from; i < len(ms); i++ {
			if ms[i].has(line) {
				at = i
				return true
			}
		}
		return false
	})
	if at < 0 {
		r.t.Fatalf("no %s within %v; messages from %d on:\n%s", line, timeout, from, r.dump(from))
	}
	return at
}

func (r *notifyRecorder) dump(from int) string {
	var b strings.Builder
	for i, m := range r.all() {
		if i >= from {
			fmt.Fprintf(&b, "  %d pid %d: %q\n", i, m.pid, m.lines)
		}
	}
	return b.String()
}

// TestNotifyProtocol checks every sd_notify message zfs-serve sends, in
// order, from startup to exit: READY=1 only once every worker is ready,
// STATUS= kept current, WATCHDOG=1 at the WATCHDOG_USEC pace, RELOADING=1
// then READY=1 around a reload (zctl, SIGHUP, and a failed one), and
// STOPPING=1 on drain. Only the supervisor sends, and no worker inherits
// NOTIFY_SOCKET or WATCHDOG_*.
func TestNotifyProtocol(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	root := filepath.Join(dir, "root")
	WriteRandom(t, filepath.Join(root, "big.bin"), 64<<20)
	control := filepath.Join(dir, "ctl.sock")
	cfgPath := filepath.Join(dir, "zfs-serve.toml")
	config := fmt.Sprintf("root = %q\nlisten = [\"127.0.0.1:0\"]\ncontrol = %q\nworkers = 2\n", root, control)
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// At each READY=1, before anything else happens, ask for the status:
	// every worker of the new generation must be ready already.
	rec := newNotifyRecorder(t, filepath.Join(dir, "notify.sock"), func(m *notifyMsg) {
		m.status, m.statusErr = statusAt(control)
	})
	p := startProc(t, dir, control, []string{zfsServe, "--config", cfgPath},
		[]string{"NOTIFY_SOCKET=" + rec.path, "WATCHDOG_USEC=300000"})

	// Startup: STATUS=starting..., then READY=1 once both workers are ready.
	ready := rec.next(0, "READY=1", 15*time.Second)
	ms := rec.all()
	if s := ms[0].statusText(); !strings.HasPrefix(s, "starting:") {
		t.Errorf("first message %q, want STATUS=starting...", ms[0].lines)
	}
	// A WATCHDOG=1 may come before READY=1 (the pings start with the
	// supervisor, and a slow machine may take longer than one interval to
	// bring the workers up: systemd accepts that); anything else may not.
	for _, m := range ms[:ready] {
		if len(m.lines) != 1 || (m.statusText() == "" && !m.has("WATCHDOG=1")) {
			t.Errorf("before READY=1: %q, want only STATUS= or WATCHDOG=1 lines", m.lines)
		}
	}
	m := ms[ready]
	if s := m.statusText(); !strings.HasPrefix(s, "serving: generation 1, 2 workers") {
		t.Errorf("READY=1 came with STATUS=%q, want serving: generation 1, 2 workers...", s)
	}
	if m.statusErr != nil || m.status.Generation != 1 || m.status.State != ctl.StateServing || !allReady(m.status, 1, 2) {
		t.Errorf("at READY=1 status was %+v (err %v), want generation 1 serving with 2 ready workers", m.status, m.statusErr)
	}
	st := p.waitStatus(5*time.Second, "serving", func(st *ctl.Status) bool { return st.State == ctl.StateServing })
	supervisor := p.cmd.Process.Pid
	if st.PID != supervisor {
		t.Fatalf("status pid %d, started %d", st.PID, supervisor)
	}
	checkWorkerEnv(t, st)
	if envOf(t, supervisor)["NOTIFY_SOCKET"] != rec.path {
		t.Errorf("the supervisor was started without NOTIFY_SOCKET")
	}

	// WATCHDOG=1 every WATCHDOG_USEC/3 or so.
	w1 := rec.next(0, "WATCHDOG=1", 2*time.Second)
	w2 := rec.next(w1+1, "WATCHDOG=1", 2*time.Second)
	rec.next(w2+1, "WATCHDOG=1", 2*time.Second)

	// STATUS= follows the pool: a worker killed, then replaced.
	victim := WorkerPIDs(st)[0]
	mark := len(rec.all())
	syscall.Kill(victim, syscall.SIGKILL)
	one := rec.next(mark, "STATUS=serving: generation 1, 1 worker, 0 connections in flight", 5*time.Second)
	rec.next(one+1, "STATUS=serving: generation 1, 2 workers, 0 connections in flight", 10*time.Second)
	st = p.waitStatus(10*time.Second, "two ready workers", func(st *ctl.Status) bool { return allReady(st, 1, 2) })

	// ... and the connections in flight (refreshed every few seconds): a
	// download held open by a client that stops reading.
	conn, err := net.Dial("tcp", st.Listeners[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sendReq(t, conn, &wire.Request{Op: wire.OpGet, Path: "/big.bin"})
	p.waitStatus(5*time.Second, "a transfer in flight", func(st *ctl.Status) bool { return len(st.Transfers) == 1 })
	rec.next(mark, "STATUS=serving: generation 1, 2 workers, 1 connection in flight", 10*time.Second)
	conn.Close()

	// zctl reload: RELOADING=1, then READY=1 once generation 2 is ready.
	reloads := []struct {
		how string
		gen int
	}{{"zctl", 2}, {"SIGHUP", 3}}
	for _, rl := range reloads {
		mark = len(rec.all())
		if rl.how == "zctl" {
			if r := run(t, 30*time.Second, zctlBin, "-s", control, "reload"); r.Code != 0 {
				t.Fatalf("zctl reload: exit %d: %s", r.Code, r.Stderr)
			}
		} else {
			p.cmd.Process.Signal(syscall.SIGHUP)
		}
		reloading := rec.next(mark, "RELOADING=1", 10*time.Second)
		ready = rec.next(reloading+1, "READY=1", 10*time.Second)
		m = rec.all()[ready]
		if m.statusErr != nil || m.status.Generation != rl.gen || !allReady(m.status, rl.gen, 2) {
			t.Errorf("%s reload: at READY=1 status was %+v (err %v), want generation %d with 2 ready workers", rl.how, m.status, m.statusErr, rl.gen)
		}
		if s := m.statusText(); !strings.HasPrefix(s, fmt.Sprintf("serving: generation %d,", rl.gen)) {
			t.Errorf("%s reload: READY=1 came with STATUS=%q", rl.how, s)
		}
	}

	// A reload that fails (an unknown key): RELOADING=1, then READY=1
	// again for the generation that kept serving.
	if err := os.WriteFile(cfgPath, []byte(config+"no_such_key = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mark = len(rec.all())
	if r := run(t, 30*time.Second, zctlBin, "-s", control, "reload"); r.Code == 0 {
		t.Errorf("zctl reload of an invalid config succeeded: %s", r.Stdout)
	}
	reloading := rec.next(mark, "RELOADING=1", 10*time.Second)
	ready = rec.next(reloading+1, "READY=1", 10*time.Second)
	if s := rec.all()[ready].statusText(); !strings.HasPrefix(s, "serving: generation 3,") {
		t.Errorf("after a failed reload READY=1 came with STATUS=%q, want generation 3 still serving", s)
	}

	// Drain: STOPPING=1, STATUS=draining..., no READY=1 after it, exit 0.
	mark = len(rec.all())
	p.cmd.Process.Signal(syscall.SIGTERM)
	stopping := rec.next(mark, "STOPPING=1", 10*time.Second)
	if s := rec.all()[stopping].statusText(); !strings.HasPrefix(s, "draining:") {
		t.Errorf("STOPPING=1 came with STATUS=%q, want draining...", s)
	}
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	all := rec.all()
	for i, m := range all {
		if i > stopping && (m.has("READY=1") || m.has("RELOADING=1")) {
			t.Errorf("message %d after STOPPING=1: %q", i, m.lines)
		}
		if m.pid != supervisor {
			t.Errorf("message %d %q came from pid %d, not the supervisor %d", i, m.lines, m.pid, supervisor)
		}
	}
	if t.Failed() {
		t.Logf("notifications:\n%s", rec.dump(0))
	}
}

// TestNotifyStoppingOnKill: zctl kill also says STOPPING=1.
func TestNotifyStoppingOnKill(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(dir, "ctl.sock")
	rec := newNotifyRecorder(t, filepath.Join(dir, "notify.sock"), nil)
	p := startProc(t, dir, control, []string{zfsServe, "--config", "/dev/null", "--root", root, "--listen", "127.0.0.1:0",
		"--control", control, "--workers", "1"}, []string{"NOTIFY_SOCKET=" + rec.path})
	ready := rec.next(0, "READY=1", 15*time.Second)
	p.waitStatus(5*time.Second, "serving", func(st *ctl.Status) bool { return st.State == ctl.StateServing })
	if r := run(t, 30*time.Second, zctlBin, "-s", control, "kill"); r.Code != 0 {
		t.Fatalf("zctl kill: exit %d: %s", r.Code, r.Stderr)
	}
	stopping := rec.next(ready+1, "STOPPING=1", 10*time.Second)
	if s := rec.all()[stopping].statusText(); !strings.HasPrefix(s, "stopping:") {
		t.Errorf("STOPPING=1 came with STATUS=%q, want stopping...", s)
	}
	p.waitExit(30 * time.Second)
}
