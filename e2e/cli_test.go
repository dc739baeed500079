package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestCheckAndVersion(t *testing.T) {
	dir := shortTempDir(t)
	n := 0
	write := func(body string) string {
		n++
		p := filepath.Join(dir, fmt.Sprintf("c%d.toml", n))
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	if r := run(t, 10*time.Second, zfsServe, "--version"); r.Code != 0 || !strings.HasPrefix(r.Stdout, "zfs-serve ") {
		t.Fatalf("--version: %d %q", r.Code, r.Stdout)
	}
	good := write(fmt.Sprintf("root = %q\nworkers = 3\nzero_copy = \"splice\"\n", dir))
	r := run(t, 10*time.Second, zfsServe, "--check", "--config", good)
	if r.Code != 0 || !strings.Contains(r.Stdout, "configuration OK") || !strings.Contains(r.Stdout, "3 workers") {
		t.Fatalf("--check on a good config: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"unknown key", "root = \"/\"\n\nwokers = 2\n", `.toml:3: unknown key "wokers"`},
		{"bad type", "workers = \"two\"\n", ".toml:1:"},
		{"bad mode", "zero_copy = \"zerocopy\"\n", `.toml:1: key "zero_copy": must be one of sendfile, splice, mmap, copy`},
		{"bad duration", "\n\ndrain_timeout = \"forever\"\n", ".toml:3:"},
		{"missing root", "root = \"/nonexistent/dir\"\n", `key "root"`},
		{"bad listen", "listen = [\"localhost\"]\n", `key "listen"`},
		{"syntax", "root = \n", ".toml:1:"},
		{"one key in two cases", "root = \"/\"\nRoot = \"/tmp\"\n", `.toml:2: key "Root" is key "root" again (`},
		{"access log a directory", fmt.Sprintf("root = %q\naccess_log = true\naccess_log_path = %q\n", dir, dir), `key "access_log_path": ` + dir + ` is a directory, not a regular file`},
	} {
		r := run(t, 10*time.Second, zfsServe, "--check", "--config", write(tc.body))
		if r.Code != 2 || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 2 and %q", tc.name, r.Code, r.Stderr, tc.want)
		}
	}
	if r := run(t, 10*time.Second, zfsServe, "--check", "--config", filepath.Join(dir, "missing.toml")); r.Code != 2 || !strings.Contains(r.Stderr, "no such file") {
		t.Errorf("missing explicit config: %d %q", r.Code, r.Stderr)
	}
	if r := run(t, 10*time.Second, zfsServe, "--bogus"); r.Code != 2 {
		t.Errorf("unknown flag: exit %d", r.Code)
	}
	// Flags override the file.
	r = run(t, 10*time.Second, zfsServe, "--check", "--config", good, "--workers", "5", "--listen", "127.0.0.1:9", "--listen", "[::1]:9")
	if r.Code != 0 || !strings.Contains(r.Stdout, "5 workers") || !strings.Contains(r.Stdout, "listen 127.0.0.1:9 [::1]:9") {
		t.Fatalf("flags over config: %q %q", r.Stdout, r.Stderr)
	}
	// The worker entry refuses to run by hand.
	if r := run(t, 10*time.Second, zfsServe, "__worker"); r.Code == 0 || !strings.Contains(r.Stderr, "not by hand") {
		t.Fatalf("worker by hand: %d %q", r.Code, r.Stderr)
	}
}

