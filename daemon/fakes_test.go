package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// fakeProc is a worker process played by a goroutine that speaks the
// channel protocol. Its mode says how it behaves:
//
//	ready  reports ready, answers pings, exits 0 when told to drain
//	hang   never reports ready
//	crash  exits 2 once it has its configuration
//	hold   like ready, but a drain never ends (connections that last)
//	deaf   like ready, but never answers a ping
//	fail   the start itself fails
//	real   a real worker (in this process) on the channel, in the accept
//	       mode (acceptcount_test.go)
//	clog   like ready, but once it has read its configuration (it then
//	       closes configured) reports ready only once gate is closed,
//	       and reads its channel only once gate2 is (acceptbudget_test.go)
type fakeProc struct {
	pid    int
	mode   string
	ch     *net.UnixConn
	once   sync.Once
	exited chan struct{}
	how    string
	gen    int // from its configuration

	// The accept mode (dispatch = "accept"): the budgets it was sent
	// (msgLimit) and whether it got the listening sockets (msgListen).
	amu      sync.Mutex
	limits   []uint32
	listened bool
	real     *worker // mode "real"

	configured, gate, gate2 chan struct{} // mode "clog"
}

func (p *fakeProc) Pid() int { return p.pid }

func (p *fakeProc) Signal(sig os.Signal) error {
	if sig == syscall.SIGKILL {
		p.exit("killed by signal SIGKILL")
	}
	return nil
}

func (p *fakeProc) Wait() string {
	<-p.exited
	return p.how
}

// exit ends the process: its channel closes, and Wait returns how.
func (p *fakeProc) exit(how string) {
	p.once.Do(func() {
		p.how = how
		p.ch.Close()
		close(p.exited)
	})
}

// retire is what a worker does on SIGTERM: ask to be replaced.
func (p *fakeProc) retire() error { return fdpass.Send(p.ch, []byte{msgRetire}) }

func (p *fakeProc) run() {
	buf := make([]byte, maxMsg)
	oob := make([]byte, fdpass.OOBSpace)
	n, fds, err := fdpass.Recv(p.ch, buf, oob)
	closeFDs(fds)
	if err == nil && n > 0 && buf[0] == msgConfig {
		if wc, err := parseConfig(buf[1:n]); err == nil {
			p.gen = wc.Generation
		}
	}
	switch p.mode {
	case "real":
		p.runReal(buf[1:n])
		return
	case "crash":
		p.exit("exit status 2")
		return
	case "ready", "hold", "deaf":
		fdpass.Send(p.ch, appendU32(nil, msgReady, 0))
	case "clog":
		close(p.configured)
		<-p.gate
		fdpass.Send(p.ch, appendU32(nil, msgReady, 0))
		<-p.gate2
	}
	for {
		n, fds, err := fdpass.Recv(p.ch, buf, oob)
		closeFDs(fds)
		if err != nil || n == 0 {
			return
		}
		switch buf[0] {
		case msgLimit:
			n, _ := parseLimit(buf[1:n])
			p.amu.Lock()
			p.limits = append(p.limits, n)
			p.amu.Unlock()
		case msgListen:
			p.amu.Lock()
			p.listened = true
			p.amu.Unlock()
		case msgDrain:
			p.amu.Lock()
			listened := p.listened
			p.amu.Unlock()
			if listened {
				fdpass.Send(p.ch, []byte{msgAcceptStopped})
			}
			if p.mode != "hold" {
				p.exit("exit status 0")
				return
			}
		case msgPing:
			if p.mode != "deaf" {
				fdpass.Send(p.ch, append([]byte{msgPong}, buf[1:n]...))
			}
		}
	}
}

// rig is a Supervisor with fake processes and a fake clock whose real
// loop runs in a goroutine: tests drive it with events and time.
type rig struct {
	t      *testing.T
	s      *Supervisor
	clock  *fakeClock
	sigs   chan os.Signal
	health chan time.Time
	result chan error
	cancel context.CancelFunc

	mu    sync.Mutex
	plan  []string // modes of the next processes, in order; then "ready"
	procs []*fakeProc
}

