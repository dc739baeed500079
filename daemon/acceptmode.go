package daemon

// The supervisor's side of the accept dispatch mode (dispatch = "accept",
// docs/ARCHITECTURE.md "Dispatch modes"). The supervisor binds and holds
// the listening sockets as in the handoff mode, but does not accept on
// them while workers serve: each worker of the serving generation gets a
// copy of every listening socket once, when it joins dispatch (msgListen),
// and accepts on it itself (workeraccept.go); it reports the connections
// it accepted (msgAccepted, batched) and finished (msgDone), so the counts
// of zctl status and /metrics stay what they are in the handoff mode. Each
// worker accepts no more than its budget (msgLimit, acceptbudget.go), so
// that max_connections holds for the server across reloads; a count of
// its accepts shared in memory (acceptcount.go) tells what a worker that
// died had not reported. A drained worker closes its copies; the sockets
// live on here. Once the daemon drains or stops, the supervisor's own
// accept loops start and answer new connections "draining" as in the
// handoff mode.
//
// Hooks into the rest of the daemon (each marked "accept mode hook"):
// Supervisor.am (supervisor.go), refreshDispatch -> giveListeners
// (generation.go), startAccepting -> supervisorAccepts (listen.go), drain
// and kill -> acceptOnStop (exit.go), readWorker's msgAccepted ->
// onAccepted, msgAcceptStopped -> evAcceptStopped, msgDone ->
// budgetChanged and the exit -> unreportedAccepts (reader.go), handle ->
// handleBudget (events.go), checkHealth -> retryBudgets (health.go),
// reload -> keepDispatch (control.go), workerProc.accCount (proc.go); in
// the worker: worker.acc, RunWorker -> newAcceptor, run's msgListen -> listen and
// msgLimit -> setLimit, drain -> stopAccepting, startConns -> freed,
// outbox -> sendDone (worker.go).

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// acceptMode is the supervisor's state of the accept mode (loop-owned).
type acceptMode struct {
	given map[*workerProc]bool // workers sent msgListen
	b     budget               // max_connections (acceptbudget.go)

	// Read by the channel readers (budgetChanged): whether a worker
	// outside the accepting set may hold connections, and whether an
	// evBudget is queued.
	overlap atomic.Bool
	queued  atomic.Bool
}

// acceptInWorkers reports whether workers accept themselves (loop only).
func (s *Supervisor) acceptInWorkers() bool {
	return s.cfg != nil && s.cfg.Dispatch == config.DispatchAccept
}

// supervisorAccepts reports whether the supervisor's own accept loops
// should run: always in the handoff mode; in the accept mode only once
// the daemon drains or stops, to answer new connections "draining".
func (s *Supervisor) supervisorAccepts() bool {
	return !s.acceptInWorkers() || s.state.exiting()
}

// acceptOnStop starts the supervisor's accept loops once a drain or kill
// has begun in the accept mode; the workers stop accepting as they drain.
func (s *Supervisor) acceptOnStop() {
	if s.acceptInWorkers() {
		s.startAccepting()
	}
}

// giveListeners sends msgListen to each worker in dispatch that has not
// had it yet, in the accept mode, after its budget (msgLimit,
// acceptbudget.go); it sends the other workers' budgets where they
// changed. Each worker gets the listeners of its own generation's
// configuration, with that configuration's proxy: flags: at a reload's
// promotion, the dropped listeners are still open and the changed flags
// not yet applied.
func (s *Supervisor) giveListeners(ws []*workerProc) {
	if !s.acceptInWorkers() {
		return
	}
	if s.am.given == nil {
		s.am.given = map[*workerProc]bool{}
	}
	for w := range s.am.given {
		if w.isGone() {
			delete(s.am.given, w)
		}
	}
	fresh := map[*workerProc]bool{}
	for _, w := range ws {
		// A worker gone whose exit is not handled yet (it died just
		// after it reported ready) gets nothing: its channel reader may
		// have read its count already, and its mapping would stay.
		if !s.am.given[w] && !w.isGone() {
			s.am.given[w] = true
			fresh[w] = true
		}
	}
	// A worker whose budget could not be sent gets its sockets later
	// (retryBudgets): it must not accept before it knows how many.
	for _, w := range s.sendBudgets(fresh) {
		delete(s.am.given, w)
		delete(fresh, w)
	}
	for _, w := range ws {
		if !fresh[w] {
			continue
		}
		metas, fds, err := s.listenersFor(w.gen.cfg)
		if err != nil {
			s.log.Error("listeners for worker", "pid", w.pid, "err", err)
			closeFDs(fds)
			continue
		}
		// The shared count of its accepts (acceptcount.go) goes after
		// the sockets. Without it, connections_cut misses those it has
		// not reported when it dies.
		if c, fd, err := newAcceptCount(); err != nil {
			s.log.Error("count of accepts for worker", "pid", w.pid, "err", err)
		} else {
			w.sentAcceptCount(c)
			fds = append(fds, fd)
			if w.isGone() {
				// Gone since the check above: whichever of this and its
				// channel reader takes the count back unmaps it.
				if c := w.accCount.Swap(nil); c != nil {
					c.unreported(0)
				}
			}
		}
		s.sendListen(w, appendListen(nil, metas), fds)
	}
}

