package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// The shared tree of test files, made once per run: the sizes that break
// naive implementations (0, 1, page, page-crossing) and one large file.
var (
	treeOnce sync.Once
	treeDir  string
	treeSums map[string]string
)

var treeFiles = map[string]int64{
	"empty":                0,
	"one":                  1,
	"page.bin":             4096,
	"mib-plus-one.bin":     1<<20 + 1,
	"big.bin":              256 << 20,
	"name with spaces.txt": 1234,
	"dir/ünïcödé ✓.bin":    5000,
}

func tree(t *testing.T) (string, map[string]string) {
	treeOnce.Do(func() {
		d, err := os.MkdirTemp("", "zfs-e2e-tree")
		if err != nil {
			t.Fatal(err)
		}
		treeSums = map[string]string{}
		for name, size := range treeFiles {
			treeSums[name] = WriteRandom(t, filepath.Join(d, name), size)
		}
		treeDir = d
	})
	if treeDir == "" {
		t.Fatal("test tree could not be created")
	}
	return treeDir, treeSums
}

func TestFetchEveryModeByteExact(t *testing.T) {
	root, sums := tree(t)
	for _, mode := range []string{"sendfile", "splice", "mmap", "copy"} {
		t.Run(mode, func(t *testing.T) {
			d := StartDaemon(t, DaemonOpts{Root: root, Config: fmt.Sprintf("zero_copy = %q\n", mode)})
			if st := d.MustStatus(); st.ZeroCopy != mode {
				t.Fatalf("status says zero_copy %q", st.ZeroCopy)
			}
			out := t.TempDir()
			for name, sum := range sums {
				dst := filepath.Join(out, strings.ReplaceAll(name, "/", "_"))
				r := Zfetch(t, "-q", "-o", dst, d.URL("/"+name))
				if r.Code != 0 {
					t.Fatalf("zfetch %s: exit %d: %s", name, r.Code, r.Stderr)
				}
				if got := FileSHA256(t, dst); got != sum {
					t.Errorf("%s: sha256 %s, want %s", name, got, sum)
				}
				if _, err := os.Stat(dst + ".part"); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s: .part left behind", name)
				}
			}
			// Percent-encoded URL for the UTF-8 name, written to stdout.
			r := Zfetch(t, "-q", "-o", "-", d.URL("/dir/%C3%BCn%C3%AFc%C3%B6d%C3%A9%20%E2%9C%93.bin"))
			if r.Code != 0 || sha(r.Stdout) != sums["dir/ünïcödé ✓.bin"] {
				t.Errorf("percent-encoded fetch: exit %d, %d bytes: %s", r.Code, len(r.Stdout), r.Stderr)
			}
		})
	}
}

