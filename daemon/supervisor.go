// Package daemon is zfs-serve's process model: the supervisor (listeners,
// accept, handoff of each connection's fd to a worker process with
// SCM_RIGHTS, the pool's lifecycle, signals, sd_notify, the control
// socket) and the worker entry point (receive fds, serve them with package
// serve).
//
// One accepted connection's path: accept.go accepts it (accept4, no Go
// net.Conn), dispatch picks the least-loaded worker of the current
// generation and sends the fd down that worker's channel (fdpass), then
// closes its own copy; worker.go receives it and calls serve.ServeConn,
// which answers requests with sendfile; the worker reports the finished
// connection back up the channel (pool.go's readWorker).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// Options are what the command line decided.
type Options struct {
	Source  config.Source
	Config  *config.Config // already loaded from Source
	Version string
}

// ExitError carries the process exit status the supervisor wants.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is the process exit status.
func (e *ExitError) ExitCode() int { return e.Code }

// ExitDrainTimeout is the exit status when a drain ended with transfers
// cut off: drain_timeout expired, or a second SIGTERM/SIGINT escalated it
// to a kill.
const ExitDrainTimeout = 3

// env holds the operating-system functions the supervisor calls, so tests
// can observe them (tableflip's env.go).
type env struct {
	executable func() (string, error)
	notify     func(state string)
	// runTime is how long a process's threads have run or waited for a
	// CPU (health.go); nil: read /proc.
	runTime func(pid int) time.Duration
}

var osEnv = env{
	executable: os.Executable,
	notify:     sdNotify,
}

// notifyFailed makes a broken NOTIFY_SOCKET visible once, not per message.
var notifyFailed atomic.Bool

func sdNotify(state string) {
	// Never unset NOTIFY_SOCKET: later notifications would be lost.
	if _, err := daemon.SdNotify(false, state); err != nil && !notifyFailed.Swap(true) {
		slog.Error("sd_notify failed; systemd will not see readiness or status", "notify_socket", os.Getenv("NOTIFY_SOCKET"), "err", err)
	}
}

// Supervisor is the main process.
type Supervisor struct {
	opts    Options
	env     env
	log     *slog.Logger // set once: goroutines use it; a reload changes only level
	level   slog.LevelVar
	cfg     *config.Config
	started time.Time

	events   chan func()
	finished chan struct{} // closed when the loop has ended

	deathR, deathW *os.File

	listeners []*listener
	ctlSrv    *ctl.Server
	ctlSock   *ctl.Socket // the socket file we made, nil if systemd's
	ctlPath   string
	ctlOwned  bool // we created the socket file (not socket-activated)
	// ctlGroup is the control_group in force and ctlGID its gid (-1:
	// none), read by the control server's authoriser on every connection
	// and changed by a reload.
	ctlGroup string
	ctlGID   atomic.Int64

	// logFormat is the format of every process's log, fixed at start: a
	// reload that asks for another is told so, and its workers keep this
	// one, so the journal never mixes two.
	logFormat string

	gens    []*generation // every generation with live workers, oldest first
	current *generation
	pending *generation // a reload's new generation, not yet ready
	genSeq  int

	dispatch atomic.Pointer[[]*workerProc]
	inflight atomic.Int64
	maxConns atomic.Int64
	// perClient is max_connections_per_client (0: none); clients counts
	// the connections in flight of each client address (clients.go).
	perClient atomic.Int64
	clients   clientCounts
	httpOn    atomic.Bool // config http: whether refusals may speak HTTP
	connSeq   atomic.Uint64
	querySeq  atomic.Uint64

	state  string
	stateA atomic.Value // copy of state for goroutines off the loop
	// exitReason says why the daemon stopped with connections cut (a
	// kill, an escalated or timed-out drain); exitCode is the status to
	// exit with (0 for a kill on request).
	exitCode     int
	exitReason   string
	startupErr   error
	drainKill    *time.Timer
	drainAt      time.Time
	reloadWait   []reloadWaiter // waiting for the reload in progress
	followUp     []reloadWaiter // asked while one was in progress: reload again after it
	pendingTimer *time.Timer
	lastReload   string
	lastHealth   time.Time // the last checkHealth (health.go)

	metrics supMetrics // counters and listener for /metrics (metrics.go)
}

