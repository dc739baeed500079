package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/wire"
)

// drainingAnswers checks that a new connection to addr is answered
// "draining": in the native protocol, and 503 with Retry-After to an HTTP
// client (Go's net/http). It returns what was wrong, "" if nothing.
func drainingAnswers(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "native: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wire.WriteRequest(c, &wire.Request{Op: wire.OpGet, Path: "/x"}); err != nil {
		return "native: " + err.Error()
	}
	r, err := wire.ReadResponse(c)
	if err != nil || r.Status != wire.StatusDraining {
		return fmt.Sprintf("native: %+v, %v; want draining", r, err)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + addr + "/x")
	if err != nil {
		return "HTTP: " + err.Error()
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		return fmt.Sprintf("HTTP: %s (Retry-After %q); want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	return ""
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// takeoverFile is one file the takeover test downloads.
type takeoverFile struct {
	name string
	sum  string
}

// TestDrainTakeover: hundreds of zfetch downloads with the default retry
// settings run while one instance drains (zctl drain --wait) and a new
// one starts with the same address and control socket and takes both
// over (zctl drain --wait keeps following the old one). Nothing fails,
// every file is byte-exact, and no client ever sees "connection refused"
// or a reset: the draining instance answers "draining" until the new one
// has joined the port, which then gets every new connection.
func TestDrainTakeover(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the others (scripts/test: -parallel 4)
	const (
		downloads  = 320
		concurrent = 16
		drainAfter = 80 // downloads done before the drain starts
	)
	root := shortTempDir(t)
	var files []takeoverFile
	for i := range 24 {
		name := fmt.Sprintf("small%02d.bin", i)
		files = append(files, takeoverFile{name, WriteRandom(t, filepath.Join(root, name), int64(1+i*8)<<10)})
	}
	for i := range 8 {
		name := fmt.Sprintf("medium%d.bin", i)
		files = append(files, takeoverFile{name, WriteRandom(t, filepath.Join(root, name), int64(1+i%4)<<20)})
	}
	// Rate-limited (2M/s), these stay in flight for seconds (beyond what
	// the socket buffers take at once) and overlap the drain.
	var slow []takeoverFile
	for i := range 2 {
		name := fmt.Sprintf("slow%d.bin", i)
		slow = append(slow, takeoverFile{name, WriteRandom(t, filepath.Join(root, name), 16<<20)})
	}
	addr := freeAddr(t)
	d1 := StartDaemon(t, DaemonOpts{Root: root, Listen: addr})
	out := t.TempDir()

	var (
		done     atomic.Int32
		mu       sync.Mutex
		reasons  = map[string]int{}
		bad      []string // refused or reset retries
		failures int
	)
	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range concurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				f := files[i%len(files)]
				args := []string{"--json"}
				if i%16 == 5 {
					f = slow[i/16%2]
					args = append(args, "--limit-rate", "2M")
				}
				dst := filepath.Join(out, fmt.Sprintf("%03d-%s", i, f.name))
				args = append(args, "-o", dst)
				r := zfetchBounded(append(args, "zfs://"+addr+"/"+f.name)...)
				mu.Lock()
				for _, e := range retryReasons(r.Stdout) {
					reasons[e]++
					if e == "connection refused" || e == "connection reset" {
						bad = append(bad, fmt.Sprintf("download %d: %s", i, e))
					}
				}
				mu.Unlock()
				got := ""
				if r.Code == 0 {
					got = fileSum(dst)
				}
				if r.Code != 0 || got != f.sum {
					mu.Lock()
					failures++
					mu.Unlock()
					t.Errorf("download %d (%s): exit %d, sha256 %s (want %s)\n%s", i, f.name, r.Code, got, f.sum, tail(r.Stderr, 5))
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

	// Drain while downloads run, some of them slow ones in flight.
	if !waitFor(60*time.Second, func() bool { return done.Load() >= drainAfter }) {
		t.Fatalf("only %d downloads done in 60s", done.Load())
	}
	d1.WaitStatus(60*time.Second, "a slow transfer in flight", func(st *ctlStatus) bool {
		for _, tr := range st.Transfers {
			if tr.Total >= 1<<20 && tr.Sent < tr.Total/2 {
				return true
			}
		}
		return false
	})
	drain := exec.Command(zctlBin, "-s", d1.Control, "drain", "--wait")
	var drainOut strings.Builder
	drain.Stdout, drain.Stderr = &drainOut, &drainOut
	if err := drain.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drain.Process.Kill(); drain.Wait() })
	drainStart := time.Now()
	d1.WaitState(ctl.StateDraining, 10*time.Second)
	if msg := drainingAnswers(addr); msg != "" {
		t.Errorf("while draining, before a new instance: %s", msg)
	}
	// The same address and control socket: the new instance takes both
	// over from the draining one.
	d2 := StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Control: d1.Control})
	took := time.Since(drainStart)
	if !d2.LogHas(5*time.Second, "taking the port over", "taking its path over") {
		t.Errorf("the new instance does not say it took the port and the control socket over:\n%s", tail(d2.Log(), 20))
	}

	wg.Wait()
	if err := drain.Wait(); err != nil {
		t.Errorf("zctl drain --wait: %v\n%s", err, drainOut.String())
	}
	if code := d1.WaitExit(30 * time.Second); code != 0 {
		t.Errorf("the drained instance exited %d, want 0", code)
	}
	st := d2.MustStatus() // the control socket is still there: the old instance's exit left it
	if st.PID != d2.Cmd.Process.Pid {
		t.Errorf("the control socket leads to pid %d, want the new instance's %d", st.PID, d2.Cmd.Process.Pid)
	}
	t.Logf("%d downloads in %v (%d failed); new instance serving %v after the drain started; retries by reason %v; the new instance served %d connections",
		downloads, time.Since(start).Round(time.Millisecond), failures, took.Round(time.Millisecond), reasons, st.Totals.Connections)
	if len(bad) > 0 {
		t.Errorf("%d retries saw a refused or reset connection (the port was never to be without a listener): %v", len(bad), bad[:min(len(bad), 10)])
	}
	if st.Totals.Connections == 0 {
		t.Error("the new instance served nothing")
	}
}

// zfetchBounded runs zfetch (from any goroutine: it never calls t.Fatal)
// with a bound on its time.
func zfetchBounded(args ...string) Result {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, zfetch, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		if ctx.Err() != nil {
			errb.WriteString("\n(killed: timed out)")
		}
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// retryReasons lists the reasons of zfetch --json's retry events.
func retryReasons(stdout string) []string {
	var out []string
	for _, line := range strings.Split(stdout, "\n") {
		if !strings.Contains(line, `"event":"retry"`) {
			continue
		}
		if _, rest, ok := strings.Cut(line, `"reason":"`); ok {
			reason, _, _ := strings.Cut(rest, `"`)
			out = append(out, reason)
		}
	}
	return out
}

// fileSum is FileSHA256 without a testing.TB: "" if the file cannot be read.
func fileSum(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return FileSHA256Bytes(b)
}
