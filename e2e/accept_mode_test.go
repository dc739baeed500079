package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// The accept dispatch mode (dispatch = "accept", docs/ARCHITECTURE.md):
// the workers accept on the listening sockets themselves.

const acceptConf = "dispatch = \"accept\"\n"

// stoppedAccepting counts the workers whose log says they closed their
// copies of the listening sockets.
func stoppedAccepting(d *Daemon) int { return strings.Count(d.Log(), `msg="stopped accepting"`) }

// allStopped reports whether every thread of pid is stopped (state T in
// /proc/PID/task/*/stat).
func allStopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if len(stats) == 0 {
		return false
	}
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			return false
		}
		// pid (comm) state ...: comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// TestAcceptModeDownloads: native and HTTP downloads through workers that
// accept themselves arrive byte-exact, and zctl status counts the
// connections and shows the transfers in flight.
func TestAcceptModeDownloads(t *testing.T) {
	needTool(t, "curl")
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 8<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Config: acceptConf})
	for range 3 {
		r := Zfetch(t, "-q", "-o", "-", d.URL("/big.bin"))
		if r.Code != 0 || sha(r.Stdout) != sum {
			t.Fatalf("zfetch: %d %s", r.Code, r.Stderr)
		}
		if r := curl(t, "-f", "http://"+d.Addr+"/big.bin"); r.Code != 0 || sha(r.Stdout) != sum {
			t.Fatalf("curl: %d %s", r.Code, r.Stderr)
		}
	}
	gate := make(chan struct{})
	var gets []*slowGet
	for range 4 {
		gets = append(gets, startSlowGet(t, d.Addr, "/big.bin", gate))
	}
	// The connections in flight are counted from the workers' msgAccepted.
	st := d.WaitStatus(5*time.Second, "4 transfers, 4 active", func(st *ctlStatus) bool {
		return len(st.Transfers) == 4 && st.Totals.Active == 4
	})
	active := 0
	for _, w := range st.Workers {
		active += w.Active
	}
	if active != 4 {
		t.Errorf("workers' active connections sum to %d, want 4", active)
	}
	close(gate)
	for _, g := range gets {
		g.wait(t, sum)
	}
	d.WaitStatus(5*time.Second, "10 connections done", func(st *ctlStatus) bool {
		return st.Totals.Connections >= 10 && st.Totals.Active == 4 // the slow gets stay open (keep-alive)
	})
	if r := d.Zctl("status"); r.Code != 0 || !strings.Contains(r.Stdout, "generation 1") {
		t.Fatalf("zctl status: %d %s", r.Code, r.Stdout)
	}
}

// TestAcceptModeDrain: a drain lets every transfer the workers accepted
// finish byte-exact; the workers close their copies of the listening
// socket, and the supervisor, which kept it, answers new connections
// "draining" until it exits 0.
func TestAcceptModeDrain(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Config: acceptConf})
	gate := make(chan struct{})
	var gets []*slowGet
	for range 10 {
		gets = append(gets, startSlowGet(t, d.Addr, "/big.bin", gate))
	}
	d.WaitStatus(5*time.Second, "10 transfers", func(st *ctlStatus) bool { return len(st.Transfers) == 10 })
	if r := d.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %d %s", r.Code, r.Stderr)
	}
	if !waitFor(10*time.Second, func() bool { return stoppedAccepting(d) == 2 }) {
		t.Fatalf("the workers did not stop accepting:\n%s", tail(d.Log(), 20))
	}
	st := d.WaitState(ctl.StateDraining, 5*time.Second)
	if len(st.Transfers) != 10 {
		t.Fatalf("draining with %d transfers, want 10", len(st.Transfers))
	}
	if msg := drainingAnswers(d.Addr); msg != "" {
		t.Fatalf("a new connection while draining: %s", msg)
	}
	close(gate)
	for _, g := range gets {
		g.wait(t, sum)
	}
	if code := d.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("exit status %d after a drain, want 0\n%s", code, tail(d.Log(), 20))
	}
	if !strings.Contains(d.Log(), "exited cleanly") {
		t.Fatalf("log:\n%s", tail(d.Log(), 20))
	}
}

