package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// chaosSizes are the files TestChaos fetches, 4 KiB to 32 MiB, with the
// odd sizes that end a transfer mid-page.
var chaosSizes = []int64{4 << 10, 4<<10 + 1, 64 << 10, 256<<10 + 3, 1 << 20, 1<<20 + 1, 4<<20 - 1, 8 << 20, 16<<20 + 7, 32 << 20}

// chaosRecv are the receive options the downloads take in turn.
var chaosRecv = [][]string{
	{"--recv", "splice"},
	{"--recv", "copy"},
	{"--recv", "mmap"},
	{"-x", "4"},
	{"--recv", "copy", "-x", "4"},
	{"curl"}, // the same port over HTTP, with curl's own retries and resume
	{"wget"},
}

// httpClientArgs is the command that fetches url into part with curl or
// wget, retrying and resuming as their users would set them up to ride
// out a restart: a reset, a refused connection or a 503 is retried, and a
// retry resumes where the last attempt ended.
func httpClientArgs(client, url, part string) (string, []string) {
	if client == "curl" {
		return "curl", []string{"-sS", "-f", "--retry", "60", "--retry-all-errors", "--retry-delay", "1",
			"--retry-max-time", "150", "--max-time", "170", "-C", "-", "-o", part, url}
	}
	return "wget", []string{"-q", "-c", "--tries=60", "--waitretry=1", "--retry-connrefused",
		"--retry-on-http-error=503", "--read-timeout=30", "-O", part, url}
}

// chaosDaemon is the daemon TestChaos is running now: the killer and the
// reloader follow it across restarts.
type chaosDaemon struct {
	mu sync.Mutex
	d  *Daemon
}

func (c *chaosDaemon) get() *Daemon {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.d
}

func (c *chaosDaemon) set(d *Daemon) {
	c.mu.Lock()
	c.d = d
	c.mu.Unlock()
}