// TestProcessModel proves the design: N workers, children of the
// supervisor, running the zfs-serve binary, and an accepted connection is
// held by a worker and not by the supervisor.
func TestProcessModel(t *testing.T) {
	root, _ := tree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 3})
	st := d.MustStatus()
	pids := WorkerPIDs(st)
	if len(pids) != 3 {
		t.Fatalf("%d workers, want 3", len(pids))
	}
	exe, err := filepath.EvalSymlinks(zfsServe)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if p := ppid(t, pid); p != st.PID {
			t.Errorf("worker %d has parent %d, want the supervisor %d", pid, p, st.PID)
		}
		if got, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); got != exe {
			t.Errorf("worker %d runs %q, want %q", pid, got, exe)
		}
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		for _, v := range []string{"LISTEN_FDS=", "NOTIFY_SOCKET=", "WATCHDOG_USEC="} {
			if bytes.Contains(env, []byte(v)) {
				t.Errorf("worker %d environment has %s", pid, v)
			}
		}
		// A worker holds its channel, the death pipe, and nothing of the
		// supervisor's: no listener, no control socket.
		if n := listeningSockets(t, pid); n != 0 {
			t.Errorf("worker %d holds %d listening sockets", pid, n)
		}
	}
	if n := listeningSockets(t, st.PID); n == 0 {
		t.Errorf("supervisor holds no listening socket")
	}

	// Hold a connection open mid-transfer and find who owns its socket.
	c := dial(t, d.Addr)
	defer c.Close()
	sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/big.bin"})
	resp := readResp(t, c)
	if resp.Status != wire.StatusOK {
		t.Fatalf("GET: %+v", resp)
	}
	io.CopyN(io.Discard, c, 1<<20) // some bytes, then leave it stalled
	inode := serverSocketInode(t, c.RemoteAddr().String(), c.LocalAddr().String())
	var holders []int
	for _, pid := range append(pids, st.PID) {
		if holdsInode(t, pid, inode) {
			holders = append(holders, pid)
		}
	}
	if len(holders) != 1 || holders[0] == st.PID || !slices.Contains(pids, holders[0]) {
		t.Fatalf("connection socket %s held by %v; want exactly one worker of %v (supervisor %d)", inode, holders, pids, st.PID)
	}
	// Status shows it in flight on that worker.
	st = d.WaitStatus(5*time.Second, "the transfer in status", func(st *ctlStatus) bool {
		return len(st.Transfers) == 1 && st.Transfers[0].WorkerPID == holders[0] && st.Transfers[0].Path == "/big.bin"
	})
	if tr := st.Transfers[0]; tr.Total != 256<<20 || tr.Sent < 1<<20 || tr.Client != c.LocalAddr().String() {
		t.Errorf("transfer in status: %+v", tr)
	}
}

// TestSendfileIsUsed proves the zero-copy path is the one taken: strace
// on the workers sees sendfile in sendfile mode and splice in splice mode,
// and neither in copy mode. A silent fallback to copying fails here.
func TestSendfileIsUsed(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("strace not installed (apt-get install strace); .ci/run installs it")
	}
	root, sums := tree(t)
	for _, tc := range []struct{ mode, want, notWant string }{
		{"sendfile", "sendfile(", "splice("},
		{"splice", "splice(", "sendfile("},
		{"copy", "pread64(", "sendfile("},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: fmt.Sprintf("zero_copy = %q\n", tc.mode)})
			pid := WorkerPIDs(d.MustStatus())[0]
			out := filepath.Join(t.TempDir(), "strace.out")
			st := exec.Command("strace", "-f", "-qq", "-e", "trace=sendfile,splice,pread64,sendmsg", "-o", out, "-p", strconv.Itoa(pid))
			var stderr bytes.Buffer
			st.Stderr = &stderr
			if err := st.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { st.Process.Signal(syscall.SIGINT); st.Wait() }()
			// strace prints nothing when attached; wait until it traces by
			// watching the tracer pid of the worker's threads.
			if !waitFor(5*time.Second, func() bool { return traced(pid) }) {
				t.Fatalf("strace did not attach: %s", stderr.String())
			}
			dst := filepath.Join(t.TempDir(), "f")
			if r := Zfetch(t, "-q", "-o", dst, d.URL("/mib-plus-one.bin")); r.Code != 0 {
				t.Fatalf("zfetch: %s", r.Stderr)
			}
			if FileSHA256(t, dst) != sums["mib-plus-one.bin"] {
				t.Fatal("content differs")
			}
			st.Process.Signal(syscall.SIGINT)
			st.Wait()
			b, _ := os.ReadFile(out)
			if !bytes.Contains(b, []byte(tc.want)) || bytes.Contains(b, []byte(tc.notWant)) {
				t.Fatalf("mode %s: want %q and no %q in the worker's syscalls:\n%s", tc.mode, tc.want, tc.notWant, tail(string(b), 20))
			}
		})
	}
}

func traced(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	return err == nil && !bytes.Contains(b, []byte("TracerPid:\t0\n"))
}