type reloadWaiter struct {
	wait  bool
	reply func(string, error)
}

// post runs f on the loop goroutine. After the loop has ended it does
// nothing and reports false.
func (s *Supervisor) post(f func()) bool {
	select {
	case s.events <- f:
		return true
	case <-s.finished:
		return false
	}
}

// call runs f on the loop and waits for it.
func (s *Supervisor) call(ctx context.Context, f func()) error {
	done := make(chan struct{})
	if !s.post(func() { f(); close(done) }) {
		return ctl.ErrExiting
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.finished:
		return ctl.ErrExiting
	}
}

func (s *Supervisor) setState(st string) {
	s.state = st
	s.stateA.Store(st)
	s.notifyStatus()
}

// Run is the supervisor's main: it returns when the daemon has exited.
func Run(ctx context.Context, opts Options) error {
	s := &Supervisor{
		opts:     opts,
		env:      osEnv,
		cfg:      opts.Config,
		started:  time.Now(),
		events:   make(chan func(), 64),
		finished: make(chan struct{}),
	}
	s.log = NewLogger(os.Stderr, s.cfg, &s.level).With("proc", "supervisor")
	s.logFormat = s.cfg.LogFormat
	s.maxConns.Store(int64(s.cfg.MaxConnections))
	s.perClient.Store(int64(s.cfg.MaxConnectionsPerClient))
	s.httpOn.Store(s.cfg.HTTP)
	s.dispatch.Store(&[]*workerProc{})
	s.setState(ctl.StateStarting)
	return s.run(ctx)
}

func (s *Supervisor) run(ctx context.Context) error {
	cloexecInherited()
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(sigs)

	var err error
	if s.deathR, s.deathW, err = os.Pipe(); err != nil {
		return fmt.Errorf("death pipe: %w", err)
	}
	defer s.deathW.Close()
	defer s.deathR.Close()

	activated, err := inheritedSockets(s.log)
	if err != nil {
		return err
	}
	if err := s.openListeners(activated); err != nil {
		return err
	}
	defer s.closeListeners()
	if err := s.openControl(activated); err != nil {
		return err
	}
	defer s.stopControl()
	if err := s.openMetrics(activated.metrics); err != nil {
		return err
	}
	defer s.closeMetrics()
	for _, f := range activated.unknown {
		s.log.Error("ignoring a socket-activated fd with an unknown name (want zfs, control or metrics)", "name", f.Name())
		f.Close()
	}
	s.log.Info("zfs-serve starting", "version", s.opts.Version, "pid", os.Getpid(), "config", s.opts.Source.String(),
		"root", s.cfg.Root, "workers", s.cfg.Workers, "zero_copy", s.cfg.ZeroCopy, "control", s.ctlPath)
	if os.Geteuid() == 0 && s.cfg.User == "" {
		s.log.Warn("running as root and workers too: set user= in the config to drop their privileges")
	}

	g := s.newGeneration(s.cfg)
	s.pending = g
	s.pendingTimer = time.AfterFunc(startTimeout, func() { s.post(func() { s.pendingTimeout(g) }) })
	for _, sl := range g.slots {
		if err := s.spawn(g, sl); err != nil {
			s.killAll("startup failed")
			return err
		}
	}
	s.reloadWait = append(s.reloadWait, reloadWaiter{reply: func(msg string, err error) {
		if err != nil && s.state == ctl.StateStarting {
			s.log.Error("startup failed", "err", err)
			s.startupErr = err
		}
	}})

	var watchdog <-chan time.Time
	if d, err := daemon.SdWatchdogEnabled(false); err == nil && d > 0 {
		t := time.NewTicker(d / 3)
		defer t.Stop()
		watchdog = t.C
		s.log.Info("systemd watchdog enabled", "interval", d)
	}
	statusTick := time.NewTicker(5 * time.Second)
	defer statusTick.Stop()
	healthTick := time.NewTicker(heartbeatInterval)
	defer healthTick.Stop()

	termSignals := 0
	for !s.done() {
		select {
		case f := <-s.events:
			f()
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				s.log.Info("SIGHUP: reloading")
				s.reload(false, func(_ string, err error) {
					if err != nil {
						s.log.Error("SIGHUP: not reloaded", "err", err)
					}
				})
			case syscall.SIGUSR1:
				s.log.Info("SIGUSR1: draining")
				s.drain(0, "SIGUSR1")
			default:
				termSignals++
				name := unixSignalName(sig.(syscall.Signal))
				if termSignals > 1 && s.state == ctl.StateDraining {
					s.log.Warn("second " + name + ": killing instead of draining")
					s.kill("second "+name, true)
				} else {
					s.log.Info(name + ": draining")
					s.drain(0, name)
				}
			}
		case <-watchdog:
			s.env.notify("WATCHDOG=1")
		case <-statusTick.C:
			s.notifyStatus()
		case now := <-healthTick.C:
			s.checkHealth(now)
		case <-ctx.Done():
			s.kill("context cancelled", false)
		}
	}
	s.stopControl()
	switch {
	case s.startupErr != nil:
		return s.startupErr
	case s.exitCode != 0:
		return &ExitError{Code: s.exitCode, Err: errors.New(s.exitReason)}
	case s.exitReason != "":
		// A kill on request: the operator asked for it, so not a failure
		// (systemd's Restart=on-failure must not undo it), but not clean.
		s.log.Warn("zfs-serve exited: " + s.exitReason)
		return nil
	}
	s.log.Info("zfs-serve exited cleanly: every transfer finished")
	return nil
}