// newRig starts a supervisor with the configuration conf (TOML lines
// added to root and listen), whose first processes behave as plan says.
func newRig(t *testing.T, conf string, plan ...string) *rig {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "zfs-serve.toml")
	r := &rig{t: t, clock: newFakeClock(), sigs: make(chan os.Signal, 4), health: make(chan time.Time),
		result: make(chan error, 1), plan: plan}
	r.writeConfig(path, conf)
	src := config.Source{Path: path, Explicit: true}
	cfg, err := src.Load()
	if err != nil {
		t.Fatal(err)
	}
	e := env{executable: func() (string, error) { return "/fake/zfs-serve", nil }, notify: func(string) {},
		runTime: func(int) time.Duration { return 0 }, startProc: r.startProc, clock: r.clock}
	s := newSupervisor(Options{Source: src, Config: cfg, Version: "test"}, e)
	s.log = quietLog()
	s.setState(stateStarting)
	// A socket-activated listener stands for the listeners: reloads
	// leave it alone, and no accept loop runs. In the accept mode it is a
	// real socket, a copy of which each worker is sent.
	s.listeners = []*listener{{name: FDNameFiles, addr: "fake", activated: true, accepting: true}}
	if cfg.Dispatch == config.DispatchAccept {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		s.listeners[0].f, s.listeners[0].addr = f, ln.Addr().String()
	}
	r.s = s
	if err := s.start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.result <- s.loop(ctx, inputs{signals: r.sigs, health: r.health}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.result:
		case <-time.After(5 * time.Second):
			t.Error("the loop did not end")
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, p := range r.procs {
			p.exit("test over")
		}
	})
	return r
}

func (r *rig) writeConfig(path, conf string) {
	r.t.Helper()
	if err := os.WriteFile(path, configBody(path, conf), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// configBody is the configuration file at path with conf, its root a
// folder beside it.
func configBody(path, conf string) []byte {
	root := filepath.Join(filepath.Dir(path), "root")
	os.MkdirAll(root, 0o755)
	return fmt.Appendf(nil, "root = %q\nlisten = [\"127.0.0.1:0\"]\n%s\n", root, conf)
}

// reconfigure rewrites the configuration file for the next reload.
func (r *rig) reconfigure(conf string) { r.writeConfig(r.s.opts.Source.Path, conf) }

// next sets the modes of the next processes started.
func (r *rig) next(plan ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.plan = append(r.plan, plan...)
}

func (r *rig) startProc(exe string, arg []string, extra []*os.File, cred *syscall.Credential) (process, error) {
	r.mu.Lock()
	mode := "ready"
	if len(r.plan) > 0 {
		mode, r.plan = r.plan[0], r.plan[1:]
	}
	r.mu.Unlock()
	if mode == "fail" {
		return nil, errors.New("fake: exec format error")
	}
	fd, err := unix.Dup(int(extra[0].Fd()))
	if err != nil {
		return nil, err
	}
	ch, err := fdpass.FileConn(fd, "fake worker")
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	p := &fakeProc{pid: 1000 + len(r.procs), mode: mode, ch: ch, exited: make(chan struct{}),
		configured: make(chan struct{}), gate: make(chan struct{}), gate2: make(chan struct{})}
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	go p.run()
	return p, nil
}

// proc is the i-th process started.
func (r *rig) proc(i int) *fakeProc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs[i]
}

// started is the number of processes started.
func (r *rig) started() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.procs)
}

