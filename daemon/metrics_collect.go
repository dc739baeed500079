package daemon

import (
	"context"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/serve"
)

// The metrics /metrics serves. docs/FLEET.md lists them with their labels;
// keep the two in step (TestMetricsDocumented checks the names).
var (
	descBuildInfo = prometheus.NewDesc("zfs_serve_build_info",
		"Always 1; the labels say which zfs-serve and Go built the running supervisor.", []string{"version", "goversion"}, nil)
	descState = prometheus.NewDesc("zfs_serve_state",
		"1 for the supervisor's current state (starting, serving, reloading, draining, stopping), 0 for the others.", []string{"state"}, nil)
	descDraining = prometheus.NewDesc("zfs_serve_draining",
		"1 from the start of a drain (zctl drain, SIGTERM, SIGINT, SIGUSR1) until the supervisor exits, else 0.", nil, nil)
	descGeneration = prometheus.NewDesc("zfs_serve_generation",
		"The serving generation of workers: 1 at start, one more per successful reload (0 before the first is ready).", nil, nil)
	descWorkers = prometheus.NewDesc("zfs_serve_workers",
		"Worker processes by state, as zctl status shows them (restarting: a slot waiting to start a replacement).", []string{"state"}, nil)
	descRestarts = prometheus.NewDesc("zfs_serve_worker_restarts_total",
		"Workers of the serving generation that exited unexpectedly (crashed, killed from outside, failed to start) and were replaced.", nil, nil)
	descReloads = prometheus.NewDesc("zfs_serve_reloads_total",
		"Reloads (zctl reload, SIGHUP) by result: ok when the new generation took over, failed when the old one kept serving.", []string{"result"}, nil)
	descAccepted = prometheus.NewDesc("zfs_serve_connections_accepted_total",
		"Connections the supervisor accepted on the file listeners.", nil, nil)
	descHandedOff = prometheus.NewDesc("zfs_serve_connections_handed_off_total",
		"Connections passed to a worker (SCM_RIGHTS).", nil, nil)
	descRefused = prometheus.NewDesc("zfs_serve_connections_refused_total",
		"Connections the supervisor refused, by reason: answered busy or draining and closed (per_client also when a worker answers for it, on a proxy listener), or closed at once (proxy_untrusted).", []string{"reason"}, nil)
	descInFlight = prometheus.NewDesc("zfs_serve_connections_in_flight",
		"Connections handed to workers and not yet reported finished.", nil, nil)
	descHandoff = prometheus.NewDesc("zfs_serve_handoff_duration_seconds",
		"Supervisor's own cost per connection: from accept4 returning the connection to the sendmsg that passed it to a worker succeeding.", nil, nil)
	descSent = prometheus.NewDesc("zfs_serve_sent_bytes_total",
		"File body bytes sent to clients (as the kernel accepts them, also while a transfer is in progress), by protocol; not headers, listings or error texts.", []string{"protocol"}, nil)
	descRequests = prometheus.NewDesc("zfs_serve_requests_total",
		"Requests the workers read, by protocol (a malformed one that is refused is not counted here, but its response is).", []string{"protocol"}, nil)
	descResponses = prometheus.NewDesc("zfs_serve_responses_total",
		"Responses the workers sent, by protocol and status class (native statuses map to the class of the HTTP status for the same outcome, see docs/FLEET.md).", []string{"protocol", "class"}, nil)
	descTransfers = prometheus.NewDesc("zfs_serve_transfers_in_flight",
		"Response bodies being sent right now.", nil, nil)
	descStale = prometheus.NewDesc("zfs_serve_scrape_stale_workers",
		"Workers that did not answer this scrape in time; their counters are those of their last answer.", nil, nil)

	allDescs = []*prometheus.Desc{descBuildInfo, descState, descDraining, descGeneration, descWorkers, descRestarts, descReloads,
		descAccepted, descHandedOff, descRefused, descInFlight, descHandoff, descSent, descRequests, descResponses, descTransfers, descStale}
)

var (
	supervisorStates = []string{ctl.StateStarting, ctl.StateServing, ctl.StateReloading, ctl.StateDraining, ctl.StateStopping}
	// Every state of a worker row in zctl status (workerRow), so that the
	// series add up to the workers.
	workerStates = []string{"starting", "ready", "unresponsive", "retiring", "draining", "killed", "restarting"}
)

// scrapeWait bounds how long a scrape waits for the loop and for each
// worker: a worker that does not answer in time is counted from its last
// answer (and as stale), so a stuck worker cannot stall the scrape.
const scrapeWait = time.Second

// collector is the Supervisor as a prometheus.Collector.
type collector struct{ s *Supervisor }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	m := &s.metrics
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descBuildInfo, 1, s.opts.Version, runtime.Version())

	st, stale := s.scrapeWorkers()
	state := s.loadState().String()
	for _, x := range supervisorStates {
		gauge(descState, b2f(x == state), x)
	}
	gauge(descDraining, b2f(state == ctl.StateDraining))
	if st != nil {
		gauge(descGeneration, float64(st.Generation))
		n := map[string]int{}
		for _, w := range st.Workers {
			n[w.State]++
		}
		for _, x := range workerStates {
			gauge(descWorkers, float64(n[x]), x)
		}
	}
	counter(descRestarts, m.restarts.Load())
	counter(descReloads, m.reloadsOK.Load(), "ok")
	counter(descReloads, m.reloadsFailed.Load(), "failed")

	counter(descAccepted, m.accepted.Load())
	counter(descHandedOff, m.handedOff.Load())
	for i, r := range refuseReasons {
		counter(descRefused, m.refused[i].Load(), r)
	}
	gauge(descInFlight, float64(max(s.inflight.Load(), 0)))
	buckets, count, sum := m.handoff.snapshot()
	ch <- prometheus.MustNewConstHistogram(descHandoff, count, sum, buckets)

	t, transfers := m.tally.totals()
	counter(descSent, t.nativeBytes, serve.ProtoNative)
	counter(descSent, t.httpBytes, serve.ProtoHTTP)
	counter(descRequests, t.nativeRequests, serve.ProtoNative)
	counter(descRequests, t.httpRequests, serve.ProtoHTTP)
	for i, class := range serve.ClassNames {
		counter(descResponses, t.nativeResp[i], serve.ProtoNative, class)
		counter(descResponses, t.httpResp[i], serve.ProtoHTTP, class)
	}
	gauge(descTransfers, float64(transfers))
	gauge(descStale, float64(stale))
}

// scrapeWorkers asks every worker that can answer for its counters and
// records the answers in the tally. It returns the pool as the loop sees
// it (nil if the loop did not answer: it is exiting, or stuck) and how
// many workers did not answer.
func (s *Supervisor) scrapeWorkers() (*ctl.Status, int) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeWait)
	defer cancel()
	var st *ctl.Status
	var procs []*workerProc
	if err := s.callWithin(ctx, func() { st, procs = s.snapshot() }); err != nil {
		return nil, 0
	}
	answered := make(chan bool, len(procs))
	asked := 0
	for _, w := range procs {
		if w == nil {
			continue // not ready yet, or killed: nothing to ask
		}
		asked++
		go func() {
			ws, err := w.query(s.querySeq.Add(1), scrapeWait, statusCounters)
			if err == nil {
				s.metrics.tally.update(w, ws)
			}
			answered <- err == nil
		}()
	}
	stale := 0
	for range asked {
		if !<-answered {
			stale++
		}
	}
	return st, stale
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