// TestDefaults: with no config file and no flags (but the control socket,
// to keep the test's own), zfs-serve serves the current directory on
// 127.0.0.1:7070.
func TestDefaults(t *testing.T) {
	if !refused("127.0.0.1:7070") {
		t.Skip("127.0.0.1:7070 is in use on this machine")
	}
	if _, err := os.Stat("/etc/zfs-serve/zfs-serve.toml"); err == nil {
		t.Skip("/etc/zfs-serve/zfs-serve.toml exists here and would be read")
	}
	dir := shortTempDir(t)
	os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello"), 0o644)
	sock := filepath.Join(dir, "c.sock")
	cmd := exec.Command(zfsServe, "--control", sock)
	cmd.Dir = dir
	log := filepath.Join(dir, "log")
	lf, _ := os.Create(log)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	d := &Daemon{t: t, Cmd: cmd, Control: sock, LogPath: log, exited: make(chan struct{}), workers: map[int]bool{}}
	go func() { cmd.Wait(); close(d.exited) }()
	t.Cleanup(d.cleanup)
	st := d.WaitState("serving", 15*time.Second)
	if st.Listeners[0].Addr != "127.0.0.1:7070" || st.Root != dir {
		t.Fatalf("defaults: listen %s root %s", st.Listeners[0].Addr, st.Root)
	}
	if !strings.HasPrefix(st.Config, "built-in defaults") {
		t.Errorf("config source %q", st.Config)
	}
	if r := Zfetch(t, "-q", "-o", "-", "127.0.0.1:7070/hello.txt"); r.Code != 0 || r.Stdout != "hello" {
		t.Fatalf("fetch: %d %q %q", r.Code, r.Stdout, r.Stderr)
	}
	d.Zctl("drain")
	if code := d.WaitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestStartupFailures(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{})
	dir := shortTempDir(t)
	// The port is taken.
	r := run(t, 20*time.Second, zfsServe, "--config", "/dev/null", "--root", dir, "--listen", d.Addr, "--control", filepath.Join(dir, "c.sock"))
	if r.Code != 1 || !strings.Contains(r.Stderr, "address already in use") {
		t.Errorf("port in use: exit %d %q", r.Code, r.Stderr)
	}
	// The control socket belongs to a running daemon.
	r = run(t, 20*time.Second, zfsServe, "--config", "/dev/null", "--root", dir, "--listen", "127.0.0.1:0", "--control", d.Control)
	if r.Code != 1 || !strings.Contains(r.Stderr, "another zfs-serve is answering") {
		t.Errorf("control in use: exit %d %q", r.Code, r.Stderr)
	}
	if st := d.MustStatus(); st.State != "serving" {
		t.Fatalf("the first daemon was disturbed: %s", st.State)
	}
	// A stale socket file (no daemon behind it) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	d2 := StartDaemon(t, DaemonOpts{Args: []string{"--control", stale}, NoWait: true})
	d2.Control = stale
	d2.WaitState("serving", 15*time.Second)
	d2.Cmd.Process.Kill() // leaves the socket file behind
	d2.WaitExit(5 * time.Second)
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("kill -9 should leave the socket file: %v", err)
	}
	d3 := StartDaemon(t, DaemonOpts{Args: []string{"--control", stale}, NoWait: true})
	d3.Control = stale
	d3.WaitState("serving", 15*time.Second)
}

// TestWorkersDropPrivileges: as root with user= set, workers run as that
// user and still serve; a root that user cannot read fails the start with
// the reason.
func TestWorkersDropPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: privilege dropping needs root")
	}
	root := shortTempDir(t)
	os.Chmod(root, 0o755)
	os.Chmod(binDir, 0o755)
	os.WriteFile(filepath.Join(root, "f"), []byte("data"), 0o644)
	d := StartDaemon(t, DaemonOpts{Root: root, Config: "user = \"nobody\"\ngroup = \"nogroup\"\n"})
	for _, pid := range WorkerPIDs(d.MustStatus()) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(b), "\nUid:\t65534\t65534\t65534\t65534\n") || !regexp.MustCompile(`\nGroups:\s*\n`).Match(b) {
			t.Errorf("worker %d is not nobody with no groups:\n%s", pid, b)
		}
	}
	if r := Zfetch(t, "-q", "-o", "-", d.URL("/f")); r.Code != 0 || r.Stdout != "data" {
		t.Fatalf("fetch as nobody: %d %q", r.Code, r.Stderr)
	}
	secret := shortTempDir(t) // 0700 root: nobody cannot open it
	d2 := StartDaemon(t, DaemonOpts{Root: secret, Config: "user = \"nobody\"\n", NoWait: true})
	if code := d2.WaitExit(20 * time.Second); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(d2.Log(), "permission denied") || !strings.Contains(d2.Log(), "startup failed") {
		t.Fatalf("log does not say why:\n%s", d2.Log())
	}
}

// TestCLIHelp: --help prints the usage on stdout and exits 0; a bad flag
// prints one line on stderr and exits 2.
func TestCLIHelp(t *testing.T) {
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{zfsServe, []string{"--help"}, "Usage: zfs-serve "},
		{zfsServe, []string{"-h"}, "Usage: zfs-serve "},
		{zctlBin, []string{"--help"}, "Usage: zctl "},
		{zctlBin, []string{"help"}, "Usage: zctl "},
		{zctlBin, []string{"drain", "--help"}, "Usage: zctl drain "},
		{zfetch, []string{"--help"}, "Usage: zfetch "},
	} {
		name := filepath.Base(tc.bin) + " " + strings.Join(tc.args, " ")
		r := run(t, 10*time.Second, tc.bin, tc.args...)
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, tc.want) || r.Stderr != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 0 and %q... on stdout", name, r.Code, r.Stdout, r.Stderr, tc.want)
		}
	}
	for _, tc := range []struct {
		bin  string
		args []string
	}{
		{zfsServe, []string{"--bogus"}},
		{zctlBin, []string{"--bogus", "status"}},
		{zctlBin, []string{"status", "--bogus"}},
		{zfetch, []string{"--bogus", "h/f"}},
	} {
		prog := filepath.Base(tc.bin)
		r := run(t, 10*time.Second, tc.bin, tc.args...)
		if want := prog + ": flag provided but not defined: -bogus (see --help)\n"; r.Code != 2 || r.Stderr != want || r.Stdout != "" {
			t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want exit 2 and %q", prog, strings.Join(tc.args, " "), r.Code, r.Stdout, r.Stderr, want)
		}
	}
}