// stopControl ends the loop for good and closes the control socket; it
// runs once, on every way out of run. Handlers waiting on the loop see
// finished and return "exiting".
func (s *Supervisor) stopControl() {
	select {
	case <-s.finished:
		return
	default:
	}
	close(s.finished)
	if s.ctlSrv != nil {
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.ctlSrv.Shutdown(shut)
		cancel()
	}
}

// startTimeout bounds how long a worker (and so a generation) may take to
// report ready. A variable only so tests can shorten it.
var startTimeout = 30 * time.Second

// done reports whether the loop should end: stopping or draining, with no
// worker left.
func (s *Supervisor) done() bool {
	if s.startupErr != nil {
		return s.liveWorkers() == 0
	}
	return (s.state == ctl.StateDraining || s.state == ctl.StateStopping) && s.liveWorkers() == 0
}

func (s *Supervisor) liveWorkers() int {
	n := 0
	for _, g := range s.gens {
		n += g.live()
	}
	return n
}

func (s *Supervisor) newGeneration(cfg *config.Config) *generation {
	s.genSeq++
	g := &generation{id: s.genSeq, cfg: cfg}
	for i := range cfg.Workers {
		g.slots = append(g.slots, &slot{index: i})
	}
	s.gens = append(s.gens, g)
	return g
}

// refreshDispatch publishes the workers new connections may go to: the
// ready, non-draining workers of the current generation.
func (s *Supervisor) refreshDispatch() {
	var ws []*workerProc
	if s.current != nil && !s.current.draining && (s.state == ctl.StateServing || s.state == ctl.StateReloading) {
		for _, sl := range s.current.slots {
			if sl.w != nil && sl.w.ready && !sl.w.draining && sl.w.beat.healthy() {
				ws = append(ws, sl.w)
			}
		}
		// A retiring worker serves until its replacement is ready.
		for _, w := range s.current.retired {
			if w.ready && !w.draining && !w.killed && w.beat.healthy() {
				ws = append(ws, w)
			}
		}
	}
	s.dispatch.Store(&ws)
}

func (s *Supervisor) onReady(w *workerProc) {
	w.ready = true
	w.startTimer.Stop()
	g := w.gen
	if w.draining {
		return // retired before it was ready; it has the drain message
	}
	if g == s.current {
		// A replacement in the serving generation: put it to work, and
		// drain the worker it replaces if that one retired.
		s.log.Info("worker ready", "pid", w.pid, "gen", g.id, "slot", w.slot.index)
		for _, r := range g.retired {
			if r.slot == w.slot && !r.draining && !r.killed && !r.beat.replaced {
				s.drainRetired(r)
			}
		}
		s.refreshDispatch()
		s.notifyStatus()
		return
	}
	if g == s.pending && g.allReady() {
		s.promote(g)
	}
}