// listenersFor returns the listeners a worker with configuration cfg
// accepts on, with duplicates of their fds (the caller closes them).
func (s *Supervisor) listenersFor(cfg *config.Config) ([]listenMeta, []int, error) {
	var metas []listenMeta
	var fds []int
	for _, l := range s.listeners {
		if l.closed.Load() {
			continue
		}
		proxy := l.proxy.Load()
		if !l.activated {
			i := slices.IndexFunc(cfg.Listen, func(e string) bool { a, _ := config.SplitListen(e); return a == l.configured })
			if i < 0 {
				continue // dropped by this configuration
			}
			_, proxy = config.SplitListen(cfg.Listen[i])
		}
		if len(metas) == maxListeners {
			return metas, fds, fmt.Errorf("more than %d listeners", maxListeners)
		}
		rc, err := l.f.SyscallConn()
		if err != nil {
			return metas, fds, err
		}
		nfd, derr := -1, error(nil)
		// Not l.f.Fd(): that would make the socket blocking, for every
		// process that shares it.
		if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
			return metas, fds, err
		}
		if derr != nil {
			return metas, fds, fmt.Errorf("dup listener %s: %w", l.addr, derr)
		}
		var flags byte
		if proxy {
			flags |= listenProxy
		}
		metas = append(metas, listenMeta{flags: flags, addr: l.addr})
		fds = append(fds, nfd)
	}
	return metas, fds, nil
}

// sendListen sends msg with fds to w and closes fds. Like a drain, it must
// not be lost to a full channel: it then goes from a goroutine that waits
// for room (a drain sent meanwhile may overtake it; the worker then closes
// the sockets it gets).
func (s *Supervisor) sendListen(w *workerProc, msg []byte, fds []int) {
	err := fdpass.TrySend(w.ch, msg, fds...)
	if errors.Is(err, unix.EAGAIN) {
		go func() {
			defer closeFDs(fds)
			if err := fdpass.Send(w.ch, msg, fds...); err != nil && !w.isGone() {
				s.log.Error("send listeners to worker", "pid", w.pid, "err", err)
			}
		}()
		return
	}
	closeFDs(fds)
	if err != nil && !w.isGone() {
		s.log.Error("send listeners to worker", "pid", w.pid, "err", err)
	}
}

// onAccepted counts connections w accepted itself (msgAccepted), as a
// handoff counts them: in flight until w reports them done or dies.
func (s *Supervisor) onAccepted(w *workerProc, p []byte) {
	n, err := parseAccepted(p)
	if err != nil {
		s.log.Error("bad message from worker", "pid", w.pid, "err", err)
		return
	}
	w.reportedAccepts(n)
	w.active.Add(int64(n))
	s.inflight.Add(int64(n))
	s.metrics.accepted.Add(uint64(n))
	s.budgetChanged()
}

// keepDispatch keeps the dispatch mode in use across a reload: switching
// would need the supervisor's accept loops stopped or started under
// connections in flight, so it takes a restart.
func (s *Supervisor) keepDispatch(cfg *config.Config) error {
	if cfg.Dispatch == s.cfg.Dispatch {
		return nil
	}
	s.log.Warn("dispatch changes only at restart; keeping the mode in use", "configured", cfg.Dispatch, "in_use", s.cfg.Dispatch)
	cfg.Dispatch = s.cfg.Dispatch
	if cfg.Dispatch == config.DispatchAccept && cfg.MaxConnectionsPerClient > 0 {
		return fmt.Errorf("dispatch %q is in use until a restart, and cannot enforce max_connections_per_client", cfg.Dispatch)
	}
	return nil
}
