package daemon

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/serve"
	"github.com/zfs-serve/zfs-serve/wire"
)

// loopSupervisor returns a Supervisor, in state, whose events are handled
// (Supervisor.handle) until the test ends. Not the real loop, which ends
// once a drain has no worker left: these tests set every state without
// workers.
func loopSupervisor(t *testing.T, state supState) *Supervisor {
	t.Helper()
	s := newSupervisor(Options{Version: "1.2.3-test", Config: &config.Config{Workers: 1}},
		env{notify: func(string) {}, clock: systemClock{}, startProc: startOSProc})
	s.log = quietLog()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case ev := <-s.events:
				s.handle(ev)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done; close(s.finished) })
	s.call(t.Context(), func() { s.setState(state) })
	return s
}

func TestHistogram(t *testing.T) {
	var h histogram
	for _, d := range []time.Duration{-time.Second, 0, 5 * time.Microsecond, 6 * time.Microsecond, 2 * time.Millisecond, time.Minute} {
		h.observe(d)
	}
	buckets, count, sum := h.snapshot()
	if count != 6 || buckets[5e-6] != 3 || buckets[1e-5] != 4 || buckets[0.0025] != 5 || buckets[1] != 5 || len(buckets) != len(handoffBuckets) {
		t.Fatalf("count %d buckets %v", count, buckets)
	}
	if want := 60.002011; sum < want-1e-9 || sum > want+1e-9 {
		t.Fatalf("sum %v, want %v", sum, want)
	}
}

// TestCollector: the supervisor's counters and the workers' totals come
// out under their names and labels, and pass the linter promtool uses.
func TestCollector(t *testing.T) {
	s := loopSupervisor(t, stateServing)
	m := &s.metrics
	m.accepted.Add(7)
	m.handedOff.Add(5)
	m.refuse(refusedMaxConns, 1)
	m.refuse(noWorkerReason(wire.StatusDraining), 1)
	m.reloadsOK.Add(2)
	m.restarts.Add(1)
	m.handoff.observe(20 * time.Microsecond)
	s.inflight.Store(3)
	m.tally.update(&workerProc{}, &workerStatus{BytesSent: 1000, HTTPBytes: 400, Native: 3, HTTP: 4,
		NativeResp: serve.Classes{2, 0, 1, 0}, HTTPResp: serve.Classes{2, 1, 0, 1}, Omitted: 2})

	want := `
# HELP zfs_serve_connections_refused_total Connections the supervisor refused, by reason: answered busy or draining and closed (per_client also when a worker answers for it, on a proxy listener), or closed at once (proxy_untrusted).
# TYPE zfs_serve_connections_refused_total counter
zfs_serve_connections_refused_total{reason="busy_no_worker"} 0
zfs_serve_connections_refused_total{reason="draining"} 1
zfs_serve_connections_refused_total{reason="handoff_failed"} 0
zfs_serve_connections_refused_total{reason="max_connections"} 1
zfs_serve_connections_refused_total{reason="no_fds"} 0
zfs_serve_connections_refused_total{reason="per_client"} 0
zfs_serve_connections_refused_total{reason="proxy_untrusted"} 0
# HELP zfs_serve_sent_bytes_total File body bytes sent to clients (as the kernel accepts them, also while a transfer is in progress), by protocol; not headers, listings or error texts.
# TYPE zfs_serve_sent_bytes_total counter
zfs_serve_sent_bytes_total{protocol="http"} 400
zfs_serve_sent_bytes_total{protocol="native"} 600
# HELP zfs_serve_responses_total Responses the workers sent, by protocol and status class (native statuses map to the class of the HTTP status for the same outcome, see docs/FLEET.md).
# TYPE zfs_serve_responses_total counter
zfs_serve_responses_total{class="2xx",protocol="http"} 2
zfs_serve_responses_total{class="2xx",protocol="native"} 2
zfs_serve_responses_total{class="3xx",protocol="http"} 1
zfs_serve_responses_total{class="3xx",protocol="native"} 0
zfs_serve_responses_total{class="4xx",protocol="http"} 0
zfs_serve_responses_total{class="4xx",protocol="native"} 1
zfs_serve_responses_total{class="5xx",protocol="http"} 1
zfs_serve_responses_total{class="5xx",protocol="native"} 0
# HELP zfs_serve_state 1 for the supervisor's current state (starting, serving, reloading, draining, stopping), 0 for the others.
# TYPE zfs_serve_state gauge
zfs_serve_state{state="draining"} 0
zfs_serve_state{state="reloading"} 0
zfs_serve_state{state="serving"} 1
zfs_serve_state{state="starting"} 0
zfs_serve_state{state="stopping"} 0
`
	if err := testutil.CollectAndCompare(collector{s}, strings.NewReader(want),
		"zfs_serve_connections_refused_total", "zfs_serve_sent_bytes_total", "zfs_serve_responses_total", "zfs_serve_state"); err != nil {
		t.Error(err)
	}
	for name, v := range map[string]float64{
		"zfs_serve_connections_accepted_total": 7, "zfs_serve_connections_handed_off_total": 5, "zfs_serve_connections_in_flight": 3,
		"zfs_serve_transfers_in_flight": 2, "zfs_serve_worker_restarts_total": 1, "zfs_serve_draining": 0,
	} {
		if got := gathered(t, s, name); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{s})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != len(allDescs) {
		t.Errorf("%d metric families, want %d", len(mfs), len(allDescs))
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %+v", err, problems)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "zfs_serve_") {
			t.Errorf("metric %s is not prefixed zfs_serve_", mf.GetName())
		}
	}
}

