package e2e

// systemd's side of the daemon without systemd as PID 1: socket activation
// through systemd-socket-activate (sockets picked by LISTEN_FDNAMES, never
// by position) and sd_notify through a fake NOTIFY_SOCKET that records
// every message, with the sender's pid, in order. e2e/nspawn_test.go does
// the same against a real systemd.

import (
	"encoding/json"
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

// FDNames joins socket names as systemd-socket-activate's --fdname wants.
func FDNames(names ...string) string { return strings.Join(names, ":") }

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
