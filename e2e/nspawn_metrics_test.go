package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

const unitMetrics = "zfs-serve-metrics.socket"

// metricsSocket: zfs-serve-metrics.socket is shipped disabled; enabled
// and started, it gives the supervisor its metrics listener by name
// (FileDescriptorName=metrics), socket-activated and in zctl status, with
// /healthz and /metrics (a download counted, promtool content) answered
// inside the unit's sandbox. Disabled again, the service runs without it.
func (z *zfsContainer) metricsSocket(t *testing.T) {
	needTool(t, "curl")
	if s := strings.TrimSpace(z.Exec(time.Minute, "systemctl", "is-enabled", unitMetrics).Stdout); s != "disabled" {
		t.Errorf("%s is %q after install, want disabled (shipped, not enabled)", unitMetrics, s)
	}
	// systemd refuses to start a socket whose service runs: stop (a
	// drain), then start both, as docs/FLEET.md says.
	z.Must("systemctl", "enable", unitMetrics)
	z.Must("systemctl", "stop", unitService)
	z.Must("systemctl", "start", unitMetrics, unitService)
	want := ctl.Listener{Name: "metrics", Addr: "127.0.0.1:7071", Activated: true}
	if st := z.status(t); len(st.Listeners) != 2 || st.Listeners[1] != want {
		t.Fatalf("listeners %+v, want zfs then %+v", st.Listeners, want)
	}
	get := func(path string) string {
		t.Helper()
		r := runCmd(t, time.Minute, z.NetCommand("curl", "-sS", "--max-time", "30", "-w", "%{http_code}", "http://127.0.0.1:7071"+path))
		if r.Code != 0 {
			t.Fatalf("curl %s: exit %d %s", path, r.Code, r.Stderr)
		}
		return r.Stdout
	}
	if got := get("/healthz"); got != "ok\n200" {
		t.Errorf("/healthz: %q, want ok and 200", got)
	}
	metrics := func() series {
		t.Helper()
		body := get("/metrics")
		body, ok := strings.CutSuffix(body, "200")
		if !ok {
			t.Fatalf("GET /metrics did not answer 200:\n%s", body)
		}
		return parseMetrics(t, body)
	}
	const key = `zfs_serve_sent_bytes_total{protocol="native"}`
	before := metrics().get(t, key)
	z.fetch(t, "/small.bin", z.smallSHA)
	if after := metrics().get(t, key); after-before != 1<<20+3 {
		t.Errorf("%s went from %v to %v over a download of %d bytes", key, before, after, 1<<20+3)
	}
	if j := z.Must("journalctl", "-u", unitService, "--no-pager", "-o", "cat"); !strings.Contains(j,
		`msg="metrics listening (socket-activated)" proc=supervisor name=metrics addr=127.0.0.1:7071`) {
		t.Errorf("the journal does not say the metrics socket was taken:\n%s", tail(j, 30))
	}

	z.Must("systemctl", "disable", "--now", unitMetrics)
	z.Must("systemctl", "restart", unitService)
	if st := z.status(t); len(st.Listeners) != 1 || st.Listeners[0].Name != "zfs" {
		t.Errorf("listeners %+v after disabling %s, want the zfs one alone", st.Listeners, unitMetrics)
	}
}