// TestBadInput: every kind of hostile request gets a clear refusal, never
// escapes the root, and the daemon keeps serving the next client.
func TestBadInput(t *testing.T) {
	root := shortTempDir(t)
	outside := shortTempDir(t)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	os.WriteFile(filepath.Join(root, "ok.txt"), []byte("hello"), 0o644)
	os.MkdirAll(filepath.Join(root, "sub"), 0o755)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "abs-link"))
	os.Symlink("../"+filepath.Base(outside)+"/secret", filepath.Join(root, "rel-link"))
	os.Symlink("/proc/self/root/etc/passwd", filepath.Join(root, "magic-link"))
	os.Symlink("ok.txt", filepath.Join(root, "good-link"))
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	haveDev := os.Geteuid() == 0 && syscall.Mknod(filepath.Join(root, "null"), syscall.S_IFCHR|0o666, 1<<8|3) == nil
	WriteRandom(t, filepath.Join(root, "big.bin"), 64<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	pids := WorkerPIDs(d.MustStatus())

	stillServing := func(t *testing.T) {
		t.Helper()
		c := dial(t, d.Addr)
		defer c.Close()
		sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/ok.txt"})
		if r, body := readFull(t, c); r.Status != wire.StatusOK || string(body) != "hello" {
			t.Fatalf("the next request failed: %+v %q", r, body)
		}
	}

	refusals := []struct {
		name   string
		path   string
		status wire.Status
		msg    string
	}{
		{"dotdot", "/../" + filepath.Base(outside) + "/secret", wire.StatusForbidden, "would leave the served root"},
		{"dotdot-inner", "/sub/../../etc/passwd", wire.StatusForbidden, "would leave the served root"},
		{"absolute", "/etc/passwd", wire.StatusNotFound, "not found: /etc/passwd"},
		{"abs-symlink", "/abs-link", wire.StatusForbidden, "outside the served root"},
		{"rel-symlink", "/rel-link", wire.StatusForbidden, "outside the served root"},
		{"magic-link", "/magic-link", wire.StatusForbidden, "forbidden"},
		{"fifo", "/fifo", wire.StatusNotRegular, "not a regular file"},
		{"directory", "/sub", wire.StatusNotRegular, "directory"},
		{"missing", "/nope", wire.StatusNotFound, "not found: /nope"},
	}
	if haveDev {
		refusals = append(refusals, struct {
			name   string
			path   string
			status wire.Status
			msg    string
		}{"device", "/null", wire.StatusNotRegular, "not a regular file"})
	} else {
		t.Log("not root: skipping the device-node case (mknod needs root)")
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, d.Addr)
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Second)) // refused within a second, never blocking
			sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: tc.path})
			r := readResp(t, c)
			if r.Status != tc.status || !strings.Contains(r.Message, tc.msg) || r.BodyLen != 0 {
				t.Fatalf("GET %s: %v %q, want %v containing %q", tc.path, r.Status, r.Message, tc.status, tc.msg)
			}
			// The connection stays usable after a refusal.
			sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/good-link"})
			if r, body := readFull(t, c); r.Status != wire.StatusOK || string(body) != "hello" {
				t.Fatalf("request after refusal: %+v %q", r, body)
			}
		})
	}

	frames := []struct {
		name string
		raw  []byte
		msg  string
	}{
		// Anything that does not start with the magic is HTTP (TestHTTPBadInput).
		{"huge length field", rawHeader(0xFFFF, 0, 0), "limit is 4096"},
		{"path over the limit", append(rawHeader(wire.MaxPath+1, 0, 0), bytes.Repeat([]byte("a"), wire.MaxPath+1)...), "limit is 4096"},
		{"offset overflow", rawHeader(3, 1<<63, 0), "out of range"},
		{"unknown version", func() []byte { b := rawHeader(0, 0, 0); b[2] = 77; return b }(), "version 77"},
	}
	for _, tc := range frames {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, d.Addr)
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(tc.raw)
			r := readResp(t, c)
			if r.Status == wire.StatusOK || !strings.Contains(r.Message, tc.msg) {
				t.Fatalf("got %v %q, want an error containing %q", r.Status, r.Message, tc.msg)
			}
			// After a framing error the server closes the connection.
			if n, err := c.Read(make([]byte, 1)); err == nil {
				t.Fatalf("connection still open after a framing error (read %d bytes)", n)
			}
			stillServing(t)
		})
	}

	t.Run("range past the end", func(t *testing.T) {
		c := dial(t, d.Addr)
		defer c.Close()
		sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/ok.txt", Offset: 6})
		if r := readResp(t, c); r.Status != wire.StatusRangeNotSatisfiable || !strings.Contains(r.Message, "past the end") {
			t.Fatalf("got %v %q", r.Status, r.Message)
		}
		// Offset == size is an empty, valid range (a resume of a complete file).
		sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/ok.txt", Offset: 5})
		if r, body := readFull(t, c); r.Status != wire.StatusOK || len(body) != 0 || r.Size != 5 {
			t.Fatalf("offset == size: %+v %q", r, body)
		}
		// A range is honoured byte for byte.
		sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/ok.txt", Offset: 1, Length: 3})
		if r, body := readFull(t, c); r.Status != wire.StatusOK || string(body) != "ell" {
			t.Fatalf("range 1+3: %+v %q", r, body)
		}
	})

	t.Run("truncated frame", func(t *testing.T) {
		c := dial(t, d.Addr)
		c.Write(rawHeader(10, 0, 0)[:12])
		c.(*net.TCPConn).CloseWrite()
		io.ReadAll(c)
		c.Close()
		stillServing(t)
	})

	t.Run("client vanishes mid-transfer", func(t *testing.T) {
		for range 20 {
			c := dial(t, d.Addr)
			sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/big.bin"})
			readResp(t, c)
			io.CopyN(io.Discard, c, 256<<10)
			// RST rather than FIN, the rudest way to go.
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		stillServing(t)
		if got := WorkerPIDs(d.MustStatus()); !slices.Equal(got, pids) {
			t.Fatalf("workers changed from %v to %v: a vanished client killed one (SIGPIPE?)", pids, got)
		}
		if strings.Contains(d.Log(), "worker exited") {
			t.Fatalf("a worker exited:\n%s", d.Log())
		}
	})
}

