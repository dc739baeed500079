package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// A generation is a set of workers started with one configuration. A
// reload starts a new generation and drains the old one.
type generation struct {
	id       int
	cfg      *config.Config
	slots    []*slot
	retired  []*workerProc // replaced after a SIGTERM, draining, out of their slots
	draining bool
	killer   *loopTimer         // kills what is left of a draining generation at drain_timeout
	cut      string             // set when workers were killed with connections in flight
	waiters  []func(cut string) // run when the generation's last worker has exited
}

// A slot is a position in a generation's pool; its worker is replaced
// when it dies, and the slot keeps the history.
type slot struct {
	index     int
	w         *workerProc // nil while waiting to respawn
	restarts  int
	lastExit  string
	backoff   time.Duration
	nextStart time.Time
	timer     *loopTimer
}

// workers returns g's live workers: those in slots and the retired ones.
func (g *generation) workers() []*workerProc {
	ws := append([]*workerProc(nil), g.retired...)
	for _, sl := range g.slots {
		if sl.w != nil {
			ws = append(ws, sl.w)
		}
	}
	return ws
}

// live counts g's workers without building the list: the loop asks after
// every event whether any is left.
func (g *generation) live() int {
	n := len(g.retired)
	for _, sl := range g.slots {
		if sl.w != nil {
			n++
		}
	}
	return n
}

// stopRespawn cancels a pending replacement of sl's worker.
func (sl *slot) stopRespawn() {
	sl.timer.stop()
	sl.timer = nil
	sl.nextStart = time.Time{}
}

func (g *generation) allReady() bool {
	for _, sl := range g.slots {
		if sl.w == nil || !sl.w.ready {
			return false
		}
	}
	return true
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

	// sendMu orders handoffs against the worker's death: once dead is set
	// (its channel read EOF and its count was written off), no handoff
	// adds to active, so the counts cannot drift. It also guards clients
	// and the check of active against capacity.
	sendMu  sync.Mutex
	isDead  bool
	clients map[uint64]string // connection id -> client key, for those counted per client

	active   atomic.Int64  // connections handed over and not reported done
	capacity atomic.Int64  // connections its descriptors have room for; 0: no bound (fdcap.go)
	conns    atomic.Uint64 // connections reported done
	bytes    atomic.Uint64 // body bytes of connections reported done

	mu      sync.Mutex
	pending map[uint64]chan []byte // status requests waiting for an answer
	gone    chan struct{}          // closed when the channel has closed
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
	// extra[i] becomes fd 3+i: channelFD, deathFD.
	p, err := s.env.startProc(exe, []string{WorkerCommand}, []*os.File{remoteF, s.deathR}, cred)
	if err != nil {
		local.Close()
		return fmt.Errorf("start worker: %w", err)
	}
	w := &workerProc{gen: g, slot: sl, pid: p.Pid(), proc: p, ch: local, started: s.env.clock.Now(), pending: map[uint64]chan []byte{}, gone: make(chan struct{})}
	sl.w = w
	sl.nextStart = time.Time{}
	limit := startTimeout
	w.startTimer = s.after(limit, evStartTimeout{w, limit})
	b, _ := json.Marshal(workerConfig{Version: channelVersion, Generation: g.id, Slot: sl.index, Config: g.cfg})
	if err := fdpass.Send(local, append([]byte{msgConfig}, b...)); err != nil {
		// The reader sees EOF and reports the exit; nothing else to do here.
		s.log.Error("send configuration to worker", "pid", w.pid, "err", err)
	}
	s.log.Info("worker started", "pid", w.pid, "gen", g.id, "slot", sl.index, "exe", exe)
	go s.readWorker(w)
	return nil
}

