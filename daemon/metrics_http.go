package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/internal/ratelog"
)

// The metrics listener: plain net/http in the supervisor (it is not the
// data path), on metrics_listen or on systemd's socket named "metrics".
// GET or HEAD of /metrics, /healthz, /readyz and /livez; any other path
// is 404, another method on those 405. docs/FLEET.md says what each
// answers.

// metricsListener is one listening socket with its HTTP server.
type metricsListener struct {
	configured string // metrics_listen that bound it; "" when socket-activated
	activated  bool
	addr       string
	ln         net.Listener
	srv        *http.Server
	tookOver   bool                       // bound beside a draining instance's (metrics_takeover.go)
	steered    bool                       // (loop) steerAway done (a drain started)
	watch      atomic.Pointer[groupWatch] // its SO_REUSEPORT group once steered (group.go)
	left       atomic.Bool                // closed by leaveMetrics
}

// openMetrics opens the metrics listener at start: systemd's socket named
// "metrics" if there is one, else metrics_listen if set.
func (s *Supervisor) openMetrics(activated *os.File) error {
	var ml *metricsListener
	switch {
	case activated != nil:
		ln, err := net.FileListener(activated)
		activated.Close()
		if err != nil {
			return fmt.Errorf("socket-activated fd %q is not a listening stream socket: %w", FDNameMetrics, err)
		}
		ml = &metricsListener{activated: true, addr: ln.Addr().String(), ln: ln}
		if s.cfg.MetricsListen != "" {
			s.log.Info("socket-activated metrics listener: metrics_listen is not used", "metrics_listen", s.cfg.MetricsListen)
		}
	case s.cfg.MetricsListen != "":
		var err error
		if ml, err = s.bindMetrics(s.cfg.MetricsListen); err != nil {
			return err
		}
	default:
		return nil
	}
	s.serveMetrics(ml)
	return nil
}

// bindMetrics binds metrics_listen, with SO_REUSEPORT so that a new
// instance can take it over from a draining one, as the file listeners
// (metrics_takeover.go).
func (s *Supervisor) bindMetrics(addr string) (*metricsListener, error) {
	unlock := s.lockPort(addr)
	defer unlock()
	draining := false
	if ml := s.metrics.listener; ml == nil || !probesOwn(addr, []string{ml.addr}) {
		var err error
		if draining, err = checkMetricsTakeover(addr); err != nil {
			return nil, fmt.Errorf("metrics_listen %s: %w", addr, err)
		}
	}
	beforeBind()
	ln, err := listenReusePort(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen %s: %w", addr, err)
	}
	return &metricsListener{configured: addr, addr: ln.Addr().String(), ln: ln, tookOver: draining}, nil
}

// serveMetrics puts ml in force.
func (s *Supervisor) serveMetrics(ml *metricsListener) {
	ml.srv = &http.Server{
		Handler:           s.metricsHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.metrics.listener = ml
	how := "metrics listening"
	if ml.activated {
		how += " (socket-activated)"
	}
	s.log.Info(how, "name", FDNameMetrics, "addr", ml.addr)
	if ml.tookOver {
		s.log.Info("a draining zfs-serve answers on the metrics address: taking it over; health checks come here", "addr", ml.addr)
	}
	ln := &connLimit{Listener: watchedListener{Listener: ml.ln, onAccept: func() {
		if w := ml.watch.Load(); w != nil && w.accepted(time.Now()) {
			s.post(evLeaveMetrics{ml})
		}
	}}, max: maxMetricsConns, log: s.log}
	go func() {
		if err := ml.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !ml.left.Load() {
			s.log.Error("metrics listener failed", "addr", ml.addr, "err", err)
		}
	}()
}

// maxMetricsConns bounds the connections the metrics listener holds open
// at once. It is not authenticated, and each connection is one of the
// supervisor's descriptors, which the file listeners' accept loops, the
// control socket and the workers' channels share: without a bound,
// whoever reaches the port could hold enough (a connection lasts up to
// ReadHeaderTimeout without a request, IdleTimeout after one) that the
// supervisor accepted neither file connections nor zctl. Scrapers and a
// load balancer's health checks need a few.
const maxMetricsConns = 64

// connLimit closes at once the connections it accepts beyond max open
// (logged at most once a second), so that they cost no descriptor for
// longer than that.
type connLimit struct {
	net.Listener
	max  int64
	log  *slog.Logger
	open atomic.Int64
	rl   ratelog.Limiter
}

func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return &limitedConn{Conn: c, l: l}, nil
		}
		l.open.Add(-1)
		c.Close()
		l.rl.Log(l.log, time.Now(), slog.LevelWarn, "metrics connection closed: too many open", "max", l.max, "client", c.RemoteAddr().String())
	}
}