// TestFileShrinksWhileSent: the connection ends with a log line, the client
// sees a short body, and the worker is fine.
func TestFileShrinksWhileSent(t *testing.T) {
	for _, mode := range []string{"sendfile", "splice", "mmap", "copy"} {
		t.Run(mode, func(t *testing.T) {
			root := shortTempDir(t)
			path := filepath.Join(root, "shrinks.bin")
			WriteRandom(t, path, 64<<20)
			d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: fmt.Sprintf("zero_copy = %q\nsend_timeout = \"5s\"\n", mode)})
			pids := WorkerPIDs(d.MustStatus())
			c := dial(t, d.Addr)
			defer c.Close()
			sendReq(t, c, &wire.Request{Op: wire.OpGet, Path: "/shrinks.bin"})
			r := readResp(t, c)
			if r.BodyLen != 64<<20 {
				t.Fatalf("response: %+v", r)
			}
			io.CopyN(io.Discard, c, 1<<20)
			if err := os.Truncate(path, 2<<20); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if err != nil {
				t.Fatalf("after truncation the read ended with %v, want EOF (connection closed by the server)", err)
			}
			if got := 1<<20 + n; got >= 64<<20 {
				t.Fatalf("received the whole body (%d bytes) from a truncated file", got)
			}
			if !waitFor(5*time.Second, func() bool { return strings.Contains(d.Log(), "file shrank while being sent") }) {
				t.Fatalf("no log line about the shrunk file:\n%s", d.Log())
			}
			if got := WorkerPIDs(d.MustStatus()); !slices.Equal(got, pids) {
				t.Fatalf("worker replaced: %v -> %v", pids, got)
			}
		})
	}
}

func TestHeaderTimeout(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Config: "header_timeout = \"300ms\"\n"})
	c := dial(t, d.Addr)
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if err != io.EOF {
		t.Fatalf("silent client: read %d, %v; want EOF (closed by the server)", n, err)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("closed after %v, before the 300ms header timeout", el)
	}
}

