package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// stalledStderr is a pipe for a daemon's stderr that nobody reads until
// the test says so, as a journal that hangs.
func stalledStderr(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// getMany makes n HTTP requests for path over conns keep-alive
// connections and returns how many were answered 200 with the file's
// bytes. Each request has a timeout, so a daemon that stalls fails them
// instead of hanging the test.
func getMany(t *testing.T, url string, n, conns int, want []byte) int64 {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conns, DisableCompression: true}}
	defer client.CloseIdleConnections()
	var ok, next atomic.Int64
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				resp, err := client.Get(url)
				if err != nil {
					t.Errorf("GET: %v", err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == 200 && bytes.Equal(b, want) {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return ok.Load()
}

var droppedRe = regexp.MustCompile(`msg="log lines dropped[^"]*".* lines=(\d+)`)

// TestLogReaderStalled: a log reader that stops costs log lines, never
// service. With access_log on and stderr a pipe nobody reads, every one
// of 20,000 requests is answered (before, each process blocked on its
// first line past the pipe's 64 KiB and served nothing more). Once the
// pipe is read again the daemon says how many lines it dropped, every
// request is either logged or counted, and no line is torn by another
// process's. A daemon told to stop while its stderr is stalled still
// exits, within its flush bound.
func TestLogReaderStalled(t *testing.T) {
	const n = 20000
	root := t.TempDir()
	body := bytes.Repeat([]byte("x"), 4096)
	if err := os.WriteFile(filepath.Join(root, "f"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	r, w := stalledStderr(t)
	// No digests: a file's hash is logged ("digest computed") 2 s after
	// its last change, in the middle of the load on a slow machine, and
	// the count below is of every record dropped.
	d := StartDaemon(t, DaemonOpts{Root: root, Stderr: w, Config: "access_log = true\nlog_level = \"info\"\ndigests = false\n"})
	w.Close()
	url := "http://" + d.Addr + "/f"
	start := time.Now()
	if got := getMany(t, url, n, 4, body); got != n {
		t.Fatalf("%d of %d requests answered while stderr was not read", got, n)
	}
	t.Logf("%d requests in %v with stderr stalled", n, time.Since(start).Round(time.Millisecond))
	// What the workers served, which is what they logged: more than n
	// when the client sent a request again on a new connection (Go's
	// Transport retries a GET whose kept-alive connection failed).
	served := int(d.MustStatus().Totals.HTTPRequests)
	if served < n {
		t.Fatalf("status says %d requests served, want at least %d", served, n)
	}

	// Read the pipe again: what waited comes out, then the report.
	var mu sync.Mutex
	var out bytes.Buffer
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, err := r.Read(buf)
			mu.Lock()
			out.Write(buf[:k])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	logged := func() string { mu.Lock(); defer mu.Unlock(); return out.String() }
	var dropped, access int
	if !waitFor(20*time.Second, func() bool {
		s := logged()
		dropped, access = 0, strings.Count(s, "msg=access")
		for _, m := range droppedRe.FindAllStringSubmatch(s, -1) {
			k, _ := strconv.Atoi(m[1])
			dropped += k
		}
		return dropped > 0 && access+dropped >= served
	}) {
		t.Fatalf("after the pipe was read: %d access lines and %d reported dropped, want %d in all\n%s", access, dropped, served, tail(logged(), 10))
	}
	// Every request is logged or counted, and nothing else was dropped.
	if access+dropped != served {
		var other []string
		for _, l := range strings.Split(logged(), "\n") {
			if !strings.Contains(l, "msg=access") {
				other = append(other, l)
			}
		}
		t.Fatalf("%d access lines + %d dropped != %d requests served; the other lines:\n%s", access, dropped, served, strings.Join(other, "\n"))
	}
	t.Logf("%d access lines written, %d dropped and reported, of %d requests served (%d sent)", access, dropped, served, n)
	sc := bufio.NewScanner(strings.NewReader(logged()))
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(line, "time=") {
			t.Fatalf("a torn or foreign line: %q", line)
		}
	}

	// Stall it again and stop it: the processes wait for their log at
	// most logFlushTimeout (2 s) each, then exit.
	r2, w2 := stalledStderr(t)
	d2 := StartDaemon(t, DaemonOpts{Root: root, Stderr: w2, Config: "access_log = true\nlog_level = \"info\"\n"})
	w2.Close()
	if got := getMany(t, "http://"+d2.Addr+"/f", n/4, 4, body); got != n/4 {
		t.Fatalf("%d of %d requests answered", got, n/4)
	}
	stop := time.Now()
	d2.Cmd.Process.Signal(syscall.SIGTERM)
	d2.WaitExit(15 * time.Second)
	t.Logf("stopped in %v with stderr stalled", time.Since(stop).Round(time.Millisecond))
	r2.Close()
}
