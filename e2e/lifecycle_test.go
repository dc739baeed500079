package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/wire"
)

// slowGet is a download whose reader holds still until its gate opens, so
// the transfer stays in flight for as long as a test needs.
type slowGet struct {
	c    net.Conn
	done chan error
	sum  string
	n    int64
}

func startSlowGet(t *testing.T, addr, path string, gate <-chan struct{}) *slowGet {
	t.Helper()
	c := dial(t, addr)
	t.Cleanup(func() { c.Close() })
	// A pinned receive buffer (no autotuning) keeps a stalled transfer in
	// flight: otherwise a file of tens of MiB could all fit in the kernel's
	// buffers and the transfer end before the test looks at it.
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.SetReadBuffer(128 << 10); err != nil {
			t.Fatal(err)
		}
	}
	sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: path})
	br := bufio.NewReaderSize(c, 64<<10)
	r, err := wire.ReadResponse(br)
	if err != nil || r.Status != wire.StatusOK {
		t.Fatalf("GET %s: %+v %v", path, r, err)
	}
	g := &slowGet{c: c, done: make(chan error, 1)}
	h := sha256.New()
	// Take the first MiB now, so the transfer is surely under way.
	if _, err := io.CopyN(h, br, 1<<20); err != nil {
		t.Fatal(err)
	}
	go func() {
		<-gate
		// Exactly the body: the connection stays open (keep-alive) after it.
		n, err := io.CopyN(h, br, r.BodyLen-1<<20)
		g.n = 1<<20 + n
		g.sum = hex.EncodeToString(h.Sum(nil))
		if err != nil {
			err = fmt.Errorf("got %d of %d bytes: %w", g.n, r.BodyLen, err)
		}
		g.done <- err
	}()
	return g
}

func (g *slowGet) wait(t *testing.T, want string) {
	t.Helper()
	select {
	case err := <-g.done:
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if g.sum != want {
			t.Fatalf("download sha256 %s, want %s", g.sum, want)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("download did not finish")
	}
}

func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// TestDrainUnderLoad: 20 slow downloads in flight; a drain (by zctl, SIGUSR1
// or SIGTERM) answers new connections "draining" at once, lets every
// download finish byte-exact, and the supervisor exits 0.
func TestDrainUnderLoad(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	for _, trigger := range []string{"zctl", "SIGUSR1", "SIGTERM"} {
		t.Run(trigger, func(t *testing.T) {
			d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
			gate := make(chan struct{})
			var gets []*slowGet
			for range 20 {
				gets = append(gets, startSlowGet(t, d.Addr, "/big.bin", gate))
			}
			d.WaitStatus(5*time.Second, "20 transfers in flight", func(st *ctlStatus) bool { return len(st.Transfers) == 20 })

			var drainOut *exec.Cmd
			var out strings.Builder
			switch trigger {
			case "zctl":
				// --wait shows the remaining transfers until they are done.
				drainOut = exec.Command(zctlBin, "-s", d.Control, "drain", "--wait")
				drainOut.Stdout, drainOut.Stderr = &out, &out
				if err := drainOut.Start(); err != nil {
					t.Fatal(err)
				}
			case "SIGUSR1":
				d.Cmd.Process.Signal(syscall.SIGUSR1)
			case "SIGTERM":
				d.Cmd.Process.Signal(syscall.SIGTERM)
			}
			st := d.WaitState(ctl.StateDraining, 5*time.Second)
			if len(st.Transfers) != 20 || st.DrainDeadline == nil {
				t.Fatalf("draining status: %d transfers, deadline %v", len(st.Transfers), st.DrainDeadline)
			}
			// New connections are answered "draining" (HTTP: 503), which
			// clients retry, not refused: the listener stays open.
			if msg := drainingAnswers(d.Addr); msg != "" {
				t.Fatalf("a new connection while draining: %s", msg)
			}
			close(gate)
			for _, g := range gets {
				g.wait(t, sum)
			}
			if code := d.WaitExit(30 * time.Second); code != 0 {
				t.Fatalf("supervisor exit status %d after a drain, want 0\n%s", code, tail(d.Log(), 20))
			}
			if drainOut != nil {
				if err := drainOut.Wait(); err != nil {
					t.Fatalf("zctl drain --wait: %v\n%s", err, out.String())
				}
				if !strings.Contains(out.String(), "waiting for 20 transfers") || !strings.Contains(out.String(), "drained") {
					t.Fatalf("zctl drain --wait printed:\n%s", out.String())
				}
			}
			if !strings.Contains(d.Log(), "draining: no new connections") || !strings.Contains(d.Log(), "exited cleanly") {
				t.Fatalf("log lacks the drain:\n%s", d.Log())
			}
		})
	}
}

// TestDrainTimeout: a client that never reads is cut off at drain_timeout,
// and the exit status and log say so.
func TestDrainTimeout(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Config: "drain_timeout = \"1s\"\n"})
	never := make(chan struct{})
	defer close(never)
	startSlowGet(t, d.Addr, "/big.bin", never)
	d.WaitStatus(5*time.Second, "the transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	start := time.Now()
	if r := d.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %d %s", r.Code, r.Stderr)
	}
	code := d.WaitExit(15 * time.Second)
	if code != 3 {
		t.Fatalf("exit status %d, want 3 (drain timeout)", code)
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("exited after %v, before the 1s drain_timeout", el)
	}
	if !regexp.MustCompile(`drain timeout \(1s\) expired: killed \d workers? with 1 connection in flight`).MatchString(d.Log()) {
		t.Fatalf("log does not say the drain timed out:\n%s", d.Log())
	}
}

