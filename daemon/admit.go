package daemon

import (
	"time"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// max_connections_per_client on PROXY listeners (docs/PROXY.md). The
// supervisor counts clients at accept, but on a proxy: listener the
// socket's peer is the balancer and the client is known only from the
// PROXY header, which the worker reads. So the worker asks (msgAdmit, with
// the client key the header gave) and waits for the answer (msgAdmitted)
// before serving; the supervisor counts the key in the same table as
// direct connections and records it with the worker's connections, so the
// count ends as theirs do (clients.go). Only connections flagged
// connAdmit ask: those of proxy listeners while a limit is set.

// admit answers a worker's msgAdmit: whether the client key of the
// proxied connection id may have one more connection. A counted one is
// recorded with w's connections, so that its count ends with it.
func (s *Supervisor) admit(w *workerProc, p []byte) {
	id, key, err := parseAdmit(p)
	if err != nil {
		s.log.Error("bad admission request from worker", "pid", w.pid, "err", err)
		return
	}
	ok := true
	if limit := int(s.perClient.Load()); limit > 0 {
		ok = s.clients.acquire(key, limit)
		if ok {
			w.sendMu.Lock()
			dead := w.isGone()
			if !dead {
				if w.clients == nil {
					w.clients = map[uint64]string{}
				}
				w.clients[id] = key
			}
			w.sendMu.Unlock()
			if dead {
				s.clients.release(key)
			}
		}
	}
	if !ok {
		s.metrics.refuse(refusedPerClient, 1)
	}
	if err := fdpass.TrySend(w.ch, appendAdmitted(nil, id, ok)); err != nil {
		s.log.Debug("answer admission", "pid", w.pid, "err", err)
	}
}

// admitWait bounds the wait for the supervisor's answer to msgAdmit; past
// it the connection is served (the supervisor may be saturated: a limit
// that cannot be checked does not refuse anyone).
const admitWait = time.Second

// admit asks the supervisor whether the client a proxied connection's
// header named may have one more connection (clients.go), and returns the
// refusal, or "".
func (w *worker) admit(id uint64, client string) string {
	c := make(chan bool, 1)
	w.amu.Lock()
	w.admits[id] = c
	w.amu.Unlock()
	defer func() {
		w.amu.Lock()
		delete(w.admits, id)
		w.amu.Unlock()
	}()
	if err := fdpass.Send(w.ch, appendAdmit(nil, id, clientKey(client))); err != nil {
		w.log.Error("ask the supervisor about a client", "err", err)
		return ""
	}
	t := time.NewTimer(admitWait)
	defer t.Stop()
	select {
	case ok := <-c:
		if !ok {
			return busyPerClient
		}
	case <-t.C:
		w.log.Warn("the supervisor did not answer about a client; serving it", "client", client, "waited", admitWait)
	}
	return ""
}

// admitted delivers the supervisor's answer to admit.
func (w *worker) admitted(p []byte) {
	id, ok, err := parseAdmitted(p)
	if err != nil {
		w.log.Error("bad admission answer", "err", err)
		return
	}
	w.amu.Lock()
	c := w.admits[id]
	w.amu.Unlock()
	if c != nil {
		select {
		case c <- ok:
		default: // a repeated answer
		}
	}
}
