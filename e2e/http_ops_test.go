package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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
	"syscall"
	"testing"
	"time"
)

// httpSlowGet starts an HTTP GET of path whose body the client reads only
// when gate closes, and returns a channel with the body's sha256.
func httpSlowGet(t *testing.T, addr, path string, gate <-chan struct{}) <-chan string {
	t.Helper()
	c := dial(t, addr)
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(128 << 10)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	done := make(chan string, 1)
	go func() {
		<-gate
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			done <- "error: " + err.Error()
			return
		}
		h := sha256.New()
		_, err = io.Copy(h, resp.Body)
		if err != nil {
			done <- "error: " + err.Error()
			return
		}
		done <- hex.EncodeToString(h.Sum(nil)) + " close=" + strconv.FormatBool(resp.Close)
	}()
	return done
}

// TestHTTPDrain: a drain finishes the HTTP response in flight, closes idle
// kept-alive connections, and refuses new ones with 503 until it exits.
func TestHTTPDrain(t *testing.T) {
	root, sums := httpTree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	// An idle kept-alive connection, after one response.
	idle := dial(t, d.Addr)
	defer idle.Close()
	idle.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(idle, "GET /list/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
	ibr := bufio.NewReader(idle)
	resp, err := http.ReadResponse(ibr, nil)
	if err != nil || resp.Close {
		t.Fatalf("keep-alive response: %v %+v", err, resp)
	}
	io.Copy(io.Discard, resp.Body)

	gate := make(chan struct{})
	got := httpSlowGet(t, d.Addr, "/big.bin", gate)
	d.WaitStatus(5*time.Second, "the http transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	if r := d.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %d %s", r.Code, r.Stderr)
	}
	d.WaitState("draining", 5*time.Second)
	// The idle connection is closed by the drain.
	if _, err := ibr.ReadByte(); err != io.EOF {
		t.Fatalf("idle kept-alive connection during a drain: %v", err)
	}
	close(gate)
	if s := <-got; s != sums["/big.bin"]+" close=false" && s != sums["/big.bin"]+" close=true" {
		t.Fatalf("response in flight: %s", s)
	}
	if code := d.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after the drain", code)
	}
}

// daemonAtLimit starts a daemon of max_connections = 1 over httpTree and
// holds its one connection with a stalled download until the test ends,
// so that the supervisor refuses every other.
func daemonAtLimit(t *testing.T) *Daemon {
	t.Helper()
	root, _ := httpTree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: "max_connections = 1\n"})
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	httpSlowGet(t, d.Addr, "/big.bin", gate)
	d.WaitStatus(5*time.Second, "the transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	return d
}

// TestHTTPRefusedBySupervisor: a connection the supervisor refuses
// (max_connections) gets 503 with Retry-After, not native bytes.
func TestHTTPRefusedBySupervisor(t *testing.T) {
	d := daemonAtLimit(t)
	resp, body, closed := rawHTTP(t, d.Addr, "GET /small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !closed || !strings.Contains(body, "max_connections") {
		t.Fatalf("got %d %v %q closed=%v", resp.StatusCode, resp.Header, body, closed)
	}
	if r := curl(t, "-o", "/dev/null", "-w", "%{http_code}", d.httpURL("/small.txt")); r.Stdout != "503" {
		t.Fatalf("curl: %q %s", r.Stdout, r.Stderr)
	}
}

// TestHTTPReload: after a reload, new HTTP connections are served by the
// new generation (a new root), while a kept-alive one finishes on the old.
func TestHTTPReload(t *testing.T) {
	root, _ := httpTree(t)
	root2 := shortTempDir(t)
	os.WriteFile(filepath.Join(root2, "new.txt"), []byte("new"), 0o644)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: fmt.Sprintf("root = %q\n", root)})
	cfg, _ := os.ReadFile(d.Config)
	os.WriteFile(d.Config, bytes.Replace(cfg, []byte(root), []byte(root2), 1), 0o644)
	if r := d.Zctl("reload", "--wait"); r.Code != 0 {
		t.Fatalf("reload: %d %s", r.Code, r.Stderr)
	}
	if r := curl(t, "-f", d.httpURL("/new.txt")); r.Code != 0 || r.Stdout != "new" {
		t.Fatalf("after reload: %d %q %s", r.Code, r.Stdout, r.Stderr)
	}
}

