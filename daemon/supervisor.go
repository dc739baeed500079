// Package daemon is zfs-serve's process model: the supervisor (listeners,
// accept, handoff of each connection's fd to a worker process with
// SCM_RIGHTS, the pool's lifecycle, signals, sd_notify, the control
// socket) and the worker entry point (receive fds, serve them with package
// serve).
//
// One accepted connection's path: accept.go accepts it (accept4, no Go
// net.Conn), dispatch picks the least-loaded worker of the current
// generation and sends the fd down that worker's channel (fdpass), then
// closes its own copy; worker.go receives it and calls serve.Server.Run,
// which answers requests with sendfile; the worker reports the finished
// connection back up the channel (reader.go's readWorker). The
// supervisor's loop (supervisor.go, events.go) owns the lifecycle:
// generations (generation.go), slots (slot.go), reloads (reload.go) and
// the exits (exit.go).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
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
	"github.com/zfs-serve/zfs-serve/internal/ratelog"
	"github.com/zfs-serve/zfs-serve/internal/sched"
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
	runTime   func(pid int) time.Duration
	startProc startProc // starts a worker process (proc.go)
	clock     clock     // time and timers (clock.go)
	// setSched sets the supervisor's scheduling policy (sched.go); nil:
	// leave it.
	setSched func(policy int) error
}

var osEnv = env{
	executable: os.Executable,
	notify:     sdNotify,
	startProc:  startOSProc,
	clock:      systemClock{},
	setSched:   sched.SetProcess,
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
	sched   schedState   // the supervisor's scheduling policy (sched.go)
	log     *slog.Logger // set once: goroutines use it; a reload changes only level
	level   slog.LevelVar
	cfg     *config.Config
	started time.Time

	events   chan event    // handled by the loop, in order (events.go)
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
	next    *generation // a reload's (or the start's) new generation, not yet ready
	genSeq  int

	// afterBatch, if set (tests), runs in an accept loop after each
	// batch is handed off, before it waits for the next.
	afterBatch func()

	dispatch atomic.Pointer[[]*workerProc]
	inflight atomic.Int64
	maxConns atomic.Int64
	// perClient is max_connections_per_client (0: none); clients counts
	// the connections in flight of each client address (clients.go).
	perClient atomic.Int64
	clients   clientCounts
	httpOn    atomic.Bool // config http: whether refusals may speak HTTP
	// trusted is proxy_trusted, parsed: the networks a proxy listener
	// accepts connections from (empty: any); untrustedLog limits the log
	// of the others.
	trusted      atomic.Pointer[[]netip.Prefix]
	untrustedLog ratelog.Limiter
	connSeq      atomic.Uint64
	querySeq     atomic.Uint64

	state    supState
	stateNow atomic.Int32 // copy of state for goroutines off the loop (loadState)
	// exitReason says why the daemon stopped with connections cut (a
	// kill, an escalated or timed-out drain); exitCode is the status to
	// exit with (0 for a kill on request).
	exitCode   int
	exitReason string
	startupErr error
	drainKill  *loopTimer
	drainAt    time.Time
	reloadWait []reloadWaiter // waiting for the reload in progress
	reading    *reloadRead    // the reload in progress reads its configuration (reload.go)
	readSeq    uint64         // the last reload's read
	readsOut   int            // reload reads not returned yet, a timed-out one's too
	followUp   []reloadWaiter // asked while one was in progress: reload again after it
	nextTimer  *loopTimer
	lastReload string
	lastHealth time.Time // the last checkHealth (health.go)

	metrics supMetrics // counters and listener for /metrics (metrics.go)

	am acceptMode // accept mode hook (acceptmode.go)
}

// Run is the supervisor's main: it returns when the daemon has exited.
func Run(ctx context.Context, opts Options) error {
	s := newSupervisor(opts, osEnv)
	lb := newLogWriter(func() *slog.Logger { return s.log })
	defer lb.Close(logFlushTimeout)
	s.log = NewLogger(lb, s.cfg, &s.level).With("proc", "supervisor")
	s.setState(stateStarting)
	return s.run(ctx)
}

// newSupervisor is a Supervisor with opts's configuration in force and no
// log yet.
func newSupervisor(opts Options, e env) *Supervisor {
	s := &Supervisor{
		opts:     opts,
		env:      e,
		cfg:      opts.Config,
		started:  e.clock.Now(),
		events:   make(chan event, 64),
		finished: make(chan struct{}),
	}
	s.logFormat = s.cfg.LogFormat
	s.maxConns.Store(int64(s.cfg.MaxConnections))
	s.perClient.Store(int64(s.cfg.MaxConnectionsPerClient))
	s.httpOn.Store(s.cfg.HTTP)
	s.setTrusted(s.cfg)
	s.dispatch.Store(&[]*workerProc{})
	return s
}