// limitedConn gives its place back to its connLimit once closed.
type limitedConn struct {
	net.Conn
	l    *connLimit
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// close stops ml: scrapes in progress get a moment to finish.
func (ml *metricsListener) close() {
	if ml.srv == nil {
		ml.ln.Close()
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if ml.srv.Shutdown(ctx) != nil {
			ml.srv.Close()
		}
	}()
}

// closeMetrics closes the metrics listeners when the supervisor exits.
func (s *Supervisor) closeMetrics() {
	for _, ml := range []*metricsListener{s.metrics.listener, s.metrics.pending} {
		if ml != nil && ml.srv != nil {
			ml.srv.Close()
		} else if ml != nil {
			ml.ln.Close()
		}
	}
	s.metrics.listener, s.metrics.pending = nil, nil
}

// prepareMetrics binds the metrics listener a reload's configuration asks
// for, if it differs from the one in force; applyMetrics puts it in force
// when the new generation takes over, abortMetrics undoes this. An
// unchanged address keeps its listener (and an ephemeral port its port).
func (s *Supervisor) prepareMetrics(cfg *config.Config) error {
	m := &s.metrics
	m.change = false
	cur := ""
	if m.listener != nil {
		if m.listener.activated {
			return nil // systemd's socket: metrics_listen is not used
		}
		cur = m.listener.configured
	}
	if cfg.MetricsListen == cur {
		return nil
	}
	if cfg.MetricsListen != "" {
		ml, err := s.bindMetrics(cfg.MetricsListen)
		if err != nil {
			return err
		}
		m.pending = ml
	}
	m.change = true
	return nil
}

func (s *Supervisor) applyMetrics() {
	m := &s.metrics
	if !m.change {
		return
	}
	m.change = false
	if m.listener != nil {
		s.log.Info("metrics listener closed by reload", "addr", m.listener.addr)
		m.listener.close()
		m.listener = nil
	}
	if m.pending != nil {
		s.serveMetrics(m.pending)
		m.pending = nil
	}
}

func (s *Supervisor) abortMetrics() {
	m := &s.metrics
	if m.pending != nil {
		m.pending.close()
		m.pending = nil
	}
	m.change = false
}

// appendMetricsListener adds the metrics listener to a status's listeners.
func (s *Supervisor) appendMetricsListener(ls []ctl.Listener) []ctl.Listener {
	if ml := s.metrics.listener; ml != nil {
		ls = append(ls, ctl.Listener{Name: FDNameMetrics, Addr: ml.addr, Activated: ml.activated})
	}
	return ls
}

// metricsHandler answers the metrics listener's requests.
func (s *Supervisor) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{s}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(s.log.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h http.Handler
		switch r.URL.Path {
		case "/metrics":
			h = metrics
		case "/healthz", "/readyz":
			h = plain(s.health)
		case "/livez":
			h = plain(s.alive)
		default:
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: GET or HEAD", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// plain answers with f's status and a one-line text.
func plain(f func() (int, string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, msg := f()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		fmt.Fprintln(w, msg)
	})
}

// health is /healthz (and /readyz): should a load balancer send new
// connections here? 200 while a worker takes them: serving, and during a
// reload while the old generation serves. 503 while starting, from the
// first moment of a drain (or kill) to the exit, and while no worker of
// the serving generation is ready (all crashed and restarting), when new
// connections are refused busy.
func (s *Supervisor) health() (int, string) {
	state := s.loadState()
	if state.serves() {
		if len(*s.dispatch.Load()) == 0 {
			return http.StatusServiceUnavailable, "unavailable: no worker is ready"
		}
		return http.StatusOK, "ok"
	}
	return http.StatusServiceUnavailable, "unavailable: " + state.String()
}

// alive is /livez: is the supervisor's event loop turning? 200 in every
// state, draining included (a drain must not be cut short by a liveness
// probe); 503 if the loop does not run an event within a second.
func (s *Supervisor) alive() (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.callWithin(ctx, func() {}); err != nil {
		return http.StatusServiceUnavailable, "unavailable: the supervisor's loop does not answer: " + err.Error()
	}
	return http.StatusOK, "ok: " + s.loadState().String()
}

// callWithin is call, bounded by ctx also while it waits for room in the
// event queue: a stuck loop must not hold a probe or a scrape forever.
func (s *Supervisor) callWithin(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case s.events <- evCall{f: f, done: done}:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.finished:
		return errors.New("zfs-serve is exiting")
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.finished:
		return errors.New("zfs-serve is exiting")
	}
}