// promote makes the pending generation the serving one and drains the old.
func (s *Supervisor) promote(g *generation) {
	s.pendingTimer.Stop()
	old := s.current
	s.pending, s.current = nil, g
	s.cfg = g.cfg
	s.maxConns.Store(int64(g.cfg.MaxConnections))
	s.perClient.Store(int64(g.cfg.MaxConnectionsPerClient))
	s.httpOn.Store(g.cfg.HTTP)
	setLevel(&s.level, g.cfg)
	s.applyControlGroup(g.cfg)
	first := old == nil
	s.setState(ctl.StateServing)
	s.refreshDispatch()
	if first {
		s.startAccepting()
		s.publishControl()
	} else {
		s.applyListenerChanges()
		s.applyMetrics()
		s.drainGeneration(old, g.cfg.DrainTimeout.D())
	}
	pids := make([]int, 0, len(g.slots))
	for _, sl := range g.slots {
		pids = append(pids, sl.w.pid)
	}
	msg := fmt.Sprintf("generation %d serving with %d workers", g.id, len(g.slots))
	s.log.Info(msg, "pids", pids, "listeners", s.listenerAddrs())
	if !first {
		s.lastReload = "ok: " + msg
		s.metrics.reloadsOK.Add(1)
	}
	s.env.notify("READY=1\nSTATUS=" + s.statusLine())
	waiters := s.reloadWait
	s.reloadWait = nil
	for _, rw := range waiters {
		if rw.wait && old != nil && old.live() > 0 {
			reply := rw.reply
			old.waiters = append(old.waiters, func(cut string) {
				if cut != "" {
					reply(msg+"; previous generation "+cut, nil)
					return
				}
				reply(msg+"; previous generation drained", nil)
			})
			continue
		}
		rw.reply(msg, nil)
	}
	s.startFollowUp()
}

// startFollowUp starts the reload asked for while another was in
// progress: that one read the configuration before the request came, so
// it may not have the change the requester made.
func (s *Supervisor) startFollowUp() {
	ws := s.followUp
	s.followUp = nil
	if len(ws) == 0 {
		return
	}
	if s.state != ctl.StateServing {
		// A drain or kill started meanwhile: nothing to reload into.
		for _, rw := range ws {
			rw.reply("", fmt.Errorf("cannot reload while %s", s.state))
		}
		return
	}
	s.log.Info("reloading again: asked while the previous reload was in progress", "requests", len(ws))
	s.startReload(ws)
}

// pendingTimeout gives up on a generation that did not become ready.
func (s *Supervisor) pendingTimeout(g *generation) {
	if s.pending != g {
		return
	}
	s.abortPending(fmt.Errorf("generation %d: workers not ready within %v", g.id, startTimeout))
}

// abortPending kills the pending generation and fails whoever waits on it.
func (s *Supervisor) abortPending(err error) {
	g := s.pending
	if g == nil {
		return
	}
	s.pending = nil
	s.pendingTimer.Stop()
	s.killGeneration(g, "aborted")
	g.draining = true
	if g.live() == 0 {
		s.retire(g) // e.g. the first spawn failed: no exit will retire it
	}
	if s.current != nil && s.state == ctl.StateReloading {
		s.lastReload = "failed: " + err.Error()
		s.metrics.reloadsFailed.Add(1)
		s.log.Error("reload failed; still serving the previous configuration", "err", err)
		s.setState(ctl.StateServing)
		s.env.notify("READY=1\nSTATUS=" + s.statusLine())
	}
	s.closeNewListeners()
	s.abortMetrics()
	waiters := s.reloadWait
	s.reloadWait = nil
	for _, rw := range waiters {
		rw.reply("", err)
	}
	s.startFollowUp()
}