// gathered is the value of the single-series metric name.
func gathered(t *testing.T, s *Supervisor, name string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{s})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			m := mf.Metric[0]
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no single series %s", name)
	return 0
}

// TestMetricsDocumented: docs/FLEET.md names every metric.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/FLEET.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for _, d := range allDescs {
		m := name.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		if !strings.Contains(string(doc), "`"+m[1]+"`") {
			t.Errorf("docs/FLEET.md does not document %s", m[1])
		}
	}
}

// TestMetricsHandler: the health checks follow the state, and the
// listener answers nothing but GET or HEAD of its four paths.
func TestMetricsHandler(t *testing.T) {
	s := loopSupervisor(t, stateStarting)
	srv := httptest.NewServer(s.metricsHandler())
	defer srv.Close()
	get := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ready := []*workerProc{{}}
	for _, tc := range []struct {
		state   supState
		workers []*workerProc
		healthz int
		body    string
	}{
		{stateStarting, nil, 503, "unavailable: starting\n"},
		{stateServing, ready, 200, "ok\n"},
		{stateServing, nil, 503, "unavailable: no worker is ready\n"},
		{stateReloading, ready, 200, "ok\n"},
		{stateDraining, nil, 503, "unavailable: draining\n"},
		{stateStopping, nil, 503, "unavailable: stopping\n"},
	} {
		s.call(t.Context(), func() { s.setState(tc.state) })
		ws := tc.workers
		s.dispatch.Store(&ws)
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, body := get("GET", path); code != tc.healthz || body != tc.body {
				t.Errorf("%s, %d workers: GET %s = %d %q, want %d %q", tc.state, len(ws), path, code, body, tc.healthz, tc.body)
			}
		}
		if code, body := get("GET", "/livez"); code != 200 || body != "ok: "+tc.state.String()+"\n" {
			t.Errorf("%s: GET /livez = %d %q", tc.state, code, body)
		}
	}
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"HEAD", "/healthz", 503},
		{"GET", "/metrics", 200},
		{"HEAD", "/metrics", 200},
		{"POST", "/metrics", 405},
		{"DELETE", "/healthz", 405},
		{"GET", "/", 404},
		{"GET", "/metrics/x", 404},
		{"POST", "/nope", 404},
	} {
		if code, _ := get(tc.method, tc.path); code != tc.code {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, code, tc.code)
		}
	}
	if _, body := get("GET", "/metrics"); !strings.Contains(body, `zfs_serve_build_info{goversion="go`) ||
		!strings.Contains(body, `version="1.2.3-test"} 1`) || !strings.Contains(body, "process_open_fds ") {
		t.Errorf("GET /metrics:\n%s", body)
	}
}