// TestKill: zctl kill ends the supervisor and every worker at once (the time
// is logged), with transfers in flight.
func TestKill(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 3})
	never := make(chan struct{})
	defer close(never)
	for range 4 {
		startSlowGet(t, d.Addr, "/big.bin", never)
	}
	st := d.WaitStatus(5*time.Second, "transfers", func(st *ctlStatus) bool { return len(st.Transfers) == 4 })
	pids := append(WorkerPIDs(st), st.PID)
	start := time.Now()
	if r := d.Zctl("kill"); r.Code != 0 {
		t.Fatalf("zctl kill: %d %s", r.Code, r.Stderr)
	}
	// The bound tells a kill from a drain (which would wait for these
	// clients forever), with room for a slow machine running -race
	// binaries: the time itself is logged, not asserted.
	const killBound = 5 * time.Second
	if code := d.WaitExit(killBound); code != 0 {
		t.Fatalf("exit status %d after zctl kill, want 0 (on request)", code)
	}
	t.Logf("supervisor gone %v after zctl kill", time.Since(start))
	// On request, but not clean: the log says what was cut.
	if log := d.Log(); !strings.Contains(log, "killed (zctl kill) with 4 connections in flight") || strings.Contains(log, "exited cleanly") {
		t.Fatalf("log:\n%s", tail(log, 10))
	}
	for _, pid := range pids {
		if !waitFor(killBound-time.Since(start), func() bool { return !alive(pid) }) {
			t.Fatalf("process %d still alive %v after zctl kill", pid, time.Since(start))
		}
	}
}

