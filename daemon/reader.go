package daemon

// The supervisor's end of a worker's channel: what it reads there, and
// status queries that wait for an answer on it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
)

// readWorker reads a worker's channel until it closes, then reaps the
// process and reports the exit to the loop. When the worker dies the read
// returns EOF once; this goroutine then ends, so a dead worker's channel
// can never make the supervisor spin.
func (s *Supervisor) readWorker(w *workerProc) {
	buf := make([]byte, maxMsg)
	ch := fdpass.NewReceiver(w.ch, buf, make([]byte, 64))
	var ds []doneMeta // msgDone's entries, the slice reused
	for {
		n, fds, err := ch.Recv()
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
		case msgAccepted: // accept mode hook (acceptmode.go)
			s.onAccepted(w, p)
		case msgAcceptStopped: // accept mode hook (acceptbudget.go)
			s.post(evAcceptStopped{w})
		case msgDone:
			ds, err = appendDoneMetas(ds[:0], p)
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
			s.budgetChanged() // accept mode hook (acceptbudget.go)
		case msgStatus, msgDigest:
			id, rest, err := parseID(p)
			if err != nil {
				continue
			}
			w.mu.Lock()
			c := w.queries[id]
			delete(w.queries, id)
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
	// against it (sendTo checks isGone under the same lock).
	w.sendMu.Lock()
	close(w.gone)
	n := w.active.Swap(0)
	clients := w.clients
	w.clients = nil
	w.sendMu.Unlock()
	s.inflight.Add(-n)
	for _, key := range clients {
		s.clients.release(key)
	}
	s.metrics.tally.retire(w)
	w.ch.Close()
	how := w.proc.Wait()
	n += s.unreportedAccepts(w) // accept mode hook (acceptcount.go)
	s.post(evExit{w, how, n})
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

// query asks a worker for its status, waiting at most d. flags (at most
// one byte, e.g. statusCounters) say what to leave out.
func (w *workerProc) query(id uint64, d time.Duration, flags ...byte) (*workerStatus, error) {
	b, err := w.ask(context.Background(), id, msgStatusReq, flags, d)
	if err != nil {
		return nil, err
	}
	var st workerStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("worker %d: status: %w", w.pid, err)
	}
	return &st, nil
}

// ask sends a request of type typ with payload to the worker and waits at
// most d (and while ctx lasts) for the answer with the same id.
func (w *workerProc) ask(ctx context.Context, id uint64, typ byte, payload []byte, d time.Duration) ([]byte, error) {
	c := make(chan []byte, 1)
	w.mu.Lock()
	w.queries[id] = c
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.queries, id)
		w.mu.Unlock()
	}()
	if err := fdpass.TrySend(w.ch, append(idMessage(typ, id), payload...)); err != nil {
		return nil, fmt.Errorf("worker %d: %w", w.pid, err)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case b := <-c:
		return b, nil
	case <-w.gone:
		return nil, fmt.Errorf("worker %d exited before answering", w.pid)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		return nil, fmt.Errorf("worker %d did not answer within %v", w.pid, d)
	}
}
