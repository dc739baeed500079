package e2e

// systemd's side of the daemon without systemd as PID 1: socket activation
// through systemd-socket-activate (sockets picked by LISTEN_FDNAMES, never
// by position) and sd_notify through a fake NOTIFY_SOCKET that records
// every message, with the sender's pid, in order. e2e/nspawn_test.go does
// the same against a real systemd.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/wire"
)

// sdProc is a zfs-serve started with an arbitrary command line (under
// systemd-socket-activate, or with a fake NOTIFY_SOCKET), whose control
// socket path the test chose.
type sdProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	logPath string
	control string
	exited  chan struct{}

	mu      sync.Mutex
	workers map[int]bool
}

// startProc runs argv with env added to ours, output to dir/daemon.log.
// Cleanup kills it if it is still running and checks its workers exit.
func startProc(t *testing.T, dir, control string, argv, env []string) *sdProc {
	t.Helper()
	p := &sdProc{t: t, logPath: filepath.Join(dir, "daemon.log"), control: control,
		exited: make(chan struct{}), workers: map[int]bool{}}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Env = append(cleanEnv(), env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.cleanup)
	return p
}

// cleanEnv is our environment without what systemd would have set for
// us, so that a test run under systemd does not pass its own on.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (p *sdProc) cleanup() {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid := range p.workers {
		if !waitFor(5*time.Second, func() bool { return !alive(pid) }) {
			syscall.Kill(pid, syscall.SIGKILL)
			p.t.Errorf("worker %d outlived its supervisor", pid)
		}
	}
	if p.t.Failed() {
		p.t.Logf("daemon log (%s):\n%s", p.logPath, tail(p.log(), 60))
	}
}

func (p *sdProc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *sdProc) status() (*ctl.Status, error) {
	st, err := statusAt(p.control)
	if err == nil {
		p.mu.Lock()
		for _, w := range st.Workers {
			if w.PID != 0 {
				p.workers[w.PID] = true
			}
		}
		p.mu.Unlock()
	}
	return st, err
}