// readWorker reads a worker's channel until it closes, then reaps the
// process and reports the exit to the loop. When the worker dies the read
// returns EOF once; this goroutine then ends, so a dead worker's channel
// can never make the supervisor spin.
func (s *Supervisor) readWorker(w *workerProc) {
	buf := make([]byte, maxMsg)
	oob := make([]byte, 64)
	for {
		n, fds, err := fdpass.Recv(w.ch, buf, oob)
		closeFDs(fds) // workers never send fds
		if err != nil {
			if errors.Is(err, fdpass.ErrTruncated) || errors.Is(err, fdpass.ErrTooLong) {
				// The channel stays in step (one message per read): drop
				// this one, keep the worker.
				s.log.Error("bad message from worker; ignored", "pid", w.pid, "err", err)
				continue
			}
			if errors.Is(err, unix.ECONNRESET) {
				break // it exited with messages unread: an ordinary end
			}
			s.log.Error("worker channel failed; killing the worker", "pid", w.pid, "err", err)
			kill(w.proc)
			break
		}
		if n == 0 {
			break
		}
		p := buf[1:n]
		switch buf[0] {
		case msgReady:
			// Before onReady puts it in dispatch.
			if c, err := parseU32(p); err == nil {
				w.capacity.Store(int64(max(c, 1)))
			}
			s.post(evReady{w})
		case msgPong:
			if seq, _, err := parseID(p); err == nil {
				s.post(evPong{w, seq})
			}
		case msgFDShort:
			if held, err := parseU32(p); err == nil {
				s.lowerCapacity(w, int64(held))
			}
		case msgFatal:
			s.post(evFatal{w, string(p)})
		case msgRetire:
			s.post(evRetire{w})
		case msgAdmit:
			s.admit(w, p)
		case msgDone:
			ds, err := parseDone(p)
			if err != nil {
				s.log.Error("bad message from worker", "pid", w.pid, "err", err)
				continue
			}
			var bytes uint64
			for _, d := range ds {
				bytes += d.bytes
			}
			s.releaseClients(w, ds)
			w.active.Add(-int64(len(ds)))
			s.inflight.Add(-int64(len(ds)))
			w.conns.Add(uint64(len(ds)))
			w.bytes.Add(bytes)
		case msgStatus, msgDigest:
			id, rest, err := parseID(p)
			if err != nil {
				continue
			}
			w.mu.Lock()
			c := w.pending[id]
			delete(w.pending, id)
			w.mu.Unlock()
			if c != nil {
				c <- append([]byte(nil), rest...)
			} else if id == finalStatusID {
				s.metrics.tally.final(w, rest)
			}
		default:
			s.log.Error("unknown message from worker", "pid", w.pid, "type", buf[0])
		}
	}
	// What it still had is gone with it; after this no handoff counts
	// against it (sendTo checks dead under the same lock).
	w.sendMu.Lock()
	w.isDead = true
	n := w.active.Swap(0)
	clients := w.clients
	w.clients = nil
	w.sendMu.Unlock()
	s.inflight.Add(-n)
	for _, key := range clients {
		s.clients.release(key)
	}
	s.metrics.tally.retire(w)
	close(w.gone)
	w.ch.Close()
	how := w.proc.Wait()
	s.post(evExit{w, how, n})
}

// startTimedOut kills a worker that did not report ready within limit.
func (s *Supervisor) startTimedOut(w *workerProc, limit time.Duration) {
	if !w.ready && !w.killed && !w.dead() {
		w.fatal = fmt.Sprintf("not ready within %v", limit)
		s.log.Error("worker did not report ready; killing it", "pid", w.pid, "gen", w.gen.id, "slot", w.slot.index, "timeout", limit)
		kill(w.proc)
	}
}

// releaseClients ends the per-client count of connections w reported done.
func (s *Supervisor) releaseClients(w *workerProc, ds []doneMeta) {
	w.sendMu.Lock()
	if len(w.clients) == 0 {
		w.sendMu.Unlock()
		return
	}
	var keys []string
	for _, d := range ds {
		if key, ok := w.clients[d.id]; ok {
			delete(w.clients, d.id)
			keys = append(keys, key)
		}
	}
	w.sendMu.Unlock()
	for _, key := range keys {
		s.clients.release(key)
	}
}

// lowerCapacity takes w's word that it ran out of descriptors holding
// held connections: it gets no more than that from now on.
func (s *Supervisor) lowerCapacity(w *workerProc, held int64) {
	held = max(held, 1)
	for {
		c := w.capacity.Load()
		if c != 0 && c <= held {
			return
		}
		if w.capacity.CompareAndSwap(c, held) {
			s.log.Warn("worker ran out of file descriptors: it gets no more connections than it holds now", "pid", w.pid,
				"capacity", held, "was", c)
			return
		}
	}
}

func (w *workerProc) dead() bool {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.isDead
}

// query asks a worker for its status, waiting at most d. flags (at most
// one byte, e.g. statusCounters) say what to leave out.
func (w *workerProc) query(id uint64, d time.Duration, flags ...byte) (*workerStatus, error) {
	c := make(chan []byte, 1)
	w.mu.Lock()
	w.pending[id] = c
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.pending, id)
		w.mu.Unlock()
	}()
	if err := fdpass.TrySend(w.ch, append(appendID(nil, msgStatusReq, id), flags...)); err != nil {
		return nil, err
	}
	select {
	case b := <-c:
		var st workerStatus
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, err
		}
		return &st, nil
	case <-w.gone:
		return nil, fmt.Errorf("worker %d exited", w.pid)
	case <-time.After(d):
		return nil, fmt.Errorf("worker %d did not answer within %v", w.pid, d)
	}
}