// TestMetricsListenerReload: a reload that keeps metrics_listen keeps the
// listener (and its port); one that changes it binds the new address
// first (a bind failure fails the reload) and switches at the takeover;
// an aborted reload closes what it bound.
func TestMetricsListenerReload(t *testing.T) {
	s := loopSupervisor(t, stateServing)
	s.cfg = &config.Config{MetricsListen: "127.0.0.1:0"}
	if err := s.openMetrics(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.closeMetrics)
	first := s.metrics.listener
	if err := s.prepareMetrics(&config.Config{MetricsListen: "127.0.0.1:0"}); err != nil || s.metrics.change {
		t.Fatalf("same address: %v, change %v", err, s.metrics.change)
	}
	s.applyMetrics()
	if s.metrics.listener != first {
		t.Fatal("an unchanged metrics_listen replaced the listener")
	}
	if l := s.appendMetricsListener(nil); len(l) != 1 || l[0].Name != "metrics" || l[0].Addr != first.addr {
		t.Fatalf("status listeners %+v", l)
	}

	// A new address: bound at once, in force at the takeover.
	if err := s.prepareMetrics(&config.Config{MetricsListen: "127.0.0.2:0"}); err != nil {
		t.Fatal(err)
	}
	next := s.metrics.pending
	if next == nil || s.metrics.listener != first {
		t.Fatal("the new listener was not prepared beside the old")
	}
	s.applyMetrics()
	if s.metrics.listener != next || s.metrics.pending != nil {
		t.Fatal("the new listener is not in force")
	}
	if !waitClosed(first.addr) {
		t.Errorf("the old listener %s still accepts", first.addr)
	}

	// An aborted reload closes what it bound and changes nothing.
	if err := s.prepareMetrics(&config.Config{MetricsListen: "127.0.0.3:0"}); err != nil {
		t.Fatal(err)
	}
	aborted := s.metrics.pending.addr
	s.abortMetrics()
	s.applyMetrics()
	if s.metrics.listener != next || !waitClosed(aborted) {
		t.Fatal("an aborted reload changed the listener or left its own open")
	}

	// A bind failure fails the reload: an address another socket holds
	// (not this daemon's own, which a reload may name: it takes the
	// port it already has).
	defer func(d time.Duration) { probeTimeout = d }(probeTimeout)
	probeTimeout = 300 * time.Millisecond
	busy, err := net.Listen("tcp", "127.0.0.4:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := s.prepareMetrics(&config.Config{MetricsListen: busy.Addr().String()}); err == nil || !strings.Contains(err.Error(), "metrics_listen") {
		t.Fatalf("binding a busy address: %v", err)
	}

	// "" turns metrics off at the takeover.
	if err := s.prepareMetrics(&config.Config{}); err != nil || !s.metrics.change {
		t.Fatal(err)
	}
	s.applyMetrics()
	if s.metrics.listener != nil || !waitClosed(next.addr) {
		t.Fatal("metrics_listen = \"\" did not close the listener")
	}
}

// waitClosed reports whether addr refuses connections within a few seconds.
func waitClosed(addr string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/livez")
		if err != nil {
			return true
		}
		resp.Body.Close()
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// TestLivezStuckLoop: /livez answers 503 within its second when the
// supervisor's loop is stuck, even with the event queue full.
func TestLivezStuckLoop(t *testing.T) {
	s := &Supervisor{log: quietLog(), events: make(chan event, 2), finished: make(chan struct{})}
	s.stateNow.Store(int32(stateServing))
	s.events <- evCall{}
	s.events <- evCall{} // full, and nothing reads it
	start := time.Now()
	code, msg := s.alive()
	if code != 503 || !strings.Contains(msg, "does not answer") {
		t.Fatalf("stuck loop: %d %q", code, msg)
	}
	t.Logf("answered in %v", time.Since(start))
	close(s.finished)
	if code, _ := s.alive(); code != 503 {
		t.Fatalf("exiting: %d", code)
	}
}

// TestWorkersGaugeCountsEvery: zfs_serve_workers has a series for every
// state zctl status shows, so that its sum is the number of workers; an
// unresponsive worker is one.
func TestWorkersGaugeCountsEvery(t *testing.T) {
	s := loopSupervisor(t, stateServing)
	g := &generation{id: 1, cfg: s.cfg}
	for i, w := range []*workerProc{{pid: 100}, {pid: 101, ready: true, beat: heartbeat{unresponsive: true}}} {
		sl := &slot{index: i, w: w}
		w.gen, w.slot = g, sl
		g.slots = append(g.slots, sl)
	}
	s.call(t.Context(), func() { s.gens, s.current = []*generation{g}, g })
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{s})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byState := map[string]float64{}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "zfs_serve_workers" {
			continue
		}
		for _, m := range mf.Metric {
			byState[m.Label[0].GetValue()] = m.Gauge.GetValue()
			sum += m.Gauge.GetValue()
		}
	}
	if sum != 2 || byState["unresponsive"] != 1 || byState["starting"] != 1 {
		t.Errorf("zfs_serve_workers %v, want 2 workers: 1 starting, 1 unresponsive", byState)
	}
}