// TestHTTPAccessLog: access_log = true logs one line per response, HTTP
// and native, in the shape slog gives every other line (after the
// worker's attributes), in text and in JSON; at log_level = "warn", none.
func TestHTTPAccessLog(t *testing.T) {
	root, _ := httpTree(t)
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: "access_log = true\nlog_format = \"" + format + "\"\n"})
			pid := WorkerPIDs(d.MustStatus())[0]
			curl(t, "-o", "/dev/null", d.httpURL("/small.txt"))
			curl(t, "-o", "/dev/null", d.httpURL("/nope"))
			Zfetch(t, "-q", "-o", "-", d.URL("/list/a.txt"))
			var want []*regexp.Regexp
			if format == "text" {
				head := `(?m)^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\S+ level=INFO msg=access proc=worker pid=` + strconv.Itoa(pid) + ` gen=1 slot=0 `
				want = []*regexp.Regexp{
					regexp.MustCompile(head + `proto=http client=127\.0\.0\.1:\d+ method=GET path=/small\.txt status=200 bytes=4096 duration=\d[0-9.]*[µm]?s$`),
					regexp.MustCompile(head + `proto=http client=127\.0\.0\.1:\d+ method=GET path=/nope status=404 bytes=\d+ duration=\S+$`),
					regexp.MustCompile(head + `proto=native client=127\.0\.0\.1:\d+ method=GET path=/list/a\.txt status=ok bytes=10 duration=\S+$`),
				}
			} else {
				head := `(?m)^\{"time":"\d{4}-\d\d-\d\dT[^"]+","level":"INFO","msg":"access","proc":"worker","pid":` + strconv.Itoa(pid) + `,"gen":1,"slot":0,`
				want = []*regexp.Regexp{
					regexp.MustCompile(head + `"proto":"http","client":"127\.0\.0\.1:\d+","method":"GET","path":"/small\.txt","status":200,"bytes":4096,"duration":\d+\}$`),
					regexp.MustCompile(head + `"proto":"http","client":"127\.0\.0\.1:\d+","method":"GET","path":"/nope","status":404,"bytes":\d+,"duration":\d+\}$`),
					regexp.MustCompile(head + `"proto":"native","client":"127\.0\.0\.1:\d+","method":"GET","path":"/list/a\.txt","status":"ok","bytes":10,"duration":\d+\}$`),
				}
			}
			if !d.LogMatches(5*time.Second, want...) {
				t.Fatalf("access log lacks one of %q:\n%s", want, tail(d.Log(), 20))
			}
		})
	}
	t.Run("level warn", func(t *testing.T) {
		d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: "access_log = true\nlog_level = \"warn\"\n"})
		if r := curl(t, "-f", "-o", "/dev/null", d.httpURL("/small.txt")); r.Code != 0 {
			t.Fatalf("curl: %d %s", r.Code, r.Stderr)
		}
		d.Cmd.Process.Signal(syscall.SIGTERM)
		if code := d.WaitExit(30 * time.Second); code != 0 {
			t.Fatalf("exit status %d after SIGTERM", code)
		}
		// An exited daemon has written every line (internal/logbuf).
		if strings.Contains(d.Log(), "msg=access") {
			t.Fatalf("log_level warn, yet an access line:\n%s", tail(d.Log(), 20))
		}
	})
}

// TestHTTPSendfileIsUsed: an HTTP body goes out through sendfile, its
// head with MSG_MORE.
func TestHTTPSendfileIsUsed(t *testing.T) {
	needTool(t, "strace")
	needTool(t, "curl")
	root, sums := httpTree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	pid := WorkerPIDs(d.MustStatus())[0]
	out := filepath.Join(t.TempDir(), "strace.out")
	st := exec.Command("strace", "-f", "-qq", "-e", "trace=sendfile,sendmsg,write,pread64", "-o", out, "-p", strconv.Itoa(pid))
	var stderr bytes.Buffer
	st.Stderr = &stderr
	if err := st.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { st.Process.Signal(syscall.SIGINT); st.Wait() }()
	if !waitFor(5*time.Second, func() bool { return traced(pid) }) {
		t.Fatalf("strace did not attach: %s", stderr.String())
	}
	dst := filepath.Join(t.TempDir(), "f")
	if r := curl(t, "-f", "-o", dst, d.httpURL("/mib-plus-one.bin")); r.Code != 0 || FileSHA256(t, dst) != sums["/mib-plus-one.bin"] {
		t.Fatalf("curl: %d %s", r.Code, r.Stderr)
	}
	st.Process.Signal(syscall.SIGINT)
	st.Wait()
	b, _ := os.ReadFile(out)
	if !bytes.Contains(b, []byte("sendfile(")) || !bytes.Contains(b, []byte("MSG_MORE")) || bytes.Contains(b, []byte("pread64(")) {
		t.Fatalf("want sendfile and a MSG_MORE head in the worker's syscalls:\n%s", tail(string(b), 20))
	}
}