// onExit handles w's exit; cut is the connections it still held (handed
// over and not reported done), which went down with it.
func (s *Supervisor) onExit(w *workerProc, ps *os.ProcessState, werr error, cut int64) {
	g, sl := w.gen, w.slot
	how := exitString(ps, werr)
	if w.fatal != "" {
		how += ": " + w.fatal
	}
	w.startTimer.Stop()
	if w.killer != nil {
		w.killer.Stop()
	}
	if sl.w == w {
		sl.w = nil
	}
	for i, r := range g.retired {
		if r == w {
			g.retired = append(g.retired[:i], g.retired[i+1:]...)
			break
		}
	}
	s.refreshDispatch()
	expected := w.killed || w.draining || g.draining || s.state == ctl.StateDraining || s.state == ctl.StateStopping
	lvl := slog.LevelInfo
	if !expected {
		lvl = slog.LevelError
	}
	s.log.Log(context.Background(), lvl, "worker exited", "pid", w.pid, "gen", g.id, "slot", sl.index,
		"status", how, "uptime", time.Since(w.started).Round(time.Millisecond), "expected", expected, "connections_cut", cut)

	switch {
	case g == s.pending && !expected:
		s.abortPending(fmt.Errorf("worker %d of generation %d failed to start: %s", w.pid, g.id, how))
	case g == s.current && !expected && sl.w == nil:
		sl.restarts++
		s.metrics.restarts.Add(1)
		sl.lastExit = how
		s.scheduleRespawn(g, sl, time.Since(w.started))
	}
	if g.live() == 0 && g != s.current && g != s.pending {
		s.retire(g)
	}
	s.notifyStatus()
}

// retire forgets a generation whose workers are all gone.
func (s *Supervisor) retire(g *generation) {
	for i, x := range s.gens {
		if x == g {
			s.gens = append(s.gens[:i], s.gens[i+1:]...)
			break
		}
	}
	if g.killer != nil {
		g.killer.Stop()
	}
	if g.id > 0 && g.cfg != nil && len(g.slots) > 0 && g != s.current {
		s.log.Info("generation retired", "gen", g.id)
	}
	for _, f := range g.waiters {
		f(g.cut)
	}
	g.waiters = nil
}

// onRetire handles a worker's request to be replaced (it got SIGTERM): a
// replacement starts in its slot, and the worker keeps serving until that
// one is ready, then drains (its connections finish, no new ones come).
// If the replacement cannot start, the old worker goes on serving.
func (s *Supervisor) onRetire(w *workerProc) {
	g, sl := w.gen, w.slot
	if w.draining || w.killed || sl.w != w {
		return
	}
	s.log.Info("worker got SIGTERM: starting a replacement, then draining it", "pid", w.pid, "gen", g.id, "slot", sl.index,
		"connections", w.active.Load())
	sl.w = nil
	g.retired = append(g.retired, w)
	serving := g == s.current && !g.draining && s.state != ctl.StateDraining && s.state != ctl.StateStopping
	if !serving || !w.ready {
		// It takes no connections anyway: nothing to hand over.
		s.drainRetired(w)
		s.refreshDispatch()
	}
	if !serving && g != s.pending {
		return // an old or stopping generation: no replacement
	}
	if err := s.spawn(g, sl); err != nil {
		sl.lastExit = "respawn failed: " + err.Error()
		s.log.Error("respawn failed", "gen", g.id, "slot", sl.index, "err", err)
		s.scheduleRespawn(g, sl, 0)
	}
}

// drainRetired drains a retired worker, bounded by its generation's
// drain_timeout: past it, the worker is killed and the log says what that
// cut.
func (s *Supervisor) drainRetired(w *workerProc) {
	s.sendDrain(w)
	timeout := w.gen.cfg.DrainTimeout.D()
	if timeout <= 0 {
		return
	}
	w.killer = time.AfterFunc(timeout, func() {
		s.post(func() {
			if w.killed || w.dead() {
				return
			}
			s.log.Error("drain timeout: killing a retired worker", "pid", w.pid, "gen", w.gen.id, "timeout", timeout,
				"connections_cut", w.active.Load())
			w.killed = true
			w.cmd.Process.Kill()
		})
	})
}

// sendDrain sends msgDrain to w. The channel is never blocked for long,
// but if it is full right now the message goes from a goroutine that
// waits for room: a drain must not be lost, nor the worker killed for it.
func (s *Supervisor) sendDrain(w *workerProc) {
	w.draining = true
	err := fdpass.TrySend(w.ch, []byte{msgDrain})
	if errors.Is(err, unix.EAGAIN) {
		go func() {
			if err := fdpass.Send(w.ch, []byte{msgDrain}); err != nil && !w.dead() {
				s.log.Error("send drain to worker", "pid", w.pid, "err", err)
			}
		}()
		return
	}
	if err != nil && !w.dead() {
		s.log.Error("send drain to worker; killing it", "pid", w.pid, "err", err)
		w.killed = true
		w.cmd.Process.Kill()
	}
}