// statusAt asks the daemon on the control socket at path for its status.
func statusAt(path string) (*ctl.Status, error) {
	c, err := ctl.Dial(path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r, err := c.Do(ctl.Request{Cmd: ctl.CmdStatus}, nil)
	if err != nil {
		return nil, err
	}
	return r.Status, nil
}

// waitStatus polls status until cond holds.
func (p *sdProc) waitStatus(timeout time.Duration, what string, cond func(*ctl.Status) bool) *ctl.Status {
	p.t.Helper()
	var last *ctl.Status
	var lastErr error
	ok := waitFor(timeout, func() bool {
		select {
		case <-p.exited:
			return true
		default:
		}
		last, lastErr = p.status()
		return lastErr == nil && cond(last)
	})
	select {
	case <-p.exited:
		p.t.Fatalf("zfs-serve exited (%v) while waiting for %s", p.cmd.ProcessState, what)
	default:
	}
	if !ok {
		b, _ := json.MarshalIndent(last, "", "  ")
		p.t.Fatalf("timed out after %v waiting for %s; last status %s (err %v)", timeout, what, b, lastErr)
	}
	return last
}

func (p *sdProc) waitExit(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("zfs-serve did not exit within %v", timeout)
		return -1
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// envOf returns a process's initial environment.
func envOf(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// systemdOnly are the variables only the supervisor may hold.
var systemdOnly = []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}

// checkWorkerEnv fails if a worker of st inherited systemd's variables.
func checkWorkerEnv(t *testing.T, st *ctl.Status) {
	t.Helper()
	for _, pid := range WorkerPIDs(st) {
		env := envOf(t, pid)
		for _, k := range systemdOnly {
			if v, ok := env[k]; ok {
				t.Errorf("worker %d inherited %s=%s", pid, k, v)
			}
		}
	}
}

// activation is one systemd-socket-activate setup: the file listener on
// a TCP port and the control socket, in the given fd order.
type activation struct {
	port        int
	control     string
	controlName string // FileDescriptorName of the unix socket ("control" or another)
	tcpFirst    bool
}

// startActivated runs zfs-serve under systemd-socket-activate, which binds
// the sockets, waits for the first connection on any of them, then execs
// zfs-serve with LISTEN_FDS and LISTEN_FDNAMES.
func startActivated(t *testing.T, dir string, a activation, control string, args ...string) *sdProc {
	t.Helper()
	tcp, unix := fmt.Sprintf("127.0.0.1:%d", a.port), a.control
	argv := []string{"systemd-socket-activate"}
	if a.tcpFirst {
		argv = append(argv, "-l", tcp, "-l", unix, "--fdname="+FDNames("zfs", a.controlName))
	} else {
		argv = append(argv, "-l", unix, "-l", tcp, "--fdname="+FDNames(a.controlName, "zfs"))
	}
	argv = append(argv, zfsServe)
	argv = append(argv, args...)
	p := startProc(t, dir, control, argv, nil)
	// systemd-socket-activate says "Listening on ADDR as FD." for each
	// socket once bound; wait for both, or for it to fail.
	if !waitFor(10*time.Second, func() bool {
		select {
		case <-p.exited:
			return true
		default:
		}
		return strings.Count(p.log(), "Listening on") == 2
	}) {
		t.Fatalf("systemd-socket-activate did not bind its sockets:\n%s", p.log())
	}
	select {
	case <-p.exited:
		t.Fatalf("systemd-socket-activate exited:\n%s", p.log())
	default:
	}
	return p
}

// FDNames joins socket names as systemd-socket-activate's --fdname wants.
func FDNames(names ...string) string { return strings.Join(names, ":") }

// TestSocketActivationByName hands zfs-serve its two sockets in both
// orders: it must pick them by name, serve on the "zfs" one, answer on
// the "control" one, bind neither of the configured addresses, and pass
// neither the sockets nor LISTEN_* on to its workers.
func TestSocketActivationByName(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	for _, tc := range []struct {
		name     string
		tcpFirst bool
	}{{"zfs fd first", true}, {"control fd first", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortTempDir(t)
			root := filepath.Join(dir, "root")
			want := WriteRandom(t, filepath.Join(root, "f.bin"), 3<<20+17)
			a := activation{port: freePort(t), control: filepath.Join(dir, "ctl.sock"), controlName: "control", tcpFirst: tc.tcpFirst}
			unusedPort, unusedCtl := freePort(t), filepath.Join(dir, "configured.sock")
			p := startActivated(t, dir, a, a.control, "--config", "/dev/null", "--root", root, "--workers", "2",
				"--listen", fmt.Sprintf("127.0.0.1:%d", unusedPort), "--control", unusedCtl)

			// The fds really are in the order this case wants.
			tcpFD, ctlFD := "3", "4"
			if !tc.tcpFirst {
				tcpFD, ctlFD = "4", "3"
			}
			lg := p.log()
			if !strings.Contains(lg, fmt.Sprintf("Listening on 127.0.0.1:%d as %s.", a.port, tcpFD)) ||
				!strings.Contains(lg, fmt.Sprintf("Listening on %s as %s.", a.control, ctlFD)) {
				t.Fatalf("systemd-socket-activate did not pass the fds in the intended order:\n%s", lg)
			}

			// The first connection, on the control socket, starts zfs-serve.
			st := p.waitStatus(15*time.Second, "serving", func(st *ctl.Status) bool { return st.State == ctl.StateServing })
			wantAddr := fmt.Sprintf("127.0.0.1:%d", a.port)
			if len(st.Listeners) != 1 || st.Listeners[0] != (ctl.Listener{Name: "zfs", Addr: wantAddr, Activated: true}) {
				t.Errorf("listeners = %+v, want only the activated zfs socket %s", st.Listeners, wantAddr)
			}
			if st.Control != a.control {
				t.Errorf("control = %q, want the activated %q", st.Control, a.control)
			}
			if _, err := os.Stat(unusedCtl); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the configured control socket %s was created too (stat: %v)", unusedCtl, err)
			}
			if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", unusedPort), time.Second); err == nil {
				c.Close()
				t.Errorf("the configured --listen 127.0.0.1:%d is bound too", unusedPort)
			}

			out := filepath.Join(dir, "out.bin")
			if r := Zfetch(t, "-q", "-o", out, "zfs://"+wantAddr+"/f.bin"); r.Code != 0 {
				t.Fatalf("zfetch: exit %d: %s", r.Code, r.Stderr)
			}
			if got := FileSHA256(t, out); got != want {
				t.Errorf("downloaded sha256 %s, want %s", got, want)
			}

			checkWorkerEnv(t, st)
			for _, pid := range WorkerPIDs(st) {
				if n := listeningSockets(t, pid); n != 0 {
					t.Errorf("worker %d holds %d listening sockets", pid, n)
				}
			}
			lg = p.log()
			for _, w := range []string{
				`msg="listening (socket-activated)" proc=supervisor name=zfs addr=` + wantAddr,
				`msg="control socket (socket-activated)" proc=supervisor path=` + a.control,
			} {
				if !strings.Contains(lg, w) {
					t.Errorf("log lacks %s", w)
				}
			}
			if strings.Contains(lg, "level=ERROR") {
				t.Errorf("errors in the log:\n%s", lg)
			}

			p.cmd.Process.Signal(syscall.SIGTERM)
			if code := p.waitExit(30 * time.Second); code != 0 {
				t.Errorf("exit status %d after SIGTERM, want 0", code)
			}
		})
	}
}