// on runs f on the loop. f may fail the test: t.FailNow (Fatal) on the
// loop's goroutine ends that goroutine, so on then ends the test rather
// than wait for the loop forever.
func (r *rig) on(f func(s *Supervisor)) {
	r.t.Helper()
	done, ended := make(chan struct{}), make(chan struct{})
	returned := false
	call := func() {
		defer func() {
			if !returned {
				close(ended) // FailNow's runtime.Goexit, or a panic
			}
		}()
		f(r.s)
		returned = true
	}
	if !r.s.post(evCall{f: call, done: done}) {
		r.t.Fatalf("loop: %v", ctl.ErrExiting)
	}
	select {
	case <-done:
	case <-ended:
		r.t.FailNow()
	case <-r.s.finished:
		select {
		case <-done: // handled as the loop ended
		default:
			r.t.Fatalf("loop: %v", ctl.ErrExiting)
		}
	}
}

// until waits for cond, checked on the loop after each event the
// fakes' goroutines may still be sending.
func (r *rig) until(what string, cond func(s *Supervisor) bool) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ok bool
		r.on(func(s *Supervisor) { ok = cond(s) })
		if ok {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// advance moves the fake clock and waits until the loop has handled
// what the timers posted (or has ended because of it).
func (r *rig) advance(d time.Duration) {
	r.t.Helper()
	r.clock.advance(d)
	if err := r.s.call(context.Background(), func() {}); err != nil && !errors.Is(err, ctl.ErrExiting) {
		r.t.Fatalf("loop: %v", err)
	}
}

// exit waits for the loop to end and returns its result.
func (r *rig) exit() error {
	r.t.Helper()
	select {
	case err := <-r.result:
		r.result <- err // for the cleanup
		return err
	case <-time.After(5 * time.Second):
		r.t.Fatal("the loop did not end")
		return nil
	}
}

// reload asks for a reload as zctl does and returns its answer channel,
// once the reload has read its configuration (off the loop, reload.go)
// and gone on: to a new generation, or to its failure.
func (r *rig) reload(wait bool) <-chan string {
	r.t.Helper()
	out := r.reloadReading(wait)
	r.until("the reload's configuration read", func(s *Supervisor) bool { return s.reading == nil })
	return out
}

// reloadReading is reload without waiting for the read.
func (r *rig) reloadReading(wait bool) <-chan string {
	r.t.Helper()
	out := make(chan string, 1)
	done := make(chan struct{})
	reply := func(msg string, err error) {
		if err != nil {
			msg = "error: " + err.Error()
		}
		out <- msg
	}
	if err := r.s.request(context.Background(), evReload{wait: wait, reply: reply, done: done}, done); err != nil {
		r.t.Fatal(err)
	}
	return out
}

// answer waits for a reload's answer.
func (r *rig) answer(c <-chan string) string {
	r.t.Helper()
	select {
	case msg := <-c:
		return msg
	case <-time.After(5 * time.Second):
		r.t.Fatal("no answer")
		return ""
	}
}

// drain asks for a drain as zctl drain does.
func (r *rig) drain(timeout time.Duration) error {
	r.t.Helper()
	var err error
	done := make(chan struct{})
	if rerr := r.s.request(context.Background(), evDrain{timeout: timeout, why: "test", err: &err, done: done}, done); rerr != nil {
		r.t.Fatal(rerr)
	}
	return err
}

// serving waits until generation gen serves with all its workers ready.
func (r *rig) serving(gen int) {
	r.t.Helper()
	r.until(fmt.Sprintf("generation %d serving", gen), func(s *Supervisor) bool {
		return s.current != nil && s.current.id == gen && s.state == stateServing && s.current.allReady()
	})
}

// holdConnections makes each live worker hold n connections, as if
// handed over and not reported done.
func (r *rig) holdConnections(n int64) {
	r.on(func(s *Supervisor) {
		for _, g := range s.gens {
			for _, w := range g.workers() {
				w.active.Add(n)
				s.inflight.Add(n)
			}
		}
	})
}

// markGone marks w gone, as its channel reader does when the channel
// closes.
func markGone(w *workerProc) {
	w.gone = make(chan struct{})
	close(w.gone)
}