// Respawn backoff: a worker that lived at least healthyAfter is replaced at
// once; one that keeps dying young waits twice as long each time, up to
// maxBackoff, so a crash loop costs little CPU and is visible in status.
const (
	healthyAfter = 10 * time.Second
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 10 * time.Second
)

func (s *Supervisor) scheduleRespawn(g *generation, sl *slot, lived time.Duration) {
	if lived >= healthyAfter {
		sl.backoff = 0
	} else {
		sl.backoff = min(max(2*sl.backoff, minBackoff), maxBackoff)
	}
	sl.nextStart = time.Now().Add(sl.backoff)
	s.log.Info("replacing worker", "gen", g.id, "slot", sl.index, "in", sl.backoff, "restarts", sl.restarts)
	sl.timer = time.AfterFunc(sl.backoff, func() {
		s.post(func() {
			sl.timer = nil
			if g != s.current || g.draining || sl.w != nil || s.state == ctl.StateDraining || s.state == ctl.StateStopping {
				return
			}
			if err := s.spawn(g, sl); err != nil {
				sl.lastExit = "respawn failed: " + err.Error()
				s.log.Error("respawn failed", "gen", g.id, "slot", sl.index, "err", err)
				s.scheduleRespawn(g, sl, 0)
			}
		})
	})
}

// drainGeneration sends msgDrain to every worker of g and, if timeout > 0,
// arms a timer that kills what is left of g after it.
func (s *Supervisor) drainGeneration(g *generation, timeout time.Duration) {
	g.draining = true
	for _, sl := range g.slots {
		sl.stopRespawn()
	}
	for _, w := range g.workers() {
		if !w.draining && !w.killed {
			s.sendDrain(w)
		}
	}
	if g.live() == 0 {
		s.retire(g)
		return
	}
	if timeout <= 0 {
		return
	}
	s.log.Info("draining generation", "gen", g.id, "workers", g.live(), "deadline", time.Now().Add(timeout).Format(time.RFC3339))
	g.killer = time.AfterFunc(timeout, func() {
		s.post(func() {
			if g.live() == 0 {
				return
			}
			why := fmt.Sprintf("killed at drain_timeout (%v)", timeout)
			s.log.Error("drain timeout: killing the generation's remaining workers", "gen", g.id, "timeout", timeout,
				"workers", g.live(), "connections_cut", g.inflight())
			s.killGeneration(g, why)
		})
	})
}

// inflight is the connections g's workers hold.
func (g *generation) inflight() int {
	n := 0
	for _, w := range g.workers() {
		n += int(w.active.Load())
	}
	return n
}

// killGeneration kills g's workers and records, for whoever waits on g,
// what that cut.
func (s *Supervisor) killGeneration(g *generation, why string) {
	for _, sl := range g.slots {
		sl.stopRespawn()
	}
	if n := g.inflight(); n > 0 && g.cut == "" {
		g.cut = fmt.Sprintf("%s with %s in flight", why, plural(n, "connection"))
	}
	for _, w := range g.workers() {
		w.killed = true
		w.cmd.Process.Kill()
	}
}

