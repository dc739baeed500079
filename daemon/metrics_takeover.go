package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// Taking the metrics listener over from a draining instance, as the file
// listeners are (takeover.go). A load balancer checks /healthz on the
// metrics port: when a new instance replaces a draining one on the same
// box, with the same configuration, the health checks must reach the new
// one, which answers 200, not the draining one, which answers 503 until
// it exits. So metrics_listen is bound with SO_REUSEPORT, a new instance
// binds it only if nothing answers there or a draining zfs-serve does
// (its /healthz says "unavailable: draining"), and a draining instance
// steers new connections of its metrics socket to the new one's, as it
// does for its file listeners. A socket systemd passes stays systemd's.

// checkMetricsTakeover reports whether addr may be bound: nothing answers
// there, or a draining (or stopping) zfs-serve's metrics listener does
// (draining is then true).
func checkMetricsTakeover(addr string) (draining bool, err error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "0" {
		return false, nil // bind reports a bad address; port 0 is always a new one
	}
	if err := notLocal(addr); err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	if err != nil {
		return false, nil
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	resp, err := c.Do(req)
	if errors.Is(err, unix.ECONNREFUSED) {
		return false, nil // nobody listens: bind decides
	}
	what := "it does not answer"
	if err == nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		body := strings.TrimSpace(string(b))
		line, _, _ := strings.Cut(body, "\n")
		if resp.StatusCode == http.StatusServiceUnavailable && (line == "unavailable: "+ctl.StateDraining || line == "unavailable: "+ctl.StateStopping) {
			return true, nil
		}
		what = fmt.Sprintf("its /healthz answers %d %q", resp.StatusCode, body)
	}
	return false, fmt.Errorf("address already in use: %s, unlike a draining zfs-serve (a new instance takes a port over only from a draining one)", what)
}

// steerMetrics is steerListeners for the metrics listener this instance
// bound.
func (s *Supervisor) steerMetrics() {
	ml := s.metrics.listener
	if ml == nil || ml.activated || ml.steered {
		return
	}
	ml.steered = true
	if ml.srv != nil {
		// Keep-alive ends too (idle connections close, busy ones after
		// their response), so a scraper's next request makes a new
		// connection, which goes to the new instance.
		ml.srv.SetKeepAlivesEnabled(false)
	}
	sc, ok := ml.ln.(syscall.Conn)
	if !ok {
		return
	}
	if err := steerAway(sc); err != nil {
		s.log.Warn("cannot steer health checks to a new instance; they get 503 until this one exits", "addr", ml.addr, "err", err)
		return
	}
	if w, err := watchGroup(sc, ml.addr); err != nil {
		s.log.Debug("cannot follow the metrics listener's SO_REUSEPORT group (sock_diag)", "addr", ml.addr, "err", err)
	} else {
		ml.watch.Store(w)
	}
}