// TestAcceptModeReload: after a reload, new connections go to the new
// generation's workers (which got the listening socket), while the old
// generation, which stopped accepting, finishes its transfer.
func TestAcceptModeReload(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Config: acceptConf})
	gate := make(chan struct{})
	old := startSlowGet(t, d.Addr, "/big.bin", gate)
	if r := d.Zctl("reload"); r.Code != 0 || !strings.Contains(r.Stdout, "generation 2 serving") {
		t.Fatalf("reload: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if !waitFor(10*time.Second, func() bool { return stoppedAccepting(d) == 2 }) {
		t.Fatalf("the old generation did not stop accepting:\n%s", tail(d.Log(), 20))
	}
	st := d.MustStatus()
	gen := map[int]int{}
	for _, w := range st.Workers {
		gen[w.PID] = w.Generation
	}
	var news []*slowGet
	for range 6 {
		news = append(news, startSlowGet(t, d.Addr, "/big.bin", gate))
	}
	st = d.WaitStatus(5*time.Second, "7 transfers", func(st *ctlStatus) bool { return len(st.Transfers) == 7 })
	byGen := map[int]int{}
	for _, x := range st.Transfers {
		byGen[gen[x.WorkerPID]]++
	}
	if byGen[1] != 1 || byGen[2] != 6 {
		t.Fatalf("transfers by generation %v, want the old one in 1 and the 6 new in 2", byGen)
	}
	close(gate)
	old.wait(t, sum)
	for _, g := range news {
		g.wait(t, sum)
	}
	d.WaitStatus(10*time.Second, "old generation gone", func(st *ctlStatus) bool {
		for _, w := range st.Workers {
			if w.Generation == 1 {
				return false
			}
		}
		return true
	})
	// dispatch changes only at restart: a reload that asks for the
	// handoff mode keeps the accept mode, and says so.
	cfg, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(d.Config, []byte(strings.Replace(string(cfg), acceptConf, "dispatch = \"handoff\"\n", 1)), 0o644)
	if r := d.Zctl("reload"); r.Code != 0 {
		t.Fatalf("reload: %d %s", r.Code, r.Stderr)
	}
	if !d.LogHas(5*time.Second, "dispatch changes only at restart") {
		t.Fatal("the log does not say the dispatch mode was kept")
	}
	if !waitFor(10*time.Second, func() bool { return stoppedAccepting(d) == 4 }) {
		t.Fatalf("generation 2 did not stop accepting: the mode changed?\n%s", tail(d.Log(), 20))
	}
	r := Zfetch(t, "-q", "-o", "-", d.URL("/big.bin"))
	if r.Code != 0 || sha(r.Stdout) != sum {
		t.Fatalf("zfetch after the reload: %d %s", r.Code, r.Stderr)
	}
}

// TestAcceptModeWorkerKilled: a worker killed with SIGKILL takes only its
// own connections down; the other keeps accepting; its replacement gets
// the listening socket and accepts (shown with the other worker stopped).
func TestAcceptModeWorkerKilled(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 8<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Config: acceptConf})
	pids := WorkerPIDs(d.MustStatus())
	victim, other := pids[0], pids[1]
	syscall.Kill(victim, syscall.SIGKILL)
	for range 3 {
		r := Zfetch(t, "-q", "-o", "-", d.URL("/big.bin"))
		if r.Code != 0 || sha(r.Stdout) != sum {
			t.Fatalf("download with a worker killed: %d %s", r.Code, r.Stderr)
		}
	}
	st := d.WaitStatus(10*time.Second, "a replacement", func(st *ctlStatus) bool {
		ps := WorkerPIDs(st)
		return len(ps) == 2 && ps[0] != victim && ps[1] != victim && st.Totals.Restarts == 1 && st.Workers[0].State == "ready" && st.Workers[1].State == "ready"
	})
	var repl int
	for _, p := range WorkerPIDs(st) {
		if p != other {
			repl = p
		}
	}
	// Only the replacement can accept now. The signal stops the worker's
	// threads only as each next runs: wait until all of them have, or
	// one still running (answering the status just asked) could accept
	// the connection and be stopped before it reports it.
	syscall.Kill(other, syscall.SIGSTOP)
	defer syscall.Kill(other, syscall.SIGCONT)
	if !waitFor(5*time.Second, func() bool { return allStopped(other) }) {
		t.Fatalf("worker %d did not stop", other)
	}
	gate := make(chan struct{})
	g := startSlowGet(t, d.Addr, "/big.bin", gate)
	st = d.WaitStatus(5*time.Second, "the transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	if st.Transfers[0].WorkerPID != repl {
		t.Fatalf("transfer on worker %d, want the replacement %d", st.Transfers[0].WorkerPID, repl)
	}
	syscall.Kill(other, syscall.SIGCONT)
	close(gate)
	g.wait(t, sum)
}

