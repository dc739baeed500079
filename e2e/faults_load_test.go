package e2e

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// timedFetch downloads url with zfetch into a new file in dir, checks it
// against sum, removes it and returns how long it took.
func timedFetch(dir, url, sum string) (time.Duration, error) {
	dst := filepath.Join(dir, fmt.Sprintf("fetch-%d", rand.Int64()))
	defer os.Remove(dst)
	start := time.Now()
	r, err := runBG(2*time.Minute, zfetch, "-q", "-o", dst, url)
	el := time.Since(start)
	if err != nil || r.Code != 0 {
		return el, fmt.Errorf("zfetch %s: exit %d %v: %s", url, r.Code, err, r.Stderr)
	}
	if got, err := sha256File(dst); got != sum {
		return el, fmt.Errorf("zfetch %s: sha256 %s %v, want %s", url, got, err, sum)
	}
	return el, nil
}

// TestFaultSlowloris: 300 connections (2,000 in the long form) each
// trickle a request a byte at a time, never finishing it, reconnecting
// when the server cuts them at header_timeout; meanwhile a normal 16 MiB
// download, over and over for 8 s (30 s), takes at most 10 times its
// unloaded time plus 2 s, and afterwards the daemon's fds and RSS are
// back near the baseline.
func TestFaultSlowloris(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the others (scripts/test: -parallel 4)
	n := scale(300, 2000)
	hold := time.Duration(scale(8, 30)) * time.Second
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "normal.bin"), 16<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Config: "header_timeout = \"3s\"\n" + fdSettle})
	url, out := d.URL("/normal.bin"), t.TempDir()
	before := baselineUse(t, d, 2)

	var base []time.Duration
	for i := range 6 {
		el, err := timedFetch(out, url, sum)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 { // the first one warms the page cache and the binary up
			base = append(base, el)
		}
	}
	slices.Sort(base)
	unloaded := base[len(base)/2]
	bound := 10*unloaded + 2*time.Second

	req := wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/" + strings.Repeat("s", 200)})
	stop := make(chan struct{})
	var dialed, cut, dialErrs atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := net.DialTimeout("tcp", d.Addr, 5*time.Second)
				if err != nil {
					dialErrs.Add(1)
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					continue
				}
				dialed.Add(1)
				for i := 0; ; i++ {
					select {
					case <-stop:
						c.Close()
						return
					case <-time.After(time.Duration(100+rand.IntN(300)) * time.Millisecond):
					}
					if _, err := c.Write(req[i%len(req) : i%len(req)+1]); err != nil {
						cut.Add(1) // by the server, at header_timeout
						break
					}
				}
				c.Close()
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	d.WaitStatus(time.Minute, fmt.Sprintf("%d trickling connections held", n*9/10), func(st *ctlStatus) bool {
		return st.Totals.Active >= n*9/10
	})
	start := time.Now()
	var times []time.Duration
	var failed int
	for time.Since(start) < hold || len(times) < 3 {
		el, err := timedFetch(out, url, sum)
		if err != nil {
			failed++
			t.Error(err)
		}
		times = append(times, el)
	}
	elapsed := time.Since(start)
	active := d.MustStatus().Totals.Active
	close(stop)
	wg.Wait()
	after := settledUse(t, d, 2, before)
	slices.Sort(times)
	worst, median := times[len(times)-1], times[len(times)/2]
	supFDs, workerFDs := before.fds(after)
	supRSS, workerRSS := before.rss(after)
	t.Logf("16 MiB download: unloaded (median of 5) %v; beside %d trickling connections median %v, worst %v (bound %v); %d connections cut by header_timeout and redialed",
		unloaded, n, median, worst, bound, cut.Load())
	logFigure(t, "slowloris", "tried", len(times), "failed", failed, "lost", 0, "seconds", elapsed,
		"connections", n, "held_at_end", active, "dialed", dialed.Load(), "cut", cut.Load(), "dial_errors", dialErrs.Load(),
		"unloaded_s", fmt.Sprintf("%.3f", unloaded.Seconds()), "loaded_median_s", fmt.Sprintf("%.3f", median.Seconds()),
		"loaded_worst_s", fmt.Sprintf("%.3f", worst.Seconds()), "bound_s", fmt.Sprintf("%.1f", bound.Seconds()),
		"sup_fds", supFDs, "worker_fds", workerFDs, "sup_rss_mib", supRSS, "worker_rss_mib", workerRSS)
	if worst > bound {
		t.Errorf("a download beside the slowloris took %v, more than 10x the unloaded %v plus 2s", worst, unloaded)
	}
	if cut.Load() == 0 {
		t.Errorf("no trickling connection was cut in %v with a 3s header_timeout", elapsed)
	}
	checkUse(t, "after the slowloris", before, after, 64)
}

