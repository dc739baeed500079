package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TestFaultAbortedTransfers: transfers aborted every way a client can
// (reset mid-body, closed mid-body, closed before reading the answer)
// leave the supervisor's and the workers' descriptor counts where they
// started and their RSS near it, in every zero-copy mode: 250 per mode
// in the short form, 2,500 in the long.
func TestFaultAbortedTransfers(t *testing.T) {
	n := scale(250, 2500)
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	for _, mode := range []string{"sendfile", "splice", "mmap", "copy"} {
		t.Run(mode, func(t *testing.T) {
			d := StartDaemon(t, DaemonOpts{Root: root, Config: fmt.Sprintf("zero_copy = %q\n", mode) + fdSettle})
			before := baselineUse(t, d, 2)
			start := time.Now()
			var failed atomic.Int64
			var wg sync.WaitGroup
			sem := make(chan struct{}, 32)
			for i := range n {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					c, err := net.Dial("tcp", d.Addr)
					if err != nil {
						failed.Add(1)
						t.Error(err)
						return
					}
					defer c.Close()
					if i%3 == 0 {
						c.(*net.TCPConn).SetLinger(0) // the close is a reset
					}
					wire.WriteRequest(c, &wire.Request{Op: wire.OpGet, Path: "/big.bin"})
					if i%3 == 2 {
						return // gone before the answer
					}
					br := bufio.NewReader(c)
					if _, err := wire.ReadResponse(br); err != nil {
						failed.Add(1)
						t.Error(err)
						return
					}
					io.CopyN(io.Discard, br, 64<<10)
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			after := settledUse(t, d, 2, before)
			supFDs, workerFDs := before.fds(after)
			supRSS, workerRSS := before.rss(after)
			logFigure(t, "aborted", "variant", mode, "tried", n, "failed", failed.Load(), "lost", 0, "seconds", elapsed,
				"sup_fds", supFDs, "worker_fds", workerFDs, "sup_rss_mib", supRSS, "worker_rss_mib", workerRSS)
			checkUse(t, fmt.Sprintf("after %d aborted transfers", n), before, after, 32)
			if st := d.MustStatus(); st.Totals.Connections < uint64(n) {
				t.Errorf("status counts %d connections, want >= %d", st.Totals.Connections, n)
			}
		})
	}
}

// TestFaultReloads: 20 reloads (100 in the long form), each waited for
// until the old generation has gone, while a client fetches a file over
// and over on new connections: every fetch gets its bytes (or a busy
// answer, which clients retry), every old worker is gone (reaped), and
// the supervisor's fds and RSS, and the new workers', stay at the
// baseline.
func TestFaultReloads(t *testing.T) {
	n := scale(20, 100)
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 1<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Config: "workers = 2\n" + fdSettle})
	before := baselineUse(t, d, 2)
	stop := make(chan struct{})
	var tried, failed, lost, busy atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			tried.Add(1)
			status, got, err := getOnce(d.Addr, "/f.bin")
			switch {
			case errors.Is(err, errNoAnswer):
				lost.Add(1)
			case err != nil:
				failed.Add(1)
			case status == wire.StatusBusy:
				busy.Add(1)
			case status != wire.StatusOK || got != sum:
				failed.Add(1)
				err = fmt.Errorf("status %v, sha256 %s", status, got)
			}
			if err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		}
	}()
	start := time.Now()
	var old []int
	for i := range n {
		old = append(old, WorkerPIDs(d.MustStatus())...)
		if r := d.Zctl("reload", "--wait"); r.Code != 0 {
			t.Fatalf("reload %d: exit %d: %s %s", i+1, r.Code, r.Stdout, r.Stderr)
		}
	}
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	sup := d.MustStatus().PID
	for _, pid := range old {
		if !waitFor(5*time.Second, func() bool { return !alive(pid) && !zombieOf(pid, sup) }) {
			t.Errorf("worker %d of an old generation is still there (alive %v), or was not reaped", pid, alive(pid))
		}
	}
	after := settledUse(t, d, 2, before)
	supFDs, workerFDs := before.fds(after)
	supRSS, workerRSS := before.rss(after)
	logFigure(t, "reloads", "tried", tried.Load(), "failed", failed.Load(), "lost", lost.Load(), "seconds", elapsed,
		"reloads", n, "busy", busy.Load(), "sup_fds", supFDs, "worker_fds", workerFDs, "sup_rss_mib", supRSS, "worker_rss_mib", workerRSS)
	if firstErr != nil || failed.Load()+lost.Load() > 0 {
		t.Errorf("fetches during the reloads: %d of %d failed, %d lost; first: %v", failed.Load(), tried.Load(), lost.Load(), firstErr)
	}
	checkUse(t, fmt.Sprintf("after %d reloads", n), before, after, 32)
	if st := d.MustStatus(); st.Generation != n+1 {
		t.Errorf("generation %d after %d reloads", st.Generation, n)
	}
}

// zombieOf reports whether pid is a zombie child of parent: a process
// that exited and was not reaped.
func zombieOf(pid, parent int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	return len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(parent)
}

// errNoAnswer is getOnce's error for a connection closed before a
// response header: a request the server dropped.
var errNoAnswer = errors.New("connection closed without an answer")

// getOnce fetches path on a new connection and returns the response's
// status and, for a file, the sha256 of its body.
func getOnce(addr, path string) (wire.Status, string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return getWith(c, path)
}

// getWith sends a GET of path on c and reads the answer: the status and,
// for a file, the sha256 of its body. A connection closed before the
// response header is errNoAnswer.
func getWith(c net.Conn, path string) (wire.Status, string, error) {
	if err := wire.WriteRequest(c, &wire.Request{Op: wire.OpGet, Path: path}); err != nil {
		return 0, "", err
	}
	br := bufio.NewReader(c)
	r, err := wire.ReadResponse(br)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, wire.ErrTruncated) || errors.Is(err, syscall.ECONNRESET) {
			err = fmt.Errorf("%w: %w", errNoAnswer, err)
		}
		return 0, "", err
	}
	if r.Status != wire.StatusOK {
		return r.Status, "", nil
	}
	h := sha256.New()
	if _, err := io.CopyN(h, br, r.BodyLen); err != nil {
		return r.Status, "", fmt.Errorf("body: %w", err)
	}
	return r.Status, hex.EncodeToString(h.Sum(nil)), nil
}
