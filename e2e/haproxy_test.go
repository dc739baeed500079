package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The fleet test: real HAProxy (Debian's haproxy package; scripts/deps
// installs it) in front of two zfs-serve instances, as docs/FLEET.md
// configures it.

// Loopback addresses that tell the parties apart in the backends' logs
// and status: HAProxy connects to the backends from haproxySource, and
// curl connects to HAProxy from curlSource with a local port in
// curlPorts (zfetch connects from 127.0.0.1). proxy_trusted on the
// backends admits only haproxySource.
const (
	haproxySource = "127.0.0.9"
	curlSource    = "127.0.0.3"
	curlPortLo    = 41000
	curlPortHi    = 41999
)

// haproxyConfig is the configuration docs/FLEET.md shows, with loopback
// addresses: mode tcp, send-proxy-v2, health checks of /healthz on each
// backend's metrics listener, redispatch.
func haproxyConfig(frontend string, backends, metrics []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn 2000

defaults
    mode tcp
    timeout connect 2s
    timeout client 2m
    timeout server 2m
    retries 3
    option redispatch

frontend zfs
    bind %s
    default_backend zfs_serve

backend zfs_serve
    balance leastconn
    option httpchk GET /healthz
`, frontend)
	for i, a := range backends {
		_, mport, _ := net.SplitHostPort(metrics[i])
		fmt.Fprintf(&b, "    server box%d %s send-proxy-v2 source %s check port %s inter 300ms fall 2 rise 1\n", i+1, a, haproxySource, mport)
	}
	return b.String()
}

// startHAProxy runs haproxy in the foreground (-db) with cfg and stops it
// (by its pid) at cleanup.
func startHAProxy(t *testing.T, cfg, frontend string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	logf, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("haproxy", "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "haproxy.log"))
			t.Logf("haproxy log:\n%s", tail(string(b), 30))
		}
	})
	if !waitFor(10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", frontend, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("haproxy does not listen on %s", frontend)
	}
}

// curlBounded runs curl (from any goroutine) with a bound on its time.
func curlBounded(args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// TestHAProxyRollingRestart: while 64 downloads (zfetch over the native
// protocol and curl over HTTP, rate-limited so that they overlap) go
// through HAProxy (mode tcp, send-proxy-v2) to two zfs-serve instances,
// each instance in turn is drained and replaced by a new one with the
// same configuration (zctl drain, then a new instance takes the port
// over). Every download completes byte-exact, and the backends see the
// real clients (zfetch's 127.0.0.1, curl's 127.0.0.3 with its own port),
// never HAProxy's source address.
func TestHAProxyRollingRestart(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the others (scripts/test: -parallel 4)
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skip("haproxy is not installed (Debian package haproxy; scripts/deps installs it as root)")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed (scripts/deps installs it as root)")
	}
	const (
		downloads  = 64
		concurrent = 12
		restartAt  = 12 // downloads done before the first restart
	)
	root := shortTempDir(t)
	var files []takeoverFile
	for i := range 8 {
		name := fmt.Sprintf("f%d.bin", i)
		files = append(files, takeoverFile{name, WriteRandom(t, filepath.Join(root, name), int64(2+i%4*2)<<20)})
	}
	// Larger than what the sockets on both sides of HAProxy buffer, so
	// that they are still being sent when a drain starts.
	large := takeoverFile{"large.bin", WriteRandom(t, filepath.Join(root, "large.bin"), 48<<20)}
	frontend := freeAddr(t)
	backends := []string{freeAddr(t), freeAddr(t)}
	metrics := []string{freeAddr(t), freeAddr(t)}
	cfgs := make([]string, len(backends))
	boxes := make([]*Daemon, len(backends))
	for i, a := range backends {
		cfgs[i] = fmt.Sprintf("listen = [%q]\nmetrics_listen = %q\nproxy_trusted = [%q]\naccess_log = true\nworkers = 2\n",
			"proxy:"+a, metrics[i], haproxySource)
		boxes[i] = StartDaemon(t, DaemonOpts{Root: root, Listen: a, Config: cfgs[i]})
	}
	startHAProxy(t, haproxyConfig(frontend, backends, metrics), frontend)
	if r := Zfetch(t, "-q", "-o", "-", "zfs://"+frontend+"/f0.bin"); r.Code != 0 || sha(r.Stdout) != files[0].sum {
		t.Fatalf("a first download through haproxy: exit %d %s", r.Code, r.Stderr)
	}

	out := t.TempDir()
	var (
		done     atomic.Int32
		failures atomic.Int32
		mu       sync.Mutex
		clients  = map[string]bool{} // seen in the backends' status
	)
	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range concurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				f, rate := files[i%len(files)], "1M"
				if i%8 == 3 || i%8 == 4 {
					f, rate = large, "4M"
				}
				dst := filepath.Join(out, fmt.Sprintf("%03d-%s", i, f.name))
				var r Result
				tool := "zfetch"
				if i%2 == 0 {
					r = zfetchBounded("-q", "--limit-rate", rate, "-o", dst, "zfs://"+frontend+"/"+f.name)
				} else {
					tool = "curl"
					r = curlBounded("-sS", "--fail", "--retry", "20", "--retry-delay", "1", "--retry-all-errors", "--max-time", "120",
						"--interface", curlSource, "--local-port", fmt.Sprintf("%d-%d", curlPortLo, curlPortHi),
						"--limit-rate", rate, "-o", dst, "http://"+frontend+"/"+f.name)
				}
				got := ""
				if r.Code == 0 {
					got = fileSum(dst)
				}
				if r.Code != 0 || got != f.sum {
					failures.Add(1)
					t.Errorf("download %d (%s, %s): exit %d, sha256 %s (want %s)\n%s", i, tool, f.name, r.Code, got, f.sum, tail(r.Stderr, 5))
				}
				done.Add(1)
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := range downloads {
			jobs <- i
		}
	}()
	// Note the clients the backends serve, while the downloads run.
	watchDone := make(chan struct{})
	watchStop := make(chan struct{})
	var watched []*Daemon
	var watchMu sync.Mutex
	watchBox := func(d *Daemon) {
		watchMu.Lock()
		watched = append(watched, d)
		watchMu.Unlock()
	}
	for _, d := range boxes {
		watchBox(d)
	}
	go func() {
		defer close(watchDone)
		for {
			select {
			case <-watchStop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			watchMu.Lock()
			ds := append([]*Daemon(nil), watched...)
			watchMu.Unlock()
			for _, d := range ds {
				if ok, _ := d.Exited(); ok {
					continue
				}
				st, err := d.Status()
				if err != nil {
					continue
				}
				mu.Lock()
				for _, tr := range st.Transfers {
					clients[tr.Client] = true
				}
				mu.Unlock()
			}
		}
	}()

	if !waitFor(90*time.Second, func() bool { return done.Load() >= restartAt }) {
		t.Fatalf("only %d downloads done in 90s", done.Load())
	}
	// Rolling restart, one box at a time: drain it, start the new
	// instance with the same configuration (it takes the port and the
	// control socket over), wait for the old one to finish and exit.
	for i, old := range boxes {
		old.WaitStatus(60*time.Second, "a large transfer in flight", func(st *ctlStatus) bool {
			for _, tr := range st.Transfers {
				if tr.Total == 48<<20 && tr.Sent < tr.Total/2 {
					return true
				}
			}
			return false
		})
		began := time.Now()
		if r := old.Zctl("drain"); r.Code != 0 {
			t.Fatalf("box %d: zctl drain: %s", i+1, r.Stderr)
		}
		nd := StartDaemon(t, DaemonOpts{Root: root, Listen: backends[i], Config: cfgs[i], Control: old.Control})
		watchBox(nd)
		tookOver := nd.LogHas(time.Second, "taking the port over", "taking it over; health checks come here")
		if ok, _ := old.Exited(); !ok && tookOver {
			// The old instance still drains: health checks (new
			// connections to the metrics port) reach the new one.
			for range 5 {
				if code, body := httpGetNew(t, "http://"+metrics[i]+"/healthz"); code != 200 {
					t.Errorf("box %d: /healthz after the takeover: %d %q, want 200 from the new instance", i+1, code, body)
				}
			}
		}
		if code := old.WaitExit(90 * time.Second); code != 0 {
			t.Errorf("box %d: the drained instance exited %d, want 0", i+1, code)
		}
		boxes[i] = nd
		t.Logf("box %d replaced in %v (took the draining instance's port over: %v; the old one exited once its transfers ended), %d downloads done",
			i+1, time.Since(began).Round(time.Millisecond), tookOver, done.Load())
	}
	wg.Wait()
	close(watchStop)
	<-watchDone
	t.Logf("%d downloads (half zfetch, half curl) through haproxy in %v, %d failed", downloads, time.Since(start).Round(time.Millisecond), failures.Load())

	// The clients the backends saw: zfetch's and curl's addresses, never
	// HAProxy's, in status and in the access logs.
	var logs strings.Builder
	watchMu.Lock()
	for _, d := range watched {
		logs.WriteString(d.Log())
	}
	watchMu.Unlock()
	accessClients := map[string]bool{}
	for _, m := range regexp.MustCompile(`msg=access .*?client=(\S+)`).FindAllStringSubmatch(logs.String(), -1) {
		accessClients[m[1]] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for what, set := range map[string]map[string]bool{"zctl status transfers": clients, "access logs": accessClients} {
		var zfetchSeen, curlSeen bool
		for c := range set {
			host, port, err := net.SplitHostPort(c)
			p, _ := strconv.Atoi(port)
			switch {
			case err != nil || host == haproxySource:
				t.Errorf("%s: client %q is HAProxy's address, not the client's", what, c)
			case host == curlSource && p >= curlPortLo && p <= curlPortHi:
				curlSeen = true
			case host == "127.0.0.1":
				zfetchSeen = true
			default:
				t.Errorf("%s: client %q is neither zfetch's 127.0.0.1 nor curl's %s:%d-%d", what, c, curlSource, curlPortLo, curlPortHi)
			}
		}
		if !zfetchSeen || !curlSeen {
			t.Errorf("%s: zfetch seen %v, curl seen %v; clients %v", what, zfetchSeen, curlSeen, keys(set))
		}
		t.Logf("%s: %d distinct clients", what, len(set))
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// httpGetNew GETs url on a new connection and returns the status and body.
func httpGetNew(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}