// TestReload: a changed root serves new connections while an old
// generation's download completes; an invalid config changes nothing.
func TestReload(t *testing.T) {
	rootA, rootB := shortTempDir(t), shortTempDir(t)
	sumA := WriteRandom(t, filepath.Join(rootA, "big.bin"), 32<<20)
	onlyB := WriteRandom(t, filepath.Join(rootB, "only-in-b.bin"), 4096)
	d := StartDaemon(t, DaemonOpts{Root: rootA, Config: "workers = 2\n"})
	st := d.MustStatus()
	oldPIDs := WorkerPIDs(st)
	gate := make(chan struct{})
	g := startSlowGet(t, d.Addr, "/big.bin", gate)

	writeConfig := func(body string) {
		cfg := fmt.Sprintf("root = %q\nlisten = [\"127.0.0.1:0\"]\ncontrol = %q\nworkers = 2\n%s", rootB, d.Control, body)
		if err := os.WriteFile(d.Config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// An invalid config: zctl fails with the reason, nothing changes.
	writeConfig("workerz = 3\n")
	r := d.Zctl("reload")
	if r.Code == 0 || !strings.Contains(r.Stderr, "unknown key \"workerz\"") || !strings.Contains(r.Stderr, d.Config+":5") {
		t.Fatalf("invalid reload: exit %d, stderr %q", r.Code, r.Stderr)
	}
	st = d.MustStatus()
	if st.Generation != 1 || st.State != ctl.StateServing || !strings.HasPrefix(st.LastReload, "failed") {
		t.Fatalf("after an invalid reload: generation %d, state %s, last_reload %q", st.Generation, st.State, st.LastReload)
	}
	if r := Zfetch(t, "-q", "-o", "-", d.URL("/only-in-b.bin")); r.Code == 0 {
		t.Fatal("the invalid config took effect")
	}

	// A valid one: new generation, new root, same listener.
	writeConfig("")
	if r := d.Zctl("reload"); r.Code != 0 || !strings.Contains(r.Stdout, "generation 2 serving") {
		t.Fatalf("reload: exit %d: %s %s", r.Code, r.Stdout, r.Stderr)
	}
	st = d.MustStatus()
	if st.Generation != 2 || st.Root != rootB || st.Listeners[0].Addr != d.Addr {
		t.Fatalf("after reload: generation %d, root %s, listener %s (was %s)", st.Generation, st.Root, st.Listeners[0].Addr, d.Addr)
	}
	res := Zfetch(t, "-q", "-o", "-", d.URL("/only-in-b.bin"))
	if res.Code != 0 || sha(res.Stdout) != onlyB {
		t.Fatalf("new root not served: %d %s", res.Code, res.Stderr)
	}
	// The old generation is draining its one transfer.
	var draining int
	for _, w := range st.Workers {
		if w.Generation == 1 {
			draining++
			if w.State != "draining" {
				t.Errorf("old worker %d in state %s", w.PID, w.State)
			}
		}
	}
	if draining == 0 {
		t.Fatal("the old generation exited with a transfer in flight")
	}
	close(gate)
	g.wait(t, sumA)
	d.WaitStatus(10*time.Second, "old generation gone", func(st *ctlStatus) bool {
		for _, w := range st.Workers {
			if w.Generation == 1 {
				return false
			}
		}
		return true
	})
	for _, pid := range oldPIDs {
		if !waitFor(5*time.Second, func() bool { return !alive(pid) }) {
			t.Errorf("old worker %d still running", pid)
		}
	}

	// SIGHUP reloads too, and reload --wait returns after the old generation drained.
	d.Cmd.Process.Signal(syscall.SIGHUP)
	d.WaitStatus(10*time.Second, "generation 3", func(st *ctlStatus) bool { return st.Generation == 3 && st.State == ctl.StateServing })
	if r := d.Zctl("reload", "--wait"); r.Code != 0 || !strings.Contains(r.Stdout, "generation 4") || !strings.Contains(r.Stdout, "drained") {
		t.Fatalf("reload --wait: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	st = d.MustStatus()
	for _, w := range st.Workers {
		if w.Generation != 4 {
			t.Fatalf("reload --wait returned with generation %d still there: %+v", w.Generation, w)
		}
	}
}

// TestWorkerCrash: a killed worker is replaced (the time is logged), counted,
// new downloads succeed, and the supervisor stays idle.
func TestWorkerCrash(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	never := make(chan struct{})
	defer close(never)
	for range 4 {
		startSlowGet(t, d.Addr, "/big.bin", never)
	}
	st := d.WaitStatus(5*time.Second, "transfers", func(st *ctlStatus) bool { return len(st.Transfers) == 4 })
	victim := st.Transfers[0].WorkerPID
	held := 0
	for _, x := range st.Transfers {
		if x.WorkerPID == victim {
			held++
		}
	}
	killed := time.Now()
	syscall.Kill(victim, syscall.SIGKILL)
	// Bounded well below a respawn backoff's growth, but not by the speed
	// of this machine: the time is logged.
	st = d.WaitStatus(10*time.Second, "a replacement worker", func(st *ctlStatus) bool {
		pids := WorkerPIDs(st)
		return len(pids) == 2 && pids[0] != victim && pids[1] != victim && st.Totals.Restarts == 1
	})
	t.Logf("replacement ready after %v", time.Since(killed))
	var row ctl.Worker
	for _, w := range st.Workers {
		if w.Restarts == 1 {
			row = w
		}
	}
	if row.LastExit != "killed by signal SIGKILL" {
		t.Errorf("last_exit = %q", row.LastExit)
	}
	// The exit's log line says how many connections went down with it.
	crash := regexp.MustCompile(fmt.Sprintf(`"worker exited" .*pid=%d .*status="killed by signal SIGKILL".* connections_cut=%d`, victim, held))
	if !crash.MatchString(d.Log()) {
		t.Errorf("the crash is not in the log with its %d connection(s):\n%s", held, tail(d.Log(), 20))
	}
	for range 4 {
		r := Zfetch(t, "-q", "-o", "-", d.URL("/big.bin"))
		if r.Code != 0 || sha(r.Stdout) != sum {
			t.Fatalf("download after crash: %d %s", r.Code, r.Stderr)
		}
	}
	// Measured over a window (not a synchronisation): a supervisor spinning
	// on a dead worker's channel would burn a whole core here.
	before := cpuTicks(t, st.PID)
	time.Sleep(2 * time.Second)
	if used := cpuTicks(t, st.PID) - before; used > 10 {
		t.Fatalf("supervisor used %d clock ticks in 2s after a worker crash (want near idle)", used)
	}
}

// TestCrashLoopBacksOff: a worker that keeps dying is restarted with a
// growing delay that shows in status.
func TestCrashLoopBacksOff(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Workers: 1})
	var last int
	for i := 1; i <= 4; i++ {
		st := d.WaitStatus(15*time.Second, fmt.Sprintf("worker after %d restarts", i-1), func(st *ctlStatus) bool {
			p := WorkerPIDs(st)
			return len(p) == 1 && p[0] != last && st.Workers[0].State == "ready"
		})
		last = WorkerPIDs(st)[0]
		syscall.Kill(last, syscall.SIGKILL)
		d.WaitStatus(5*time.Second, "restarting slot", func(st *ctlStatus) bool {
			return st.Totals.Restarts == i
		})
	}
	if !strings.Contains(d.Log(), "in=800ms") {
		t.Fatalf("no growing backoff in the log:\n%s", tail(d.Log(), 20))
	}
}

// TestSupervisorDeath: kill -9 of the supervisor leaves no worker running.
func TestSupervisorDeath(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 3})
	never := make(chan struct{})
	defer close(never)
	startSlowGet(t, d.Addr, "/big.bin", never)
	st := d.WaitStatus(5*time.Second, "a transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	d.Cmd.Process.Signal(syscall.SIGKILL)
	d.WaitExit(5 * time.Second)
	for _, pid := range WorkerPIDs(st) {
		if !waitFor(2*time.Second, func() bool { return !alive(pid) }) {
			t.Fatalf("worker %d survived its supervisor", pid)
		}
	}
}

// TestControlSocketSecurity: other users are refused (by file mode, and by
// SO_PEERCRED when the mode would let them in), group members are let in,
// and garbage gets errors while the daemon keeps serving.
func TestControlSocketSecurity(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Config: "control_group = \"nogroup\"\n"})
	fi, err := os.Stat(d.Control)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("control socket mode %v, want 0660", fi.Mode().Perm())
	}

	t.Run("malformed requests", func(t *testing.T) {
		for _, tc := range []struct{ name, send, want string }{
			{"garbage", "garbage\n", "malformed request"},
			{"unknown command", `{"v":1,"cmd":"explode"}` + "\n", `unknown command "explode"`},
			{"wrong version", `{"v":9,"cmd":"status"}` + "\n", "unsupported control protocol version 9"},
			{"oversized", `{"v":1,"cmd":"` + strings.Repeat("x", 100<<10) + "\"}\n", "request longer than"},
			{"truncated", `{"v":1,"cmd":"sta`, "truncated request"},
		} {
			c, err := net.Dial("unix", d.Control)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte(tc.send))
			c.(*net.UnixConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadBytes('\n')
			c.Close()
			var r ctl.Response
			if err := json.Unmarshal(line, &r); err != nil || r.OK || !strings.Contains(r.Error, tc.want) {
				t.Errorf("%s: got %q, want an error containing %q", tc.name, line, tc.want)
			}
		}
		if st := d.MustStatus(); st.State != ctl.StateServing {
			t.Fatalf("state %s after bad requests", st.State)
		}
		if r := Zfetch(t, "-q", "-o", "-", d.URL("/nothing")); r.Code != 3 {
			t.Fatalf("daemon not serving after bad control requests: %d %s", r.Code, r.Stderr)
		}
	})

	t.Run("other users", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("not root: cannot run zctl as another user (setpriv needs root)")
		}
		nogroup, err := user.LookupGroup("nogroup")
		if err != nil {
			t.Skip("no nogroup group")
		}
		// Let others reach the directory and the binary.
		os.Chmod(filepath.Dir(d.Control), 0o755)
		os.Chmod(binDir, 0o755)
		as := func(gid string) Result {
			cmd := exec.Command("setpriv", "--reuid=65534", "--regid="+gid, "--clear-groups", zctlBin, "-s", d.Control, "status", "--json")
			var out, errb strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			return Result{out.String(), errb.String(), code}
		}
		// The file mode keeps a stranger out before the daemon is asked.
		if r := as("1"); r.Code != 3 || !strings.Contains(r.Stderr, "permission denied") {
			t.Fatalf("stranger through mode 0660: exit %d %q", r.Code, r.Stderr)
		}
		// With the mode opened up, the daemon's SO_PEERCRED check refuses.
		os.Chmod(d.Control, 0o666)
		if r := as("1"); r.Code != 1 || !strings.Contains(r.Stderr, "permission denied: uid 65534") {
			t.Fatalf("stranger past the file mode: exit %d %q", r.Code, r.Stderr)
		}
		// A member of control_group is let in.
		if r := as(nogroup.Gid); r.Code != 0 || !strings.Contains(r.Stdout, `"state": "serving"`) {
			t.Fatalf("control_group member: exit %d %q %q", r.Code, r.Stdout, r.Stderr)
		}
		if !strings.Contains(d.Log(), "control connection refused") {
			t.Error("refusal not logged")
		}
		// A reload that takes the group out takes its members' access
		// away, and gives the socket file back the daemon's group; one
		// that puts it back lets them in again.
		setGroup := func(group string) {
			t.Helper()
			cfg, err := os.ReadFile(d.Config)
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for _, l := range strings.Split(string(cfg), "\n") {
				if !strings.HasPrefix(l, "control_group") {
					lines = append(lines, l)
				}
			}
			lines = append(lines, fmt.Sprintf("control_group = %q", group))
			os.WriteFile(d.Config, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
			if r := d.Zctl("reload", "--wait"); r.Code != 0 {
				t.Fatalf("reload with control_group %q: exit %d: %s", group, r.Code, r.Stderr)
			}
		}
		fileGID := func() uint32 {
			var st syscall.Stat_t
			if err := syscall.Lstat(d.Control, &st); err != nil {
				t.Fatal(err)
			}
			return st.Gid
		}
		setGroup("")
		if r := as(nogroup.Gid); r.Code != 1 || !strings.Contains(r.Stderr, "permission denied: uid 65534") {
			t.Fatalf("member of a group taken out by a reload: exit %d %q", r.Code, r.Stderr)
		}
		if g := fileGID(); g != uint32(os.Getegid()) {
			t.Errorf("socket group %d after control_group was taken out, want %d", g, os.Getegid())
		}
		setGroup("nogroup")
		if r := as(nogroup.Gid); r.Code != 0 {
			t.Fatalf("member of a group put back by a reload: exit %d %q", r.Code, r.Stderr)
		}
		if g := fileGID(); strconv.Itoa(int(g)) != nogroup.Gid {
			t.Errorf("socket group %d, want nogroup's %s", g, nogroup.Gid)
		}
		// A group that does not exist fails the reload and changes nothing.
		cfg, _ := os.ReadFile(d.Config)
		os.WriteFile(d.Config, []byte(strings.Replace(string(cfg), `control_group = "nogroup"`, `control_group = "no-such-group-zfs"`, 1)), 0o644)
		if r := d.Zctl("reload"); r.Code == 0 || !strings.Contains(r.Stderr, "no-such-group-zfs") {
			t.Errorf("reload with an unknown group: exit %d %q", r.Code, r.Stderr)
		}
		if r := as(nogroup.Gid); r.Code != 0 {
			t.Errorf("member after a failed reload: exit %d %q", r.Code, r.Stderr)
		}
		_ = strconv.Itoa
	})
}