func (s *Supervisor) run(ctx context.Context) error {
	cloexecInherited()
	s.initSched()
	signal.Ignore(syscall.SIGPIPE)
	sigs, stopSignals := notifySignals()
	defer stopSignals()

	var err error
	if s.deathR, s.deathW, err = os.Pipe(); err != nil {
		return fmt.Errorf("death pipe: %w", err)
	}
	defer s.deathW.Close()
	defer s.deathR.Close()

	activated := inheritedSockets(s.log)
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
		s.log.Error("ignoring a socket-activated fd with an unknown name (want zfs, proxy..., control or metrics)", "name", f.Name())
		f.Close()
	}
	s.log.Info("zfs-serve starting", "version", s.opts.Version, "pid", os.Getpid(), "config", s.opts.Source.String(),
		"root", s.cfg.Root, "workers", s.cfg.Workers, "zero_copy", s.cfg.ZeroCopy, "control", s.ctlPath)
	if os.Geteuid() == 0 && s.cfg.User == "" {
		s.log.Warn("running as root and workers too: set user= in the config to drop their privileges")
	}

	if err := s.start(); err != nil {
		return err
	}

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
	return s.loop(ctx, inputs{signals: sigs, watchdog: watchdog, status: statusTick.C, health: healthTick.C})
}

// notifySignals delivers the signals the supervisor acts on to sigs. Each
// kind has a channel of its own in between, so that a flood of one kind
// (SIGHUPs from a script, SIGUSR1s) cannot crowd out another:
// signal.Notify drops a signal whose channel is full, and with one
// channel for all, a SIGTERM that came while SIGHUPs filled it was lost
// and the daemon served on. SIGHUPs and SIGUSR1s that come while one is
// pending are one (a reload or a drain already asked for); SIGTERMs and
// SIGINTs each count (a second escalates a drain). stop ends the delivery.
func notifySignals() (sigs <-chan os.Signal, stop func()) {
	out := make(chan os.Signal)
	term := make(chan os.Signal, 4)
	hup := make(chan os.Signal, 1)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	signal.Notify(hup, syscall.SIGHUP)
	signal.Notify(usr1, syscall.SIGUSR1)
	done := make(chan struct{})
	for _, c := range []chan os.Signal{term, hup, usr1} {
		go func() {
			for {
				select {
				case sig := <-c:
					select {
					case out <- sig:
					case <-done:
						return
					}
				case <-done:
					return
				}
			}
		}()
	}
	return out, func() {
		signal.Stop(term)
		signal.Stop(hup)
		signal.Stop(usr1)
		close(done)
	}
}

// start starts the first generation; the loop promotes it once ready.
func (s *Supervisor) start() error {
	access, err := openAccessLog(s.cfg)
	if err != nil {
		return err
	}
	if err := s.startGeneration(s.cfg, access); err != nil {
		s.killAll("startup failed")
		return err
	}
	s.reloadWait = append(s.reloadWait, reloadWaiter{reply: func(msg string, err error) {
		if err != nil && s.state == stateStarting {
			s.log.Error("startup failed", "err", err)
			s.startupErr = err
		}
	}})
	return nil
}

// inputs are what the loop waits on besides its events: each may be nil.
type inputs struct {
	signals  <-chan os.Signal
	watchdog <-chan time.Time // systemd's watchdog is due
	status   <-chan time.Time // refresh systemd's STATUS=
	health   <-chan time.Time // ping the workers (health.go)
}

// loop is the supervisor's event loop: it handles events, signals and
// ticks until the daemon has exited, and returns how it did.
func (s *Supervisor) loop(ctx context.Context, in inputs) error {
	termSignals := 0
	for !s.done() {
		select {
		case ev := <-s.events:
			s.handle(ev)
		case sig := <-in.signals:
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
				if termSignals > 1 && s.state == stateDraining {
					s.log.Warn("second " + name + ": killing instead of draining")
					s.kill("second "+name, true)
				} else {
					s.log.Info(name + ": draining")
					s.drain(0, name)
				}
			}
		case <-in.watchdog:
			s.env.notify("WATCHDOG=1")
		case <-in.status:
			s.notifyStatus()
		case now := <-in.health:
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
	return s.state.exiting() && s.liveWorkers() == 0
}

func (s *Supervisor) liveWorkers() int {
	n := 0
	for _, g := range s.gens {
		n += g.live()
	}
	return n
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