// TestCLIBadNumbers: out-of-range numbers and durations are refused with
// exit 2 and one line, not taken as "flag not given".
func TestCLIBadNumbers(t *testing.T) {
	dir := shortTempDir(t)
	check := []string{"--check", "--config", "/dev/null", "--root", dir, "--control", filepath.Join(dir, "c.sock")}
	sock := filepath.Join(dir, "none.sock") // never dialled: the command line is refused first
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{zfsServe, append(check, "--workers", "-1"), `zfs-serve: --workers: key "workers": must be between 0 (one per CPU) and 1024, not -1`},
		{zfsServe, append(check, "--workers", "-5"), `zfs-serve: --workers: key "workers": must be between 0 (one per CPU) and 1024, not -5`},
		{zctlBin, []string{"-s", sock, "drain", "--timeout", "-5s"}, "zctl: --timeout wants a positive duration such as 30s or 5m, not -5s"},
		{zctlBin, []string{"-s", sock, "drain", "--timeout", "0s"}, "zctl: --timeout wants a positive duration such as 30s or 5m, not 0s"},
		{zfetch, []string{"--retries", "-1", "h/f"}, "zfetch: --retries wants 0 or more, not -1"},
		{zfetch, []string{"--retries", "-2", "h/f"}, "zfetch: --retries wants 0 or more, not -2"},
		{zfetch, []string{"--retry-for", "0s", "h/f"}, "zfetch: --retry-for wants a positive duration such as 30s or 5m, not 0s"},
	} {
		r := run(t, 10*time.Second, tc.bin, tc.args...)
		if r.Code != 2 || r.Stderr != tc.want+"\n" {
			t.Errorf("%s %s: exit %d, stderr %q; want exit 2 and %q", filepath.Base(tc.bin), strings.Join(tc.args, " "), r.Code, r.Stderr, tc.want)
		}
	}
}

// TestCLIWorkerByHand: the hidden worker entry says once whose message it is.
func TestCLIWorkerByHand(t *testing.T) {
	r := run(t, 10*time.Second, zfsServe, "__worker")
	if want := "zfs-serve: __worker is run by the zfs-serve supervisor, not by hand\n"; r.Code != 1 || r.Stderr != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", r.Code, r.Stderr, want)
	}
}

// TestCLIControlPathTooLong: a control socket path beyond the 107 bytes a
// unix socket allows is a configuration error (--check too), naming the
// flag or the file's line, and nothing is created.
func TestCLIControlPathTooLong(t *testing.T) {
	dir := shortTempDir(t)
	sub := filepath.Join(dir, strings.Repeat("d", 120))
	long := filepath.Join(sub, "control.sock")
	want := fmt.Sprintf(`key "control": socket path %s is %d bytes long; a unix socket path can have at most 107`, long, len(long))
	for _, args := range [][]string{
		{"--check", "--config", "/dev/null", "--root", dir, "--control", long},
		{"--config", "/dev/null", "--root", dir, "--listen", "127.0.0.1:0", "--control", long},
	} {
		r := run(t, 20*time.Second, zfsServe, args...)
		if r.Code != 2 || r.Stderr != "zfs-serve: --control: "+want+"\n" {
			t.Errorf("zfs-serve %s: exit %d, stderr %q; want 2 and %q", strings.Join(args, " "), r.Code, r.Stderr, "--control: "+want)
		}
	}
	cfg := filepath.Join(dir, "c.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("root = %q\ncontrol = %q\n", dir, long)), 0o644)
	r := run(t, 10*time.Second, zfsServe, "--check", "--config", cfg)
	if r.Code != 2 || r.Stderr != "zfs-serve: "+cfg+":2: "+want+"\n" {
		t.Errorf("in the file: exit %d, stderr %q; want 2 and %q", r.Code, r.Stderr, cfg+":2: "+want)
	}
	if _, err := os.Stat(sub); err == nil {
		t.Errorf("%s was created", sub)
	}
}

// TestCLIZctlNoAnswer: a daemon that accepts but never answers (SIGSTOPped)
// does not hang zctl: it gives up after 10 s with exit 3.
func TestCLIZctlNoAnswer(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the others (scripts/test: -parallel 4)
	sock := filepath.Join(shortTempDir(t), "c.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never answered
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	})
	start := time.Now()
	r := run(t, 30*time.Second, zctlBin, "-s", sock, "status")
	if want := "zctl: no answer from the daemon in 10s: is it stopped?\n"; r.Code != 3 || r.Stderr != want {
		t.Errorf("exit %d, stderr %q; want 3 and %q", r.Code, r.Stderr, want)
	}
	if d := time.Since(start); d < 10*time.Second || d > 25*time.Second {
		t.Errorf("zctl gave up after %v; want about 10s", d)
	}
}