// TestSocketActivationUnknownName passes a socket with a name zfs-serve
// does not know: an error in the log, the socket closed, and the rest
// works (the control socket is then the configured one).
func TestSocketActivationUnknownName(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	dir := shortTempDir(t)
	root := filepath.Join(dir, "root")
	want := WriteRandom(t, filepath.Join(root, "f.bin"), 100<<10)
	own := filepath.Join(dir, "own.sock")
	a := activation{port: freePort(t), control: filepath.Join(dir, "bogus.sock"), controlName: "bogus", tcpFirst: true}
	p := startActivated(t, dir, a, own, "--config", "/dev/null", "--root", root, "--workers", "1", "--control", own)

	// The first connection, a download, starts zfs-serve.
	addr := fmt.Sprintf("127.0.0.1:%d", a.port)
	out := filepath.Join(dir, "out.bin")
	if r := Zfetch(t, "-q", "-o", out, "zfs://"+addr+"/f.bin"); r.Code != 0 {
		t.Fatalf("zfetch: exit %d: %s", r.Code, r.Stderr)
	}
	if got := FileSHA256(t, out); got != want {
		t.Errorf("downloaded sha256 %s, want %s", got, want)
	}
	st := p.waitStatus(10*time.Second, "serving", func(st *ctl.Status) bool { return st.State == ctl.StateServing })
	if st.Control != own || len(st.Listeners) != 1 || !st.Listeners[0].Activated {
		t.Errorf("control %q listeners %+v; want the configured control socket and the activated zfs listener", st.Control, st.Listeners)
	}
	lg := p.log()
	if !strings.Contains(lg, "level=ERROR") || !strings.Contains(lg, "name=bogus") {
		t.Errorf("no error naming the unknown socket in the log:\n%s", lg)
	}
	// Closed, not kept: nobody listens on it any more.
	if !waitFor(5*time.Second, func() bool {
		c, err := net.Dial("unix", a.control)
		if err == nil {
			c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	}) {
		t.Errorf("the socket named bogus (%s) is still open", a.control)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
}

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

// allReady reports whether st has n workers of generation gen, all ready.
func allReady(st *ctl.Status, gen, n int) bool {
	if st == nil {
		return false
	}
	ready := 0
	for _, w := range st.Workers {
		if w.Generation == gen && w.State == "ready" {
			ready++
		}
	}
	return ready == n
}
