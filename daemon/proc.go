package daemon

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// process is a started worker process, as the supervisor sees it
// (tableflip's env.newProc -> process): production starts the binary,
// tests start fakes that speak the channel protocol.
type process interface {
	Pid() int
	Signal(sig os.Signal) error
	// Wait waits for the process to exit and says how it ended, for logs
	// and status ("exit status 1", "killed by signal SIGKILL").
	Wait() string
}

// startProc starts exe with arg. extra become its descriptors 3, 4, ...;
// cred (may be nil) is the identity it runs as.
type startProc func(exe string, arg []string, extra []*os.File, cred *syscall.Credential) (process, error)

// osProc is a process started by the operating system.
type osProc struct{ cmd *exec.Cmd }

func startOSProc(exe string, arg []string, extra []*os.File, cred *syscall.Credential) (process, error) {
	cmd := exec.Command(exe, arg...)
	cmd.Env = workerEnv()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = extra
	// Own process group: a Ctrl-C on the terminal reaches the supervisor,
	// which then drains the workers, rather than killing them all at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return osProc{cmd}, nil
}

func (p osProc) Pid() int                   { return p.cmd.Process.Pid }
func (p osProc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

func (p osProc) Wait() string {
	err := p.cmd.Wait()
	return exitString(p.cmd.ProcessState, err)
}

// kill sends SIGKILL to p.
func kill(p process) { p.Signal(syscall.SIGKILL) }

// exitString describes how a process ended, for logs and status.
func exitString(ps *os.ProcessState, err error) string {
	if ps == nil {
		if err != nil {
			return err.Error()
		}
		return "unknown"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by signal " + unixSignalName(ws.Signal())
	}
	return fmt.Sprintf("exit status %d", ps.ExitCode())
}

func unixSignalName(sig syscall.Signal) string {
	names := map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM", syscall.SIGSEGV: "SIGSEGV",
		syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS", syscall.SIGPIPE: "SIGPIPE", syscall.SIGINT: "SIGINT"}
	if n, ok := names[sig]; ok {
		return n
	}
	return sig.String()
}

// workerProc is the supervisor's handle on one worker process. Fields
// marked (loop) are owned by the supervisor's loop goroutine; the atomics
// are touched by accept and channel-reader goroutines.
type workerProc struct {
	gen     *generation
	slot    *slot
	pid     int
	proc    process
	ch      *net.UnixConn
	started time.Time

	ready      bool // (loop) reported ready
	draining   bool // (loop) sent msgDrain
	killed     bool // (loop) we sent SIGKILL
	fatal      string
	startTimer *loopTimer // (loop) kills a worker that never reports ready
	killer     *loopTimer // (loop) a retired worker's drain deadline
	beat       heartbeat  // (loop) see health.go

	// sendMu orders handoffs against the worker's end: once gone is
	// closed (its channel read EOF and its count was written off), no
	// handoff adds to active, so the counts cannot drift. It also guards
	// clients and the check of active against capacity.
	sendMu  sync.Mutex
	gone    chan struct{}     // closed, under sendMu, when the worker is gone (isGone)
	clients map[uint64]string // connection id -> client key, for those counted per client
	handoff *fdpass.Sender    // (sendMu) ch's sender for handoffs, made at the first

	active   atomic.Int64                // connections handed over and not reported done
	capacity atomic.Int64                // connections its descriptors have room for; 0: no bound (fdcap.go)
	conns    atomic.Uint64               // connections reported done
	bytes    atomic.Uint64               // body bytes of connections reported done
	accCount atomic.Pointer[acceptCount] // accept mode hook (acceptcount.go): its shared count of accepts

	mu      sync.Mutex
	queries map[uint64]chan []byte // status and digest requests waiting for an answer, by id
}

// spawn starts a worker for sl from the binary on disk now (so a reload
// after a package upgrade runs the new binary) and sends its configuration.
func (s *Supervisor) spawn(g *generation, sl *slot) error {
	exe, err := s.env.executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	cred, err := credential(g.cfg)
	if err != nil {
		return err
	}
	local, remote, err := fdpass.Socketpair()
	if err != nil {
		return err
	}
	remoteF := os.NewFile(uintptr(remote), "channel")
	defer remoteF.Close()
	// extra[i] becomes fd 3+i: channelFD, deathFD, accessLogFD.
	extra := []*os.File{remoteF, s.deathR}
	if g.access != nil {
		extra = append(extra, g.access)
	}
	var p process
	err = s.startWorker(func() (err error) {
		p, err = s.env.startProc(exe, []string{WorkerCommand}, extra, cred)
		return err
	})
	if err != nil {
		local.Close()
		return fmt.Errorf("start worker: %w", err)
	}
	w := &workerProc{gen: g, slot: sl, pid: p.Pid(), proc: p, ch: local, started: s.env.clock.Now(), queries: map[uint64]chan []byte{}, gone: make(chan struct{})}
	sl.w = w
	sl.nextStart = time.Time{}
	limit := startTimeout
	w.startTimer = s.after(limit, evStartTimeout{w, limit})
	if err := fdpass.Send(local, appendConfig(nil, workerConfig{Version: channelVersion, Generation: g.id, Slot: sl.index, Config: g.cfg})); err != nil {
		// The reader sees EOF and reports the exit; nothing else to do here.
		s.log.Error("send configuration to worker", "pid", w.pid, "err", err)
	}
	s.log.Info("worker started", "pid", w.pid, "gen", g.id, "slot", sl.index, "exe", exe)
	go s.readWorker(w)
	return nil
}

// isGone reports whether w's channel has closed: the worker exited or is
// about to, and what it held was written off.
func (w *workerProc) isGone() bool {
	select {
	case <-w.gone:
		return true
	default:
		return false
	}
}

// workerEnv is the supervisor's environment without what only the
// supervisor may hold (systemd's variables), plus the cookie.
func workerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		denied := false
		for _, d := range envDenied {
			if k == d {
				denied = true
			}
		}
		if !denied {
			env = append(env, kv)
		}
	}
	return append(env, CookieKey+"="+CookieValue)
}

// credential returns the identity workers run as: the configured user and
// group when the supervisor is root, else nil (workers run as we do).
func credential(c *config.Config) (*syscall.Credential, error) {
	if os.Geteuid() != 0 || (c.User == "" && c.Group == "") {
		return nil, nil
	}
	cred := &syscall.Credential{Groups: []uint32{}}
	if c.User != "" {
		u, err := config.LookupUser(c.User)
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", c.User, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred.Uid, cred.Gid = uint32(uid), uint32(gid)
	}
	if c.Group != "" {
		gid, err := config.LookupGroup(c.Group)
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", c.Group, err)
		}
		cred.Gid = uint32(gid)
	}
	return cred, nil
}
