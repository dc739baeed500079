package daemon

// The worker's side of the accept dispatch mode (dispatch = "accept",
// acceptmode.go): it gets the listening sockets over its channel
// (msgListen) and accepts on them itself, feeding each connection into the
// same serve path as a handed-off one. It never holds more connections
// than its limit, the smaller of what its descriptors have room for
// (fdcap.go) and its budget from the supervisor (msgLimit,
// acceptbudget.go): at the limit it stops accepting, and the connections
// wait in the listen backlog for another worker or for room here. On
// drain it closes its copies of the sockets (they live on in the
// supervisor), reports that it stopped (msgAcceptStopped) and finishes
// what it holds.

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/internal/ratelog"
	"github.com/zfs-serve/zfs-serve/serve"
)

// acceptor is a worker's accept loops and what they share.
type acceptor struct {
	w        *worker
	capacity int            // connections its descriptors have room for (fdcap.go)
	trusted  []netip.Prefix // proxy_trusted; nil: any source
	base     uint64         // connection ids: base | a per-worker sequence
	seq      atomic.Uint64

	// Under w.mu: the connections this worker may hold at once, the
	// smaller of capacity and the supervisor's budget (msgLimit,
	// acceptbudget.go; before the first, its share of max_connections).
	limit int
	// Under w.mu: the listeners, whether accepting stopped for good, and
	// whether a loop waits for room (room is signalled as connections end),
	// and how many do.
	ls      []*serve.Listener
	stopped bool
	started bool
	waiting bool
	waiters int
	room    *sync.Cond
	loops   sync.WaitGroup
	stop    chan struct{} // closed when accepting stops for good: ends a backoff

	// count is the count of accepts shared with the supervisor
	// (acceptcount.go), set before the loops start; nil without one.
	count *atomic.Uint64

	// pending counts connections accepted and not yet reported to the
	// supervisor (msgAccepted). repMu orders that report before any
	// msgDone: outbox sends done reports through sendDone, which flushes
	// pending first, so every connection a msgDone counts was counted by
	// an earlier msgAccepted.
	repMu       sync.Mutex
	pending     atomic.Uint32
	kick        chan struct{}
	reportDelay time.Duration // doneDelay; tests lengthen it

	untrustedLog ratelog.Limiter

	// An accept error (EMFILE, ENFILE, ENOBUFS) backs the loop off, from
	// retryMin doubling up to retryMax; failures counts such errors.
	retryMin, retryMax time.Duration
	failures           atomic.Uint64
}

// newAcceptor returns the acceptor of a worker with configuration c and
// descriptor capacity capacity, or nil in the handoff mode.
func newAcceptor(w *worker, c *config.Config, capacity int) *acceptor {
	if c.Dispatch != config.DispatchAccept {
		return nil
	}
	share := (c.MaxConnections + c.Workers - 1) / max(c.Workers, 1)
	a := &acceptor{
		w:           w,
		capacity:    capacity,
		limit:       max(1, min(capacity, share)),
		base:        1<<63 | uint64(os.Getpid())<<32,
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		reportDelay: doneDelay,
		retryMin:    5 * time.Millisecond,
		retryMax:    time.Second,
	}
	if nets, err := config.ParseTrusted(c.ProxyTrusted); err == nil && len(nets) > 0 {
		a.trusted = nets
	}
	a.room = sync.NewCond(&w.mu)
	go a.reporter()
	return a
}

