package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// metricsAddr is the address of d's metrics listener, as zctl status
// --json reports it.
func metricsAddr(t *testing.T, d *Daemon) string {
	t.Helper()
	r := d.Zctl("status", "--json")
	var st ctl.Status
	if err := json.Unmarshal([]byte(r.Stdout), &st); r.Code != 0 || err != nil {
		t.Fatalf("zctl status --json: exit %d, %v\n%s", r.Code, err, r.Stderr)
	}
	for _, l := range st.Listeners {
		if l.Name == "metrics" {
			return l.Addr
		}
	}
	t.Fatalf("zctl status --json lists no metrics listener: %+v", st.Listeners)
	return ""
}

// httpGet returns the status and body of GET url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// series is one scrape: the text, and each sample's value by its series
// as written (name{labels}).
type series struct {
	text string
	v    map[string]float64
}

// scrape gets /metrics from addr, parses it and checks it with promtool.
func scrape(t *testing.T, addr string) series {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	return parseMetrics(t, body)
}

// parseMetrics parses the text format, checks every metric's prefix, and
// runs promtool on it.
func parseMetrics(t *testing.T, body string) series {
	t.Helper()
	s := series{text: body, v: map[string]float64{}}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		s.v[line[:i]] = v
		name, _, _ := strings.Cut(line[:i], "{")
		if !strings.HasPrefix(name, "zfs_serve_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s is not prefixed zfs_serve_ (nor a Go or process metric)", name)
		}
	}
	promtool(t, body)
	return s
}

// promtool runs promtool check metrics (Prometheus's own linter) on text.
func promtool(t *testing.T, text string) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Log("promtool not installed (package prometheus; scripts/deps installs it as root): not linting /metrics with it")
		return
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// get returns the value of one series, failing if it is absent.
func (s series) get(t *testing.T, key string) float64 {
	t.Helper()
	v, ok := s.v[key]
	if !ok {
		t.Fatalf("no series %s in /metrics:\n%s", key, s.text)
	}
	return v
}

// want checks series values.
func (s series) want(t *testing.T, what string, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		if got := s.get(t, k); got != v {
			t.Errorf("%s: %s = %v, want %v", what, k, got, v)
		}
	}
}

// notBackwards checks that no counter (nor histogram bucket, count or
// sum) of before is lower in after.
func notBackwards(t *testing.T, what string, before, after series) {
	t.Helper()
	n := 0
	for k, v := range before.v {
		name, _, _ := strings.Cut(k, "{")
		if !strings.HasPrefix(name, "zfs_serve_") || !(strings.HasSuffix(name, "_total") || strings.HasSuffix(name, "_bucket") ||
			strings.HasSuffix(name, "_count") || strings.HasSuffix(name, "_sum")) {
			continue
		}
		n++
		if got, ok := after.v[k]; !ok || got < v {
			t.Errorf("%s: %s went from %v to %v (present %v)", what, k, v, got, ok)
		}
	}
	if n < 20 {
		t.Fatalf("%s: only %d counters compared", what, n)
	}
}