// TestFaultFDExhaustion: a daemon limited to 64 open files (prlimit
// --nofile=64:64, for the supervisor and so for its workers) gets 200
// connections at once, each asking for a file and keeping its connection
// until all have an answer, with 10 zfetch downloads started meanwhile.
// Every raw client gets its file or a busy answer (none is dropped
// unanswered; all may be busy, when the workers' tables fill up with
// connections before they open the file), the supervisor does not spin (CPU ticks bounded while the
// connections are held), every zfetch gets its file once the pressure is
// gone, and afterwards the daemon serves as usual with the fds back at the
// baseline.
func TestFaultFDExhaustion(t *testing.T) {
	const clients, fetches = 200, 10
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("prlimit (util-linux) is not installed")
	}
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 256<<10)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2, Config: fdSettle, Prefix: []string{"prlimit", "--nofile=64:64", "--"}})
	st := d.MustStatus()
	for _, pid := range append(WorkerPIDs(st), st.PID) {
		if lim := nofileLimit(t, pid); lim != "64 64" {
			t.Fatalf("pid %d: open files limit %s, want 64 64", pid, lim)
		}
	}
	before := baselineUse(t, d, 2)
	supTicks := cpuTicks(t, st.PID)
	start := time.Now()

	type answer struct {
		status wire.Status
		sum    string
		err    error
	}
	answers := make(chan answer, clients)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", d.Addr, 10*time.Second)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			defer c.Close()
			status, got, err := getOn(c, "/f.bin")
			answers <- answer{status, got, err}
			<-release // hold the connection: the server keeps it open too
		}()
	}
	// zfetch clients meet the same pressure; they retry until it is gone.
	out := t.TempDir()
	fetchErrs := make(chan error, fetches)
	for range fetches {
		go func() {
			_, err := timedFetch(out, d.URL("/f.bin"), sum)
			fetchErrs <- err
		}()
	}
	var ok, busy, failed, lost, corrupted int
	timeout := time.After(2 * time.Minute)
	for range clients {
		var a answer
		select {
		case a = <-answers:
		case <-timeout:
			close(release)
			t.Fatalf("clients without an answer after 2 minutes (%d ok, %d busy, %d failed, %d lost so far)", ok, busy, failed, lost)
		}
		switch {
		case errors.Is(a.err, errNoAnswer):
			lost++
		case a.err != nil:
			failed++
			t.Errorf("client: %v", a.err)
		case a.status == wire.StatusBusy:
			busy++
		case a.status != wire.StatusOK:
			failed++
			t.Errorf("client: status %v", a.status)
		case a.sum != sum:
			corrupted++
		default:
			ok++
		}
	}
	// Every client has its answer and keeps its connection open: the
	// pressure is on. Measured over a window (not a synchronisation): a
	// supervisor spinning on a full fd table would burn a whole core.
	elapsed := time.Since(start)
	burst := cpuTicks(t, st.PID) - supTicks
	heldTicks := cpuTicks(t, st.PID)
	time.Sleep(2 * time.Second)
	held := cpuTicks(t, st.PID) - heldTicks
	close(release)
	wg.Wait()
	var fetchFailed int
	for range fetches {
		if err := <-fetchErrs; err != nil {
			fetchFailed++
			t.Error(err)
		}
	}
	after := settledUse(t, d, 2, before)
	supFDs, workerFDs := before.fds(after)
	// Recovered: the next requests are served as usual.
	for range 20 {
		status, got, err := getOnce(d.Addr, "/f.bin")
		if err != nil || status != wire.StatusOK || got != sum {
			t.Errorf("after the pressure: status %v, sha256 %s, %v", status, got, err)
			break
		}
	}
	t.Logf("%d clients: %d got the file, %d busy, %d failed, %d dropped unanswered, %d corrupted; supervisor CPU: %d ticks for the burst, %d in 2 s held",
		clients, ok, busy, failed, lost, corrupted, burst, held)
	logFigure(t, "fd-exhaustion", "tried", clients+fetches, "failed", failed+fetchFailed, "lost", lost, "corrupted", corrupted,
		"seconds", elapsed, "ok", ok, "busy", busy, "zfetch_ok", fetches-fetchFailed, "sup_ticks_burst", burst, "sup_ticks_held_2s", held,
		"sup_fds", supFDs, "worker_fds", workerFDs)
	if corrupted > 0 {
		t.Errorf("%d clients got wrong bytes", corrupted)
	}
	if held > 20 {
		t.Errorf("the supervisor used %d clock ticks in 2 s with every connection held (want near idle)", held)
	}
	checkUse(t, "after the fd pressure", before, after, 32)
	if lost > 0 {
		failNeedsFix(t, fixFDBusy, "%d of %d connections were dropped without an answer (want the file or busy)", lost, clients)
	}
}

// getOn fetches path on c and returns the response's status and, for a
// file, the sha256 of its body; a connection closed before the response
// header is errNoAnswer.
func getOn(c net.Conn, path string) (wire.Status, string, error) {
	c.SetDeadline(time.Now().Add(time.Minute))
	defer c.SetDeadline(time.Time{})
	return getWith(c, path)
}

// nofileLimit is a process's open-files limit, "soft hard".
func nofileLimit(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(line)
			return f[3] + " " + f[4]
		}
	}
	return ""
}