// listen handles msgListen: start accepting on the sockets it carries. A
// worker that is draining, or already has its sockets, closes them.
func (w *worker) listen(p []byte, fds []int) {
	metas, err := parseListen(p)
	if err == nil && len(metas) != len(fds) && len(metas)+1 != len(fds) {
		err = fmt.Errorf("%d listeners described, %d fds attached", len(metas), len(fds))
	}
	a := w.acc
	if err == nil && a == nil {
		err = errors.New("listeners sent to a worker in the handoff dispatch mode")
	}
	if err != nil {
		w.log.Error("bad listen message; closing its fds", "err", err)
		closeFDs(fds)
		return
	}
	w.mu.Lock()
	skip := w.draining || a.stopped || a.started
	a.started = true
	w.mu.Unlock()
	if skip {
		closeFDs(fds)
		return
	}
	if len(fds) > len(metas) {
		// The shared count of accepts (acceptcount.go) comes last.
		cfd := fds[len(metas)]
		fds = fds[:len(metas)]
		if a.count, err = mapAcceptCount(cfd); err != nil {
			w.log.Error("count of accepts from the supervisor", "err", err)
		}
		syscall.Close(cfd)
	}
	for i, fd := range fds {
		l, err := serve.NewListener(fd, "listener "+metas[i].addr)
		if err != nil {
			w.log.Error("listener from the supervisor", "addr", metas[i].addr, "err", err)
			continue
		}
		w.mu.Lock()
		a.ls = append(a.ls, l)
		w.mu.Unlock()
		a.loops.Add(1)
		go a.loop(l, metas[i])
	}
	w.log.Debug("accepting", "listeners", len(fds), "limit", a.limit)
}

// setLimit handles msgLimit: from now the worker may hold n connections
// (no more than its descriptors have room for). Under the new limit the
// loops waiting for room accept again; above it they wait until enough
// connections have ended.
func (w *worker) setLimit(p []byte) {
	n, err := parseLimit(p)
	a := w.acc
	if err == nil && a == nil {
		err = errors.New("a connection budget sent to a worker in the handoff dispatch mode")
	}
	if err != nil {
		w.log.Error("bad limit message", "err", err)
		return
	}
	w.mu.Lock()
	a.limit = int(min(n, uint32(a.capacity)))
	if w.active < a.limit {
		a.freed()
	}
	w.mu.Unlock()
	w.log.Debug("connection budget", "limit", n, "capacity", a.capacity)
}

// loop accepts on l until it is closed.
func (a *acceptor) loop(l *serve.Listener, m listenMeta) {
	defer a.loops.Done()
	proxy := m.flags&listenProxy != 0
	start := func(fd int, sa syscall.Sockaddr) { a.start(fd, sa, proxy) }
	var delay time.Duration
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		if !a.waitRoom() {
			return
		}
		// Each accept takes its slot first: the room is shared with the
		// loops of the other listeners.
		n, err := l.AcceptLimited(maxBatch, a.take, a.put, start)
		if n > 0 {
			select {
			case a.kick <- struct{}{}:
			default:
			}
		}
		switch {
		case errors.Is(err, serve.ErrListenerClosed):
			return
		case err != nil:
			// EMFILE, ENFILE, ENOBUFS: back off rather than spin on a
			// socket that stays readable; other workers may have room.
			a.failures.Add(1)
			delay = min(max(2*delay, a.retryMin), a.retryMax)
			// A drain or reload (stopAccepting) ends the wait at once: it
			// waits for this loop.
			a.w.log.Error("accept failed", "addr", m.addr, "err", err, "retry_in", delay)
			retry.Reset(delay)
			select {
			case <-retry.C:
			case <-a.stop:
				return
			}
		default:
			delay = 0
		}
	}
}

// waitRoom waits until this worker holds fewer connections than its
// limit, and reports false once stopped.
func (a *acceptor) waitRoom() bool {
	w := a.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for !a.stopped && w.active >= a.limit {
		a.waiting = true
		a.waiters++
		a.room.Wait()
		a.waiters--
	}
	return !a.stopped
}

// take counts one more connection active before its accept4, if the
// limit has room for it: the slot then goes with the connection (start),
// or back (put) if the accept finds none.
func (a *acceptor) take() bool {
	w := a.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if a.stopped || w.active >= a.limit {
		return false
	}
	w.active++
	return true
}

// put gives back a slot that take gave and no connection filled.
func (a *acceptor) put() {
	w := a.w
	w.mu.Lock()
	w.active--
	a.freed()
	w.mu.Unlock()
}

// freed (under w.mu) wakes the loops waiting for room: a connection ended.
// It does nothing in the handoff mode (a == nil).
func (a *acceptor) freed() {
	if a != nil && a.waiting {
		a.waiting = false
		a.room.Broadcast()
	}
}