// TestMetrics: with --metrics, the supervisor serves Prometheus metrics
// that count native and HTTP downloads exactly (bytes by protocol,
// requests, responses by class), never go backwards when a worker is
// killed, keep what a reload's drained generation served, pass promtool,
// and /healthz turns 503 the moment a drain starts.
func TestMetrics(t *testing.T) {
	needTool(t, "curl")
	root := t.TempDir()
	sumA := WriteRandom(t, filepath.Join(root, "a.bin"), 3<<20+7)
	sumB := WriteRandom(t, filepath.Join(root, "b.bin"), 1<<20+3)
	sumBig := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	const sizeA, sizeB = 3<<20 + 7, 1<<20 + 3
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2, Args: []string{"--metrics", "127.0.0.1:0"}})
	addr := metricsAddr(t, d)
	if code, body := httpGet(t, "http://"+addr+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz while serving: %d %q", code, body)
	}
	first := scrape(t, addr)
	first.want(t, "at start", map[string]float64{
		`zfs_serve_sent_bytes_total{protocol="native"}`:          0,
		`zfs_serve_workers{state="ready"}`:                       2,
		`zfs_serve_generation`:                                   1,
		`zfs_serve_draining`:                                     0,
		`zfs_serve_state{state="serving"}`:                       1,
		`zfs_serve_connections_refused_total{reason="draining"}`: 0,
	})
	if !strings.Contains(first.text, "zfs_serve_build_info{goversion=\"go") {
		t.Errorf("no build info:\n%s", first.text)
	}

	out := t.TempDir()
	fetchA := func() {
		t.Helper()
		dst := filepath.Join(out, "a.bin")
		os.Remove(dst)
		if r := Zfetch(t, "-q", "-o", dst, d.URL("/a.bin")); r.Code != 0 || FileSHA256(t, dst) != sumA {
			t.Fatalf("zfetch a.bin: exit %d %s", r.Code, r.Stderr)
		}
	}
	curlB := func() {
		t.Helper()
		dst := filepath.Join(out, "b.bin")
		if r := curl(t, "-f", "-o", dst, "http://"+d.Addr+"/b.bin"); r.Code != 0 || FileSHA256(t, dst) != sumB {
			t.Fatalf("curl b.bin: exit %d %s", r.Code, r.Stderr)
		}
	}
	fetchA()
	if r := Zfetch(t, "-q", "-o", filepath.Join(out, "x"), d.URL("/missing")); r.Code == 0 {
		t.Fatal("zfetch of a missing file succeeded")
	}
	curlB()
	if r := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "http://"+d.Addr+"/missing"); r.Stdout != "404" {
		t.Fatalf("curl of a missing file: %q %s", r.Stdout, r.Stderr)
	}
	st := d.MustStatus()
	native := float64(st.Totals.NativeRequests)
	got := scrape(t, addr)
	got.want(t, "after the downloads", map[string]float64{
		`zfs_serve_sent_bytes_total{protocol="native"}`:            sizeA,
		`zfs_serve_sent_bytes_total{protocol="http"}`:              sizeB,
		`zfs_serve_requests_total{protocol="native"}`:              native,
		`zfs_serve_requests_total{protocol="http"}`:                2,
		`zfs_serve_responses_total{class="2xx",protocol="http"}`:   1,
		`zfs_serve_responses_total{class="4xx",protocol="http"}`:   1,
		`zfs_serve_responses_total{class="5xx",protocol="http"}`:   0,
		`zfs_serve_responses_total{class="4xx",protocol="native"}`: 1, // zfetch asks for the missing file once
		`zfs_serve_responses_total{class="5xx",protocol="native"}`: 0,
		`zfs_serve_transfers_in_flight`:                            0,
		`zfs_serve_scrape_stale_workers`:                           0,
	})
	if n2 := got.get(t, `zfs_serve_responses_total{class="2xx",protocol="native"}`); n2+1 != native {
		t.Errorf("native responses: %v 2xx + 1 4xx, want one per request (%v)", n2, native)
	}
	accepted := got.get(t, "zfs_serve_connections_accepted_total")
	if accepted < 4 || got.get(t, "zfs_serve_connections_handed_off_total") != accepted ||
		got.get(t, "zfs_serve_handoff_duration_seconds_count") != accepted || got.get(t, "zfs_serve_handoff_duration_seconds_sum") <= 0 {
		t.Errorf("accepted %v, handed off %v, handoffs timed %v (sum %vs); want at least 4, all handed off and timed",
			accepted, got.get(t, "zfs_serve_connections_handed_off_total"), got.get(t, "zfs_serve_handoff_duration_seconds_count"),
			got.get(t, "zfs_serve_handoff_duration_seconds_sum"))
	}
	t.Logf("handoff: %v connections, %.1fµs on average", accepted, 1e6*got.get(t, "zfs_serve_handoff_duration_seconds_sum")/accepted)
	notBackwards(t, "after the downloads", first, got)

	// A worker killed: its counts stay (they were scraped), its
	// replacement starts from zero, and nothing goes backwards.
	victim := WorkerPIDs(st)[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.WaitStatus(15*time.Second, "a replacement for the killed worker", func(st *ctlStatus) bool {
		pids := WorkerPIDs(st)
		return len(pids) == 2 && !slices.Contains(pids, victim) && st.Workers[0].State == "ready" && st.Workers[1].State == "ready"
	})
	afterKill := scrape(t, addr)
	notBackwards(t, "after a worker was killed", got, afterKill)
	afterKill.want(t, "after a worker was killed", map[string]float64{
		`zfs_serve_sent_bytes_total{protocol="native"}`: sizeA,
		`zfs_serve_sent_bytes_total{protocol="http"}`:   sizeB,
		`zfs_serve_worker_restarts_total`:               1,
	})

	// A reload: what the old generation served after the last scrape is
	// in its final report, so nothing is lost.
	fetchA()
	curlB()
	if r := d.Zctl("reload", "--wait"); r.Code != 0 {
		t.Fatalf("zctl reload: %d %s", r.Code, r.Stderr)
	}
	d.WaitStatus(15*time.Second, "the old generation gone", func(st *ctlStatus) bool {
		return st.Generation == 2 && len(WorkerPIDs(st)) == 2
	})
	if a := metricsAddr(t, d); a != addr {
		t.Fatalf("the reload moved the metrics listener from %s to %s", addr, a)
	}
	afterReload := scrape(t, addr)
	notBackwards(t, "after a reload", afterKill, afterReload)
	afterReload.want(t, "after a reload", map[string]float64{
		`zfs_serve_sent_bytes_total{protocol="native"}`:          2 * sizeA,
		`zfs_serve_sent_bytes_total{protocol="http"}`:            2 * sizeB,
		`zfs_serve_requests_total{protocol="http"}`:              3,
		`zfs_serve_responses_total{class="2xx",protocol="http"}`: 2,
		`zfs_serve_reloads_total{result="ok"}`:                   1,
		`zfs_serve_reloads_total{result="failed"}`:               0,
		`zfs_serve_generation`:                                   2,
	})

	// A drain with a transfer in flight: /healthz says 503 from its
	// start, /livez stays 200, and /metrics says draining.
	gate := make(chan struct{})
	slow := startSlowGet(t, d.Addr, "/big.bin", gate)
	d.WaitStatus(5*time.Second, "the slow transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	if r := d.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %d %s", r.Code, r.Stderr)
	}
	if code, body := httpGet(t, "http://"+addr+"/healthz"); code != 503 || body != "unavailable: draining\n" {
		t.Errorf("/healthz while draining: %d %q", code, body)
	}
	if code, body := httpGet(t, "http://"+addr+"/livez"); code != 200 || body != "ok: draining\n" {
		t.Errorf("/livez while draining: %d %q", code, body)
	}
	draining := scrape(t, addr)
	draining.want(t, "while draining", map[string]float64{
		`zfs_serve_draining`:                1,
		`zfs_serve_state{state="draining"}`: 1,
		`zfs_serve_transfers_in_flight`:     1,
		`zfs_serve_connections_in_flight`:   1,
	})
	notBackwards(t, "while draining", afterReload, draining)
	close(gate)
	slow.wait(t, sumBig)
	slow.c.Close()
	if code := d.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("exit status %d after the drain", code)
	}
}
