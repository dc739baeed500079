package daemon

import (
	"encoding/json"
	"sync"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/serve"
)

// How the supervisor learns what the workers served, for /metrics. Every
// worker keeps cumulative counters (serve.Stats: atomic adds per request
// and response, nothing more on its hot path). The supervisor asks for
// them when it is scraped, with the status query and the statusCounters
// flag: one small message per worker per scrape, never one per request.
//
// Prometheus counters must never go backwards, yet workers die and are
// replaced, and reloads retire whole generations. So the supervisor keeps
// the last counts each live worker reported and, when a worker's channel
// closes, adds them to the totals of the workers gone: a total is what
// the gone reported plus what the live last reported, and each term only
// grows. A worker that exits through a drain (reload, SIGTERM, zctl drain)
// sends its final counts as its last message (an unsolicited status with
// finalStatusID), so it takes nothing with it; one that is killed or
// crashes loses what it counted since the last scrape.
const (
	// statusCounters, as the byte after msgStatusReq's id, asks for the
	// counters only: no list of transfers, just their number (Omitted).
	statusCounters byte = 1
	// finalStatusID is the id of a draining worker's last message: its
	// final counters. Status queries count from 1.
	finalStatusID uint64 = 0
)

// workerCounts are the serving counters of one worker, or a sum of them.
type workerCounts struct {
	nativeBytes, httpBytes       uint64
	nativeRequests, httpRequests uint64
	nativeResp, httpResp         serve.Classes
}

func countsOf(st *workerStatus) workerCounts {
	return workerCounts{
		nativeBytes: st.BytesSent - min(st.HTTPBytes, st.BytesSent), httpBytes: st.HTTPBytes,
		nativeRequests: st.Native, httpRequests: st.HTTP,
		nativeResp: st.NativeResp, httpResp: st.HTTPResp,
	}
}

// each calls f with a pointer to every field of c and the same field of o.
func (c *workerCounts) each(o *workerCounts, f func(c, o *uint64)) {
	f(&c.nativeBytes, &o.nativeBytes)
	f(&c.httpBytes, &o.httpBytes)
	f(&c.nativeRequests, &o.nativeRequests)
	f(&c.httpRequests, &o.httpRequests)
	for i := range c.nativeResp {
		f(&c.nativeResp[i], &o.nativeResp[i])
		f(&c.httpResp[i], &o.httpResp[i])
	}
}

// raise makes each of c's counters at least o's: a worker's own counters
// only grow, so an older answer (a slow scrape's) must not lower them.
func (c *workerCounts) raise(o workerCounts) {
	c.each(&o, func(c, o *uint64) { *c = max(*c, *o) })
}

func (c *workerCounts) add(o workerCounts) {
	c.each(&o, func(c, o *uint64) { *c += *o })
}

// tally holds the last counts of each live worker and the sum of those of
// the workers gone. The zero value is ready.
type tally struct {
	mu   sync.Mutex
	live map[*workerProc]*tallied
	gone workerCounts
}

type tallied struct {
	counts    workerCounts
	transfers int // response bodies it was sending at its last answer
}

// update records what w answered. An answer read after w's channel
// closed (retire ran, or is about to: w is dead) is dropped, so that w
// is not counted again after its counts moved to the gone.
func (t *tally) update(w *workerProc, st *workerStatus) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w.isGone() {
		return
	}
	e := t.live[w]
	if e == nil {
		if t.live == nil {
			t.live = map[*workerProc]*tallied{}
		}
		e = &tallied{}
		t.live[w] = e
	}
	e.counts.raise(countsOf(st))
	e.transfers = len(st.Transfers) + st.Omitted
}

// final records a worker's last message, its final counters (JSON).
func (t *tally) final(w *workerProc, b []byte) {
	var st workerStatus
	if err := json.Unmarshal(b, &st); err == nil {
		t.update(w, &st)
	}
}

// retire moves w's counts to the gone; its channel has closed.
func (t *tally) retire(w *workerProc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.live[w]; e != nil {
		t.gone.add(e.counts)
		delete(t.live, w)
	}
}

// totals returns the counters of every worker there has been, and the
// transfers the live ones were sending at their last answer.
func (t *tally) totals() (workerCounts, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sum, transfers := t.gone, 0
	for _, e := range t.live {
		sum.add(e.counts)
		transfers += e.transfers
	}
	return sum, transfers
}

// countersJSON is a worker's answer to a status query with statusCounters:
// its counters, and the number of transfers in flight as Omitted.
func (w *worker) countersJSON() []byte {
	st := w.srv.Stats()
	_, n := w.srv.Transfers(0)
	b, _ := json.Marshal(workerStatus{Active: st.Active, Connections: st.Connections, BytesSent: st.BytesSent,
		Native: st.NativeRequests, HTTP: st.HTTPRequests, HTTPBytes: st.HTTPBytesSent,
		NativeResp: st.NativeResponses, HTTPResp: st.HTTPResponses, Omitted: n})
	return b
}

// reportFinal sends a drained worker's final counters, its last message.
func (w *worker) reportFinal() {
	msg := append(idMessage(msgStatus, finalStatusID), w.countersJSON()...)
	if err := fdpass.Send(w.ch, msg); err != nil {
		w.log.Error("report final counters", "err", err)
	}
}