// start serves a connection it accepted. It runs inside Listener.Accept,
// so a drain's stopAccepting, which closes the listeners, waits for it:
// the connection is counted active before the drain can see the worker
// idle.
func (a *acceptor) start(fd int, sa syscall.Sockaddr, proxy bool) {
	w := a.w
	client := sockaddrString(sa)
	if proxy && a.trusted != nil && !trusted(sa, a.trusted) && !fromSelf(fd, sa) {
		syscall.Close(fd)
		a.put()
		a.untrustedLog.Log(w.log, time.Now(), slog.LevelWarn, "connection to a proxy listener from outside proxy_trusted; closed", "client", client)
		return
	}
	id := a.base | a.seq.Add(1)&(1<<32-1)
	// Counted active already: its slot was taken before the accept (take).
	w.conns.Add(1)
	// The shared count first: it never falls behind what msgAccepted
	// reports, so that the supervisor sees what a death left unreported.
	if a.count != nil {
		a.count.Add(1)
	}
	a.pending.Add(1)
	// Non-blocking (SOCK_NONBLOCK), as Run needs. An idle keep-alive
	// connection waits without a goroutine (serve/park.go); the callback
	// runs when it ends, and reports it done promptly, as every one in the
	// accept mode (worker.go startConns): budgets come from the reports.
	w.srv.Start(fd, serve.ConnInfo{Client: client, ID: id, Proxy: proxy, Nonblocking: true}, func(r serve.Result) {
		w.done <- doneMeta{id: id, bytes: uint64(r.Bytes), requests: uint32(r.Requests), outcome: string(r.Outcome), prompt: true}
		w.mu.Lock()
		w.active--
		a.freed()
		w.shutIfIdle()
		w.mu.Unlock()
		w.conns.Done()
	})
}

// reporter sends msgAccepted at most every doneDelay while connections
// are accepted, so that the supervisor's counts (zctl status, metrics)
// see connections that have not ended yet; one message covers every
// connection accepted meanwhile.
func (a *acceptor) reporter() {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for range a.kick {
		t.Reset(a.reportDelay)
		<-t.C
		a.repMu.Lock()
		a.flush()
		a.repMu.Unlock()
	}
}

// flush (under repMu) reports the connections accepted since the last
// report.
func (a *acceptor) flush() {
	if n := a.pending.Swap(0); n > 0 {
		if err := fdpass.Send(a.w.ch, appendAccepted(nil, n)); err != nil {
			a.w.log.Error("report accepted connections", "err", err)
		}
	}
}

// sendDone sends a msgDone through outbox's sender, after the
// msgAccepted that counts its connections in the accept mode.
func (w *worker) sendDone(out *fdpass.Sender, msg []byte) error {
	if a := w.acc; a != nil {
		a.repMu.Lock()
		defer a.repMu.Unlock()
		a.flush()
	}
	return out.Send(msg)
}

// stopAccepting closes the worker's copies of the listening sockets and
// waits for its accept loops to end: after it, the worker accepts nothing
// more. Call it without w.mu held.
func (w *worker) stopAccepting() {
	a := w.acc
	if a == nil {
		return
	}
	w.mu.Lock()
	first := !a.stopped
	if first {
		close(a.stop)
	}
	a.stopped = true
	a.room.Broadcast()
	ls := a.ls
	a.ls = nil
	w.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	a.loops.Wait()
	if first {
		// What it accepted is reported now, then that it accepts no more
		// (sockets sent later are closed unused): until then the
		// supervisor holds its whole budget back from the workers that
		// accept (acceptbudget.go).
		a.repMu.Lock()
		a.flush()
		if err := fdpass.Send(w.ch, []byte{msgAcceptStopped}); err != nil {
			w.log.Error("report that accepting stopped", "err", err)
		}
		a.repMu.Unlock()
	}
	var st serve.ListenerStats
	for _, l := range ls {
		s := l.Stats()
		st.Accepted += s.Accepted
		st.Wakeups += s.Wakeups
		st.Empty += s.Empty
	}
	if len(ls) > 0 {
		w.log.Info("stopped accepting", "accepted", st.Accepted, "wakeups", st.Wakeups, "empty_wakeups", st.Empty, "accept_errors", a.failures.Load())
	}
}