// drain is the graceful exit: answer new connections "draining", drain
// every generation, exit when the last worker is gone (or kill the rest
// at the deadline).
func (s *Supervisor) drain(timeout time.Duration, why string) error {
	switch s.state {
	case ctl.StateDraining:
		if timeout <= 0 {
			return nil // a second SIGUSR1, or zctl drain without --timeout
		}
		at := time.Now().Add(timeout)
		if !at.Before(s.drainAt) {
			// Not an error: a stop script that runs twice, or a
			// drain --wait that only wants to watch, gets the drain in
			// force (and --wait its progress).
			s.log.Info("already draining: keeping the earlier deadline", "why", why, "timeout", timeout,
				"deadline_in", time.Until(s.drainAt).Round(time.Second))
			return nil
		}
		// An operator may shorten a drain that takes too long (e.g. a
		// systemctl stop), never lengthen it past what was promised.
		s.log.Info("drain deadline moved earlier", "why", why, "timeout", timeout)
		s.drainKill.Stop()
		s.armDrainKill(at, timeout)
		return nil
	case ctl.StateStopping:
		return errors.New("already stopping")
	}
	if timeout <= 0 {
		timeout = s.cfg.DrainTimeout.D()
	}
	s.setState(ctl.StateDraining)
	s.abortPending(errors.New("a drain started"))
	s.env.notify("STOPPING=1\nSTATUS=" + s.statusLine())
	// The listeners stay open until the exit: new connections get
	// "draining" (a refusal clients retry, not "connection refused"), or
	// go to a new instance that takes the port over (takeover.go).
	s.refreshDispatch()
	s.steerListeners()
	s.drainAt = time.Now().Add(timeout)
	s.log.Info("draining: no new connections; waiting for transfers in flight", "why", why,
		"in_flight", s.inflight.Load(), "timeout", timeout)
	// One deadline for everyone: the drain's own timer replaces those of
	// generations that were already draining after a reload.
	for _, g := range append([]*generation(nil), s.gens...) {
		if g.killer != nil {
			g.killer.Stop()
		}
		for _, w := range g.retired {
			if w.killer != nil {
				w.killer.Stop()
			}
		}
		s.drainGeneration(g, 0)
	}
	s.armDrainKill(s.drainAt, timeout)
	return nil
}

// armDrainKill sets the drain's deadline: at it, the workers still
// draining are killed and the exit status says what that cut. timeout is
// how it was asked for, for the log.
func (s *Supervisor) armDrainKill(at time.Time, timeout time.Duration) {
	s.drainAt = at
	s.drainKill = time.AfterFunc(time.Until(at), func() {
		s.post(func() {
			if s.liveWorkers() == 0 || s.state != ctl.StateDraining {
				return
			}
			n := int(s.inflight.Load())
			msg := fmt.Sprintf("drain timeout (%v) expired: killed %s with %s in flight", timeout, plural(s.liveWorkers(), "worker"), plural(n, "connection"))
			if n > 0 && s.exitReason == "" {
				s.exitCode = ExitDrainTimeout
				s.exitReason = msg
			}
			s.log.Error(msg)
			s.killAll(fmt.Sprintf("killed at drain_timeout (%v)", timeout))
		})
	})
}

// kill is the immediate exit. escalated is true for a second SIGTERM or
// SIGINT during a drain: transfers it cuts make the exit status say so,
// as a drain timeout does. A kill on request (zctl kill) exits 0.
func (s *Supervisor) kill(why string, escalated bool) {
	if s.state == ctl.StateStopping {
		return
	}
	s.setState(ctl.StateStopping)
	s.abortPending(errors.New("killed"))
	s.env.notify("STOPPING=1\nSTATUS=" + s.statusLine())
	s.refreshDispatch()
	s.steerListeners()
	n := s.inflight.Load()
	s.log.Warn("killing all workers", "why", why, "workers", s.liveWorkers(), "connections_cut", n)
	switch {
	case s.exitReason != "":
		// A drain timeout got there first; its reason stands.
	case n > 0:
		s.exitReason = fmt.Sprintf("killed (%s) with %s in flight", why, plural(int(n), "connection"))
		if escalated {
			s.exitCode = ExitDrainTimeout
		}
	default:
		s.exitReason = fmt.Sprintf("killed (%s) with no connection in flight", why)
	}
	s.killAll("killed (" + why + ")")
}

func (s *Supervisor) killAll(why string) {
	for _, g := range s.gens {
		s.killGeneration(g, why)
	}
}

// cloexecInherited marks every descriptor from 3 up close-on-exec. The
// supervisor's own are already; what it inherited may not be (a lock file
// or a pipe of the shell that started it), and without this every worker
// would hold them too, past the supervisor's life. Workers get exactly the
// descriptors they are given. Sockets systemd passed are taken by then or
// are close-on-exec already (activation.Files).
func cloexecInherited() {
	if unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	// Before Linux 5.11: one by one.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}
