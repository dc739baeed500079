package daemon

// The answer to zctl status, and systemd's STATUS= line.

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// status builds the answer to "status": the structure from the loop, the
// live figures and transfers from each worker.
func (s *Supervisor) status(ctx context.Context) (*ctl.Status, error) {
	var st *ctl.Status
	var procs []*workerProc
	if err := s.call(ctx, func() { st, procs = s.snapshot() }); err != nil {
		return nil, err
	}
	type answer struct {
		i  int
		ws *workerStatus
	}
	answers := make(chan answer, len(procs))
	for i, w := range procs {
		if w == nil {
			answers <- answer{i, nil}
			continue
		}
		go func() {
			ws, err := w.query(s.querySeq.Add(1), time.Second)
			if err != nil {
				ws = nil
			}
			answers <- answer{i, ws}
		}()
	}
	now := time.Now()
	for range procs {
		a := <-answers
		if a.ws == nil {
			continue
		}
		row := &st.Workers[a.i]
		row.Active, row.Connections, row.BytesSent = a.ws.Active, a.ws.Connections, a.ws.BytesSent
		row.NativeRequests, row.HTTPRequests, row.HTTPBytesSent = a.ws.Native, a.ws.HTTP, a.ws.HTTPBytes
		row.DigestsHashed, row.DigestsLoaded = a.ws.Digests.Hashed, a.ws.Digests.Loaded
		for _, t := range a.ws.Transfers {
			st.Transfers = append(st.Transfers, ctl.Transfer{WorkerPID: row.PID, Protocol: t.Protocol, Client: t.Client, Path: t.Path,
				Offset: t.Offset, Sent: t.Sent, Total: t.Total, Age: now.Sub(t.Start).Seconds()})
		}
		st.TransfersOmitted += a.ws.Omitted
	}
	sort.Slice(st.Transfers, func(i, j int) bool { return st.Transfers[i].Age > st.Transfers[j].Age })
	st.Totals = ctl.Totals{}
	for _, w := range st.Workers {
		if w.PID != 0 {
			st.Totals.Workers++
		}
		st.Totals.Active += w.Active
		st.Totals.Connections += w.Connections
		st.Totals.BytesSent += w.BytesSent
		st.Totals.NativeRequests += w.NativeRequests
		st.Totals.HTTPRequests += w.HTTPRequests
		st.Totals.HTTPBytesSent += w.HTTPBytesSent
		st.Totals.DigestsHashed += w.DigestsHashed
		st.Totals.DigestsLoaded += w.DigestsLoaded
		st.Totals.Restarts += w.Restarts
	}
	return st, nil
}

// snapshot runs on the loop: the pool's structure and the counters the
// supervisor keeps itself (used when a worker does not answer).
func (s *Supervisor) snapshot() (*ctl.Status, []*workerProc) {
	st := &ctl.Status{
		Version:    s.opts.Version,
		State:      s.state.String(),
		PID:        os.Getpid(),
		Started:    s.started,
		Uptime:     s.env.clock.Now().Sub(s.started).Seconds(),
		Config:     s.opts.Source.String(),
		Root:       s.cfg.Root,
		ZeroCopy:   s.cfg.ZeroCopy,
		Control:    s.ctlPath,
		LastReload: s.lastReload,
		// Empty lists, never null, whatever the state: scripts iterate
		// them with jq.
		Listeners: []ctl.Listener{},
		Workers:   []ctl.Worker{},
		Transfers: []ctl.Transfer{},
	}
	if s.current != nil {
		st.Generation = s.current.id
	}
	if s.state == stateDraining {
		t := s.drainAt
		st.DrainDeadline = &t
	}
	for _, l := range s.listeners {
		if !l.added {
			st.Listeners = append(st.Listeners, ctl.Listener{Name: l.name, Addr: l.addr, Activated: l.activated, Proxy: l.proxy.Load()})
		}
	}
	st.Listeners = s.appendMetricsListener(st.Listeners)
	var procs []*workerProc
	for _, g := range s.gens {
		for _, sl := range g.slots {
			w := sl.w
			if w == nil {
				if !sl.nextStart.IsZero() {
					t := sl.nextStart
					st.Workers = append(st.Workers, ctl.Worker{Generation: g.id, Slot: sl.index, Restarts: sl.restarts,
						LastExit: sl.lastExit, State: "restarting", NextStart: &t})
				}
				continue
			}
			st.Workers = append(st.Workers, workerRow(g, sl, w))
			procs = append(procs, askable(w))
		}
		for _, w := range g.retired {
			st.Workers = append(st.Workers, workerRow(g, w.slot, w))
			procs = append(procs, askable(w))
		}
	}
	// procs and st.Workers rows with a pid are in the same order.
	rows := st.Workers[:0:0]
	var restarting []ctl.Worker
	for _, r := range st.Workers {
		if r.PID != 0 {
			rows = append(rows, r)
		} else {
			restarting = append(restarting, r)
		}
	}
	st.Workers = append(rows, restarting...)
	return st, procs
}

// askable is w if it can answer a status query, else nil: a worker that
// has not reported ready does not read its channel yet, nor does an
// unresponsive one, and asking them would hold the whole status up for
// the query's timeout.
func askable(w *workerProc) *workerProc {
	if !w.ready || w.killed || !w.beat.healthy() {
		return nil
	}
	return w
}

// workerRow is a live worker's status row, from the supervisor's counters.
func workerRow(g *generation, sl *slot, w *workerProc) ctl.Worker {
	// Connections as the worker counts them: done and in flight.
	active := max(0, w.active.Load())
	row := ctl.Worker{Generation: g.id, Slot: sl.index, PID: w.pid, Started: w.started,
		Active: int(active), Connections: w.conns.Load() + uint64(active), BytesSent: w.bytes.Load()}
	if sl.w == w { // a retired worker's slot history belongs to its replacement
		row.Restarts, row.LastExit = sl.restarts, sl.lastExit
	}
	switch {
	case w.killed || w.beat.replaced:
		row.State = "killed"
	case w.draining || g.draining:
		row.State = "draining"
	case w.beat.unresponsive:
		row.State = "unresponsive" // no heartbeat answer for 2 s: no new connections (health.go)
	case sl.w != w && w.ready:
		row.State = "retiring" // serves until its replacement is ready
	case w.ready:
		row.State = "ready"
	default:
		row.State = "starting"
	}
	return row
}

// statusLine is the one-line summary for systemd's STATUS=.
func (s *Supervisor) statusLine() string {
	gen := 0
	if s.current != nil {
		gen = s.current.id
	}
	return fmt.Sprintf("%s: generation %d, %s, %s in flight", s.state, gen,
		plural(s.liveWorkers(), "worker"), plural(int(s.inflight.Load()), "connection"))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func (s *Supervisor) notifyStatus() {
	if s.env.notify != nil && s.log != nil {
		s.env.notify("STATUS=" + s.statusLine())
	}
}