// TestFastClientDoesNotStarveOthers: with one worker busy streaming a big
// file to a fast reader, small requests on other connections still finish.
func TestFastClientDoesNotStarveOthers(t *testing.T) {
	root, sums := tree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", d.Addr)
			if err != nil {
				return
			}
			defer c.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				wire.WriteRequest(c, &wire.Request{Op: wire.OpGet, Path: "/big.bin"})
				br := bufio.NewReader(c)
				r, err := wire.ReadResponse(br)
				if err != nil {
					return
				}
				if _, err := io.CopyN(io.Discard, br, r.BodyLen); err != nil {
					return
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	d.WaitStatus(5*time.Second, "the big transfers", func(st *ctlStatus) bool { return len(st.Transfers) >= 1 })
	for range 20 {
		start := time.Now()
		r := Zfetch(t, "-q", "-o", "-", d.URL("/page.bin"))
		if r.Code != 0 || sha(r.Stdout) != sums["page.bin"] {
			t.Fatalf("small fetch beside big streams: exit %d %s", r.Code, r.Stderr)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Fatalf("a 4 KiB fetch took %v beside a big stream", el)
		}
	}
}

// --- raw protocol helpers ---

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sendReq(t testing.TB, c net.Conn, q *wire.Request) {
	t.Helper()
	if _, err := c.Write(wire.AppendRequest(nil, q)); err != nil {
		t.Fatal(err)
	}
}

// readResp reads a response header byte by byte-exact from c (no buffering,
// so the body stays in the socket for the caller).
func readResp(t testing.TB, c net.Conn) wire.Response {
	t.Helper()
	r, err := wire.ReadResponse(c)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	return r
}

func readFull(t testing.TB, c net.Conn) (wire.Response, []byte) {
	t.Helper()
	r := readResp(t, c)
	body := make([]byte, r.BodyLen)
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("read body: %v", err)
	}
	return r, body
}

func rawHeader(pathLen int, off, length uint64) []byte {
	b := []byte{'Z', 'Q', wire.Version, byte(wire.OpGet)}
	b = binary.BigEndian.AppendUint16(b, uint16(pathLen))
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint64(b, length)
}

// serverSocketInode finds the inode of the server side of the TCP
// connection (local = server address, remote = client address).
func serverSocketInode(t testing.TB, server, client string) string {
	t.Helper()
	want := hexAddr(t, server) + " " + hexAddr(t, client)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[1]+" "+f[2] == want {
			return f[9]
		}
	}
	t.Fatalf("connection %s -> %s not in /proc/net/tcp", client, server)
	return ""
}

func hexAddr(t testing.TB, a string) string {
	ap, err := net.ResolveTCPAddr("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	ip := ap.IP.To4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port)
}

func holdsInode(t testing.TB, pid int, inode string) bool {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); l == "socket:["+inode+"]" {
			return true
		}
	}
	return false
}

// listeningSockets counts the listening TCP sockets a process holds.
func listeningSockets(t testing.TB, pid int) int {
	listening := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n") {
			if fs := strings.Fields(line); len(fs) > 9 && fs[3] == "0A" {
				listening[fs[9]] = true
			}
		}
	}
	n := 0
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if ino, ok := strings.CutPrefix(l, "socket:["); ok && listening[strings.TrimSuffix(ino, "]")] {
			n++
		}
	}
	return n
}

func sha(s string) string {
	return FileSHA256Bytes([]byte(s))
}

// stableFDs counts a process's descriptors once the count has settled (the
// control connection of the status call just made closes asynchronously).
func stableFDs(t *testing.T, pid int) int {
	t.Helper()
	n, same := openFDs(t, pid), 0
	waitFor(5*time.Second, func() bool {
		m := openFDs(t, pid)
		if m == n {
			same++
		} else {
			n, same = m, 0
		}
		return same >= 5
	})
	return n
}