// TestAcceptModeConfigErrors: max_connections_per_client cannot be
// enforced by workers that accept themselves: zfs-serve refuses to start
// with both, naming the keys.
func TestAcceptModeConfigErrors(t *testing.T) {
	dir := shortTempDir(t)
	cfg := filepath.Join(dir, "zfs-serve.toml")
	body := fmt.Sprintf("root = %q\nlisten = [\"127.0.0.1:0\"]\ncontrol = %q\n%smax_connections_per_client = 4\n", dir, filepath.Join(dir, "ctl.sock"), acceptConf)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, 15*time.Second, zfsServe, "--config", cfg)
	if r.Code == 0 || !strings.Contains(r.Stderr, `key "dispatch"`) || !strings.Contains(r.Stderr, "max_connections_per_client") {
		t.Fatalf("exit %d, stderr %q; want a dispatch error", r.Code, r.Stderr)
	}
	os.WriteFile(cfg, []byte(strings.Replace(body, acceptConf, "dispatch = \"acept\"\n", 1)), 0o644)
	if r := run(t, 15*time.Second, zfsServe, "--config", cfg, "--check"); r.Code == 0 || !strings.Contains(r.Stderr, `must be handoff or accept, not "acept"`) {
		t.Fatalf("exit %d, stderr %q; want the bad value named", r.Code, r.Stderr)
	}
}

// TestAcceptModeProxy: on a proxy: listener the workers that accept
// themselves close connections from outside proxy_trusted (and log it),
// serve trusted ones with the client the PROXY header names, and a
// reload that makes the listener plain gives the new generation the
// socket without the PROXY flag.
func TestAcceptModeProxy(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 1<<20)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Listen: "proxy:127.0.0.1:0",
		Config: acceptConf + "proxy_trusted = [\"127.0.0.2\"]\n"})
	header := proxyHeader(2, "203.0.113.7:1", "192.0.2.1:7071")
	fetch := func(src string) ([]byte, error) {
		c := dialFrom(t, src, d.Addr)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(append(header, "GET /f.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"...))
		b, err := io.ReadAll(c)
		if isReset(err) {
			err = nil
		}
		return b, err
	}
	if b, err := fetch("127.0.0.4"); len(b) != 0 || err != nil {
		t.Errorf("from 127.0.0.4 (untrusted): got %d bytes, %v; want a close", len(b), err)
	}
	if !waitFor(10*time.Second, func() bool { return strings.Contains(d.Log(), "outside proxy_trusted") }) {
		t.Errorf("no log line for the untrusted source:\n%s", tail(d.Log(), 20))
	}
	if b, err := fetch("127.0.0.2"); err != nil || !strings.Contains(string(b), "200 OK") || len(b) < 1<<20 {
		t.Fatalf("from 127.0.0.2 (trusted): %d bytes, %v", len(b), err)
	}
	stalledProxied(t, d.Addr, proxyHeader(1, "203.0.113.9:4000", "192.0.2.1:7071"), "/big.bin", false)
	st := d.WaitStatus(5*time.Second, "the proxied transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	if c := st.Transfers[0].Client; !strings.HasPrefix(c, "203.0.113.9:") {
		t.Errorf("transfer's client %q, want the one the header named", c)
	}
	cfg := strings.Replace(readFile(d.Config), "proxy:127.0.0.1:0", "127.0.0.1:0", 1)
	writeConfig(t, d.Config, cfg)
	if r := d.Zctl("reload"); r.Code != 0 {
		t.Fatalf("reload: %s %s", r.Stdout, r.Stderr)
	}
	if r := Zfetch(t, "-q", "-o", "-", d.URL("/f.bin")); r.Code != 0 || sha(r.Stdout) != sum {
		t.Errorf("zfetch once the listener is plain: %d %s", r.Code, r.Stderr)
	}
}