// TestChaos: N downloads by the real zfetch (and, over HTTP on the same
// port, curl and wget), of mixed sizes and receive modes, a few at a time,
// while a worker is SIGKILLed every 200-500 ms (its pid from zctl status
// --json), the daemon reloads every 2 s (the first half a second in), and
// (once in the short form, four times in the long) it is drained with
// zctl drain --wait and a new one started on the same port. Every
// download must end with its file byte-exact under its final name (zfetch
// retries with its default policy), no failed run may leave a file under
// its final name, and once the load is over the last daemon's fds and RSS
// must be back near the first one's before the load.
func TestChaos(t *testing.T) {
	n := scale(200, 1000)
	conc := scale(6, 8)
	restarts := scale(1, 4)

	root := shortTempDir(t)
	type file struct {
		name string
		sum  string
	}
	var files []file
	for i, size := range chaosSizes {
		name := fmt.Sprintf("f%02d-%d.bin", i, size)
		files = append(files, file{name, WriteRandom(t, filepath.Join(root, name), size)})
	}
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	opts := DaemonOpts{Root: root, Workers: 2, Listen: listen, Config: "drain_timeout = \"20s\"\n" + fdSettle}
	first := StartDaemon(t, opts)
	baseline := baselineUse(t, first, 2)
	t.Logf("baseline: %v", baseline)
	cur := &chaosDaemon{d: first}

	start := time.Now()
	// stop ends the killer and the reloader; cancel also the downloads (on
	// a fatal error, before the daemons are killed).
	stop := make(chan struct{})
	var stopOnce sync.Once
	var bg, wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
		bg.Wait()
	}()
	var kills, reloads, reloadsFailed atomic.Int64
	var restarting atomic.Bool
	var failedMu sync.Mutex
	failedWhy := map[string]int{}
	var killedMu sync.Mutex
	killed := map[int]bool{}
	bgErrs := make(chan error, 100)

	// The killer: a random worker (of any generation, in any state) every
	// 200-500 ms, its pid from zctl status --json.
	bg.Add(1)
	go func() {
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(200+rand.IntN(300)) * time.Millisecond):
			}
			r, err := runCtx(ctx, 10*time.Second, zctlBin, "-s", cur.get().Control, "status", "--json")
			if err != nil || r.Code != 0 {
				continue // restarting: no daemon at that socket for a moment
			}
			var st ctl.Status
			if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
				bgErrs <- fmt.Errorf("zctl status --json: %w: %q", err, r.Stdout)
				return
			}
			// Not around a restart: the drain would end with its transfers
			// cut, and a new daemon would never start beside it.
			if pids := WorkerPIDs(&st); len(pids) > 0 && !restarting.Load() {
				pid := pids[rand.IntN(len(pids))]
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					kills.Add(1)
					killedMu.Lock()
					killed[pid] = true
					killedMu.Unlock()
				}
			}
		}
	}()
	// The reloader: zctl reload half a second in, then every 2 s. One can
	// be refused (while the daemon drains, or with three generations still
	// draining) or fail (the killer killed a new worker before it was
	// ready); that is counted and the reason logged, not an error. The
	// first comes early: a fast run of the short form (6 s) reaches its
	// restart at about 2 s, and a drain refuses the reloads sent while it
	// lasts, so reloads only every 2 s from the start could all be refused.
	// After a refused or failed one the next comes in 300 ms: in one run
	// the first failed (the killer took the new worker) and the restart's
	// drain refused the two after it, so the run had no reload at all.
	bg.Add(1)
	go func() {
		defer bg.Done()
		wait := 500 * time.Millisecond
		for {
			select {
			case <-stop:
				return
			case <-time.After(wait):
			}
			wait = 2 * time.Second
			r, err := runCtx(ctx, 90*time.Second, zctlBin, "-s", cur.get().Control, "reload")
			switch {
			case err != nil:
				bgErrs <- err
				return
			case r.Code == 0:
				reloads.Add(1)
			default:
				wait = 300 * time.Millisecond
				reloadsFailed.Add(1)
				failedMu.Lock()
				failedWhy[strings.TrimSpace(r.Stderr)]++
				failedMu.Unlock()
			}
		}
	}()

	// The downloads, conc at a time, into a fresh name each.
	out := t.TempDir()
	var failed, lost, corrupted, done, retries atomic.Int64
	var failMu sync.Mutex
	var failures []string
	fail := func(format string, a ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, a...))
		}
	}
	// download fetches file i%len(files) into a fresh name with the
	// receive options recv and checks the outcome.
	download := func(i int, recv []string) {
		f := files[i%len(files)]
		dst := filepath.Join(out, fmt.Sprintf("%04d-%s", i, f.name))
		var r Result
		var err error
		var args []string
		if c := recv[0]; c == "curl" || c == "wget" {
			// Into a name of its own, renamed when the client says it is
			// complete: what curl and wget leave after a failure is theirs.
			bin, a := httpClientArgs(c, "http://"+listen+"/"+f.name, dst+".http")
			args = append([]string{bin}, a...)
			r, err = runCtx(ctx, 180*time.Second, bin, a...)
			if err == nil && r.Code == 0 {
				os.Rename(dst+".http", dst)
			}
			os.Remove(dst + ".http")
		} else {
			args = append([]string{"--json", "-o", dst}, recv...)
			args = append(args, "zfs://"+listen+"/"+f.name)
			r, err = runCtx(ctx, 180*time.Second, zfetch, args...)
			retries.Add(int64(strings.Count(r.Stdout, `"event":"retry"`)))
		}
		_, statErr := os.Stat(dst)
		switch {
		case err != nil || r.Code != 0:
			failed.Add(1)
			fail("%s: exit %d %v: %s", strings.Join(args, " "), r.Code, err, tail(r.Stderr, 5))
			if statErr == nil {
				corrupted.Add(1)
				fail("%s: a failed run left a file under its final name", dst)
			}
		case statErr != nil:
			lost.Add(1)
			fail("%s: %s exited 0 without its file: %v", dst, args[0], statErr)
		default:
			if got, err := sha256File(dst); got != f.sum {
				corrupted.Add(1)
				fail("%s: sha256 %s %v, want %s (%s)", dst, got, err, f.sum, strings.Join(args, " "))
			}
		}
		os.Remove(dst)
		os.Remove(dst + ".part")
		os.Remove(dst + ".part.state")
		done.Add(1)
	}
	// curl and wget take their turns where they are installed.
	var modes [][]string
	for _, m := range chaosRecv {
		if _, err := exec.LookPath(m[0]); m[0][0] != '-' && err != nil {
			t.Logf("%s not installed: its downloads are zfetch's", m[0])
			continue
		}
		modes = append(modes, m)
	}
	jobs := make(chan int)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				download(i, modes[i%len(modes)])
			}
		}()
	}
	feedDone := make(chan struct{})
	go func() {
		defer close(feedDone)
		defer close(jobs)
		for i := range n {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()

	// Drain and restart on the same port, spread over the run. Each time a
	// rate-limited download of the largest file (one more) is in flight,
	// so that the drain has a transfer to wait for, and no worker is
	// killed until the new daemon serves.
	var overlapped int
	for k := 1; k <= restarts; k++ {
		at := int64(n * k / (restarts + 1))
		if !waitFor(10*time.Minute, func() bool { return done.Load() >= at }) {
			t.Fatalf("downloads stuck at %d of %d", done.Load(), n)
		}
		restarting.Store(true)
		i := n + k*len(files) - 1 // the largest file, a name of its own
		slow := filepath.Join(out, fmt.Sprintf("%04d-%s", i, files[len(files)-1].name))
		wg.Add(1)
		go func() {
			defer wg.Done()
			download(i, []string{"--recv", "splice", "--limit-rate", "8M"})
		}()
		if !waitFor(time.Minute, func() bool { return progressOf(slow) >= 1<<20 }) {
			t.Fatalf("the rate-limited download %s did not start", slow)
		}
		next, overlap := restartOnSamePort(t, cur.get(), opts)
		cur.set(next)
		restarting.Store(false)
		if overlap {
			overlapped++
		}
	}
	<-feedDone
	wg.Wait()
	stopOnce.Do(func() { close(stop) })
	bg.Wait()
	elapsed := time.Since(start)
	close(bgErrs)
	for err := range bgErrs {
		t.Error(err)
	}

	// A worker killed last may still be listed as ready for a moment (the
	// supervisor learns of its death from its channel).
	last := cur.get()
	last.WaitStatus(30*time.Second, "the killed workers gone", func(st *ctlStatus) bool {
		killedMu.Lock()
		defer killedMu.Unlock()
		for _, pid := range WorkerPIDs(st) {
			if killed[pid] {
				return false
			}
		}
		return true
	})
	after := settledUse(t, last, 2, baseline)
	t.Logf("after the load: %v (baseline %v)", after, baseline)
	for why, k := range failedWhy {
		t.Logf("reloads refused or failed %d times: %s", k, why)
	}
	supFDs, workerFDs := baseline.fds(after)
	supRSS, workerRSS := baseline.rss(after)
	logFigure(t, "chaos", "tried", n+restarts, "failed", failed.Load(), "lost", lost.Load(), "corrupted", corrupted.Load(),
		"seconds", elapsed, "concurrency", conc, "kills", kills.Load(), "reloads", reloads.Load(),
		"reloads_failed", reloadsFailed.Load(), "restarts", restarts, "restarts_overlapped", overlapped,
		"retries", retries.Load(), "sup_fds", supFDs, "worker_fds", workerFDs, "sup_rss_mib", supRSS, "worker_rss_mib", workerRSS)
	for _, f := range failures {
		t.Error(f)
	}
	if failed.Load()+lost.Load()+corrupted.Load() != 0 {
		t.Errorf("%d of %d downloads failed, %d lost, %d corrupted", failed.Load(), n+restarts, lost.Load(), corrupted.Load())
	}
	if kills.Load() == 0 || reloads.Load() == 0 {
		t.Errorf("no chaos: %d kills, %d reloads", kills.Load(), reloads.Load())
	}
	checkUse(t, "the last daemon after the load", baseline, after, 32)
}

// restartOnSamePort drains old (zctl drain --wait) and starts a new daemon
// with o on the same address: while the old one drains if the port can be
// bound then (the old one closed its listener, or both use SO_REUSEPORT),
// else once it has exited. It returns the new daemon, serving, and
// whether it started before the old one had exited.
func restartOnSamePort(t *testing.T, old *Daemon, o DaemonOpts) (*Daemon, bool) {
	t.Helper()
	drained := make(chan Result, 1)
	go func() {
		r, err := runBG(2*time.Minute, zctlBin, "-s", old.Control, "drain", "--wait")
		if err != nil {
			r.Stderr += err.Error()
			r.Code = -1
		}
		drained <- r
	}()
	if !waitFor(20*time.Second, func() bool {
		if ok, _ := old.Exited(); ok {
			return true
		}
		st, err := old.Status()
		return err == nil && st.State == ctl.StateDraining
	}) {
		t.Fatalf("the daemon did not start draining\n%s", tail(old.Log(), 30))
	}
	addr := old.Addr
	o.Listen, o.NoWait = addr, true
	d := StartDaemon(t, o)
	d.Addr = addr
	serving := waitFor(30*time.Second, func() bool {
		if ok, _ := d.Exited(); ok {
			return true
		}
		st, err := d.Status()
		return err == nil && st.State == ctl.StateServing
	})
	overlap := false
	if ok, _ := d.Exited(); ok || !serving {
		// The port was still taken: start again once the old daemon is gone.
		t.Logf("a new daemon could not start beside the draining one:\n%s", tail(d.Log(), 5))
		old.WaitExit(2 * time.Minute)
		o.NoWait = false
		d = StartDaemon(t, o)
	} else {
		overlap, _ = old.Exited()
		overlap = !overlap
	}
	old.WaitExit(2 * time.Minute)
	r := <-drained
	t.Logf("drain --wait: exit %d %s %s (new daemon started %s)", r.Code, tail(r.Stdout, 1), strings.TrimSpace(r.Stderr),
		map[bool]string{true: "while the old one drained", false: "after the old one exited"}[overlap])
	return d, overlap
}
