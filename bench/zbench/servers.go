package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zfs-serve/zfs-serve/bench/internal/proc"
)

// server is one server under test, started and stopped by the benchmark.
type server struct {
	key   string // "zfs-sendfile", "nginx", "gohttp", "probe"
	label string // for the report
	proto string // "native" or "http"
	mode  string // zfs-serve's zero_copy; "" for the peers
	addr  string
	cmd   *exec.Cmd
	done  chan struct{}
	extra []int // pids seen in the tree (workers), killed if left over
	ctl   string
	log   string
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// pids is the server's process tree now: supervisor or master, and workers.
func (s *server) pids() []int {
	ps := proc.Tree(s.pid())
	for _, p := range ps[1:] {
		if !contains(s.extra, p) {
			s.extra = append(s.extra, p)
		}
	}
	return ps
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

var zfsModes = []string{"sendfile", "splice", "mmap", "copy"}

// zfsAcceptKey is zfs-serve in sendfile mode with dispatch = "accept"
// (the workers accept themselves), a row of the sections where the
// dispatch mode matters: small64, newconn, httpnewconn.
const zfsAcceptKey = "zfs-accept"

// zfsLogKey and nginxLogKey are zfs-serve (sendfile) and nginx with their
// access logs on, each into a file in its own folder: the httplog section.
const (
	zfsLogKey   = "zfs-log"
	nginxLogKey = "nginx-log"
)

// serverKeys lists every server in report order.
func allServers() []string {
	return []string{"zfs-sendfile", "zfs-splice", "zfs-mmap", "zfs-copy", "nginx", "gohttp", "probe"}
}

func serverLabel(key string) string {
	switch key {
	case "nginx":
		return "nginx"
	case "gohttp":
		return "Go net/http"
	case "probe":
		return "bare sendfile loop"
	case zfsLogKey:
		return "zfs-serve (sendfile), access log to a file"
	case nginxLogKey:
		return "nginx, access log to a file"
	}
	if m, ok := strings.CutPrefix(key, "zfs-"); ok {
		return "zfs-serve (" + m + ")"
	}
	return key
}

// start starts the server key and waits until it accepts connections.
func (b *bench) start(key string) (*server, error) {
	s := &server{key: key, label: serverLabel(key), proto: "http", done: make(chan struct{})}
	dir := filepath.Join(b.scratch, "srv-"+key)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s.log = filepath.Join(dir, "log")
	logf, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	var addrLine *bufio.Reader
	switch {
	case key == "probe" || key == "gohttp":
		name := map[string]string{"probe": "zsendfile", "gohttp": "zgohttp"}[key]
		s.cmd = exec.Command(filepath.Join(b.bin, name), "-listen", "127.0.0.1:0", "-root", b.data)
		s.cmd.Stderr = logf
		out, err := s.cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		addrLine = bufio.NewReader(out)
	case key == "nginx" || key == nginxLogKey:
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.addr = "127.0.0.1:" + strconv.Itoa(port)
		conf := filepath.Join(dir, "nginx.conf")
		accessLog := "off"
		if key == nginxLogKey {
			accessLog = filepath.Join(dir, "access.log")
		}
		if err := os.WriteFile(conf, []byte(nginxConf(dir, b.data, s.addr, b.nofile, accessLog)), 0o644); err != nil {
			return nil, err
		}
		s.cmd = exec.Command(b.nginx, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
	case strings.HasPrefix(key, "zfs-"):
		s.mode = strings.TrimPrefix(key, "zfs-")
		dispatch := "handoff"
		if key == zfsAcceptKey {
			s.mode, dispatch = "sendfile", "accept"
		}
		var accessLog string
		if key == zfsLogKey {
			s.mode = "sendfile"
			accessLog = fmt.Sprintf("access_log = true\naccess_log_path = %q\n", filepath.Join(dir, "access.log"))
		}
		s.proto = "native"
		s.ctl = filepath.Join(dir, "ctl.sock")
		conf := filepath.Join(dir, "zfs-serve.toml")
		text := zfsConf(b.data, s.ctl, s.mode, dispatch)
		if accessLog != "" {
			// Access lines are at level info.
			text = strings.Replace(text, `log_level = "warn"`, `log_level = "info"`, 1) + accessLog
		}
		if b.extraConf != "" {
			text += "# ZBENCH_ZFS_CONF\n" + b.extraConf + "\n"
		}
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		exe := filepath.Join(b.bin, "zfs-serve")
		if b.zfsExe != "" {
			exe = b.zfsExe
		}
		s.cmd = exec.Command(exe, "--config", conf)
		s.cmd.Env = append(append(os.Environ(), b.baseZfsEnv...), b.zfsEnv...)
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
	default:
		return nil, fmt.Errorf("unknown server %q", key)
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", key, err)
	}
	b.track(s)
	go func() { s.cmd.Wait(); close(s.done) }()
	if err := b.waitReady(s, addrLine); err != nil {
		b.stop(s)
		msg, _ := os.ReadFile(s.log)
		return nil, fmt.Errorf("%s did not start: %w\n%s", key, err, tail(string(msg), 2000))
	}
	s.pids()
	b.logf("started %s pid %d on %s", s.label, s.pid(), s.addr)
	return s, nil
}

func (b *bench) waitReady(s *server, addrLine *bufio.Reader) error {
	deadline := time.Now().Add(20 * time.Second)
	if addrLine != nil {
		type res struct {
			line string
			err  error
		}
		ch := make(chan res, 1)
		go func() { l, err := addrLine.ReadString('\n'); ch <- res{l, err} }()
		select {
		case r := <-ch:
			if r.err != nil {
				return r.err
			}
			a, ok := strings.CutPrefix(strings.TrimSpace(r.line), "listening ")
			if !ok {
				return fmt.Errorf("unexpected first line %q", r.line)
			}
			s.addr = a
			return nil
		case <-s.done:
			return errors.New("exited")
		case <-time.After(time.Until(deadline)):
			return errors.New("timed out")
		}
	}
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return errors.New("exited")
		default:
		}
		if s.ctl != "" {
			if st, err := b.zfsStatus(s); err == nil && st.State == "serving" && len(st.Listeners) > 0 && len(st.Workers) > 0 {
				ready := true
				for _, w := range st.Workers {
					ready = ready && w.PID > 0 && w.State == "ready"
				}
				if ready {
					s.addr = st.Listeners[0].Addr
					return nil
				}
			}
		} else if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
			c.Close()
			// nginx's workers may still be starting: wait for them too.
			if len(proc.Children(s.pid())) >= 2 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("timed out")
}

// zfsStatus is the part of `zctl status --json` the benchmark reads.
type zfsStatus struct {
	State     string `json:"state"`
	PID       int    `json:"pid"`
	Listeners []struct {
		Addr string `json:"addr"`
	} `json:"listeners"`
	Workers []struct {
		PID   int    `json:"pid"`
		State string `json:"state"`
	} `json:"workers"`
}

func (b *bench) zfsStatus(s *server) (*zfsStatus, error) {
	out, err := exec.Command(filepath.Join(b.bin, "zctl"), "-s", s.ctl, "status", "--json").Output()
	if err != nil {
		return nil, err
	}
	var st zfsStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// workerPIDs returns the zfs-serve worker pids (or nginx's workers): the
// children of the server's main process.
func (s *server) workerPIDs() []int { return proc.Children(s.pid()) }

// stop stops the server: SIGTERM to its main pid (zfs-serve drains, nginx
// and the Go servers exit), SIGKILL if it has not exited within 15s, then
// SIGKILL to any worker pid of its that is still there.
func (b *bench) stop(s *server) {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.pids()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		b.logf("%s (pid %d) ignored SIGTERM for 15s; killing it", s.label, s.pid())
		s.cmd.Process.Kill()
		<-s.done
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range s.extra {
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(p) {
			b.logf("%s worker pid %d outlived its parent; killing it", s.label, p)
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	b.untrack(s)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// nginxConf is nginx as its users tune it for static files, the peer the
// brief names: sendfile, tcp_nopush and an open-file cache
// (open_file_cache max=10000 inactive=20s; open_file_cache_valid 1s, as
// zfs-serve has one too), two workers, no access log (accessLog "off"; or
// a file, nginx's default format, unbuffered as nginx's default), everything
// it writes inside dir. Keep-alive is not capped (keepalive_requests), as
// zfs-serve's and net/http's are not.
func nginxConf(dir, root, addr string, nofile int, accessLog string) string {
	user := ""
	if os.Getuid() == 0 {
		// The scratch tree is private to root (mktemp -d); the default
		// worker user could not read it.
		user = "user root;\n"
	}
	return fmt.Sprintf(`# Written by bench/zbench for one benchmark run.
%sworker_processes 2;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
worker_rlimit_nofile %[5]d;
events { worker_connections %[6]d; }
http {
    access_log %[7]s;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=10000 inactive=20s;
    open_file_cache_valid 1s;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    default_type application/octet-stream;
    client_body_temp_path %[2]s/tmp-body;
    proxy_temp_path %[2]s/tmp-proxy;
    fastcgi_temp_path %[2]s/tmp-fastcgi;
    uwsgi_temp_path %[2]s/tmp-uwsgi;
    scgi_temp_path %[2]s/tmp-scgi;
    server {
        listen %[4]s;
        root %[3]s;
    }
}
`, user, dir, root, addr, nofile, max(nofile/2, 1024), accessLog)
}

// zfsConf is zfs-serve with two workers (one per core) in mode, HTTP/1.1
// on (its default, written out: the HTTP sections need it) on the same
// port as the native protocol. Digests are off: each worker would hash
// every file it serves once, in the background, and with a 1 GiB file
// that pass lands inside the measurements (docs/DIGESTS.md has its cost;
// an operator warms them with zctl digest before publishing).
func zfsConf(root, ctl, mode, dispatch string) string {
	return fmt.Sprintf(`# Written by bench/zbench for one benchmark run.
root = %q
listen = ["127.0.0.1:0"]
control = %q
workers = 2
zero_copy = %q
dispatch = %q
max_connections = 20000
http = true
digests = false
log_level = "warn"
`, root, ctl, mode, dispatch)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
