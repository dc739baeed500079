// Package e2e tests zfs-serve through its real binaries: TestMain builds
// zfs-serve, zctl and zfetch once; each test starts its own daemon on a
// kernel-chosen loopback port with its own control socket, waits for
// readiness by polling status, and cleans up every process it started.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// Paths of the binaries under test, built by TestMain.
var (
	binDir   string
	zfsServe string
	zctlBin  string
	zfetch   string
)

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "zfs-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	args := []string{"build", "-o", dir + "/"}
	// ZFS_E2E_RACE=1 builds the binaries with the race detector, so the
	// daemon's own goroutines are checked while the tests drive it.
	if os.Getenv("ZFS_E2E_RACE") == "1" {
		args = append(args, "-race")
		// The race runtime sleeps 1s at every exit by default, which would
		// distort every timing the lifecycle tests check. Races are still
		// reported: the cleanup fails any test whose daemon log has one.
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	args = append(args, "../cmd/zfs-serve", "../cmd/zctl", "../cmd/zfetch")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		return 1
	}
	zfsServe, zctlBin, zfetch = filepath.Join(dir, "zfs-serve"), filepath.Join(dir, "zctl"), filepath.Join(dir, "zfetch")
	return m.Run()
}

// shortTempDir returns a directory with a short path (unix socket paths are
// limited to 108 bytes; t.TempDir's can be longer), removed at cleanup.
func shortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "z")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Daemon is one zfs-serve under test.
type Daemon struct {
	t       testing.TB
	Cmd     *exec.Cmd
	Root    string
	Control string
	Config  string // config file path, "" if none
	Addr    string // first listener's address
	LogPath string

	mu      sync.Mutex
	exited  chan struct{}
	waitErr error
	workers map[int]bool // every worker pid seen, for the cleanup check
}

// DaemonOpts configure StartDaemon.
type DaemonOpts struct {
	Root    string   // directory to serve; default: a new temp dir
	Workers int      // default 2
	Config  string   // TOML written to a config file (root/listen/control/workers are added unless present)
	Args    []string // extra flags
	Env     []string // extra environment
	Listen  string   // default 127.0.0.1:0
	Control string   // control socket; default ctl.sock in the daemon's own temp dir
	NoWait  bool     // do not wait for readiness
	Binary  string   // zfs-serve binary to run; default the one TestMain built
	// Prefix is a command that runs the daemon, e.g. prlimit with its
	// arguments; it must exec it (the pid is the daemon's).
	Prefix []string
	// ExtraFiles are inherited by the daemon as fds 3 and up, without
	// close-on-exec, as a careless parent's would be.
	ExtraFiles []*os.File
	// Stderr, if set, takes the daemon's stdout and stderr instead of
	// the log file (Log then returns nothing).
	Stderr *os.File
}

// StartDaemon starts zfs-serve and waits until status says it is serving.
func StartDaemon(t testing.TB, o DaemonOpts) *Daemon {
	t.Helper()
	dir := shortTempDir(t)
	if o.Root == "" {
		o.Root = filepath.Join(dir, "root")
		if err := os.Mkdir(o.Root, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if o.Workers == 0 {
		o.Workers = 2
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	d := &Daemon{t: t, Root: o.Root, Control: filepath.Join(dir, "ctl.sock"), LogPath: filepath.Join(dir, "daemon.log"),
		exited: make(chan struct{}), workers: map[int]bool{}}
	if o.Control != "" {
		d.Control = o.Control
	}
	var args []string
	if o.Config != "" {
		d.Config = filepath.Join(dir, "zfs-serve.toml")
		cfg := o.Config
		add := func(key, line string) {
			if !strings.Contains(o.Config, key+" ") && !strings.Contains(o.Config, key+"=") {
				cfg = line + "\n" + cfg
			}
		}
		add("root", fmt.Sprintf("root = %q", o.Root))
		add("listen", fmt.Sprintf("listen = [%q]", o.Listen))
		add("control", fmt.Sprintf("control = %q", d.Control))
		add("workers", fmt.Sprintf("workers = %d", o.Workers))
		if err := os.WriteFile(d.Config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", d.Config)
	} else {
		args = append(args, "--config", "/dev/null", "--root", o.Root, "--listen", o.Listen,
			"--control", d.Control, "--workers", strconv.Itoa(o.Workers))
	}
	args = append(args, o.Args...)
	logf, err := os.Create(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	bin := zfsServe
	if o.Binary != "" {
		bin = o.Binary
	}
	if len(o.Prefix) > 0 {
		args = append(append(o.Prefix[1:len(o.Prefix):len(o.Prefix)], bin), args...)
		bin = o.Prefix[0]
	}
	d.Cmd = exec.Command(bin, args...)
	d.Cmd.Stdout, d.Cmd.Stderr = logf, logf
	if o.Stderr != nil {
		d.Cmd.Stdout, d.Cmd.Stderr = o.Stderr, o.Stderr
	}
	d.Cmd.Env = append(os.Environ(), o.Env...)
	d.Cmd.ExtraFiles = o.ExtraFiles
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	go func() {
		err := d.Cmd.Wait()
		d.mu.Lock()
		d.waitErr = err
		d.mu.Unlock()
		close(d.exited)
	}()
	t.Cleanup(d.cleanup)
	if !o.NoWait {
		st := d.WaitState(ctl.StateServing, 15*time.Second)
		d.Addr = st.Listeners[0].Addr
	}
	return d
}

// cleanup makes sure nothing this daemon started outlives the test.
func (d *Daemon) cleanup() {
	select {
	case <-d.exited:
	default:
		d.Cmd.Process.Signal(syscall.SIGKILL)
		<-d.exited
	}
	// The supervisor is gone; its workers follow through the death pipe.
	for pid := range d.workers {
		if !waitFor(5*time.Second, func() bool { return !alive(pid) }) {
			syscall.Kill(pid, syscall.SIGKILL)
			d.t.Errorf("worker %d outlived its supervisor", pid)
		}
	}
	if strings.Contains(d.Log(), "WARNING: DATA RACE") {
		d.t.Errorf("the race detector found a data race in zfs-serve")
	}
	if d.t.Failed() {
		b, _ := os.ReadFile(d.LogPath)
		d.t.Logf("daemon log (%s):\n%s", d.LogPath, tail(string(b), 60))
	}
}

// Log returns the daemon's log so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// LogHas waits up to timeout for the daemon's log to hold every one of
// want, and reports whether it does. A running daemon writes its lines
// in batches, within 50 ms (internal/logbuf); one that has exited has
// written them all.
func (d *Daemon) LogHas(timeout time.Duration, want ...string) bool {
	return waitFor(timeout, func() bool {
		log := d.Log()
		for _, w := range want {
			if !strings.Contains(log, w) {
				return false
			}
		}
		return true
	})
}

// LogMatches is LogHas with regular expressions.
func (d *Daemon) LogMatches(timeout time.Duration, want ...*regexp.Regexp) bool {
	return waitFor(timeout, func() bool {
		log := d.Log()
		for _, re := range want {
			if !re.MatchString(log) {
				return false
			}
		}
		return true
	})
}

// Exited reports whether the supervisor has exited, and its exit status.
func (d *Daemon) Exited() (bool, int) {
	select {
	case <-d.exited:
		return true, d.Cmd.ProcessState.ExitCode()
	default:
		return false, 0
	}
}

// WaitExit waits for the supervisor to exit and returns its exit status.
func (d *Daemon) WaitExit(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.exited:
		return d.Cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		d.t.Fatalf("zfs-serve did not exit within %v\n%s", timeout, tail(d.Log(), 30))
		return -1
	}
}

// Status asks the daemon for its status through the control socket.
func (d *Daemon) Status() (*ctl.Status, error) {
	c, err := ctl.Dial(d.Control)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r, err := c.Do(ctl.Request{Cmd: ctl.CmdStatus}, nil)
	if err != nil {
		return nil, err
	}
	// Only this daemon's workers: while a new instance starts, its control
	// socket's path still leads to the draining one it takes over from.
	if r.Status.PID == d.Cmd.Process.Pid {
		d.mu.Lock()
		for _, w := range r.Status.Workers {
			if w.PID != 0 {
				d.workers[w.PID] = true
			}
		}
		d.mu.Unlock()
	}
	return r.Status, nil
}

// MustStatus is Status that fails the test on error.
func (d *Daemon) MustStatus() *ctl.Status {
	d.t.Helper()
	st, err := d.Status()
	if err != nil {
		d.t.Fatalf("status: %v\n%s", err, tail(d.Log(), 30))
	}
	return st
}

// WaitState polls status until the daemon reports state.
func (d *Daemon) WaitState(state string, timeout time.Duration) *ctl.Status {
	d.t.Helper()
	return d.WaitStatus(timeout, "state "+state, func(st *ctl.Status) bool { return st.State == state })
}

// WaitStatus polls status until cond holds.
func (d *Daemon) WaitStatus(timeout time.Duration, what string, cond func(*ctl.Status) bool) *ctl.Status {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var last *ctl.Status
	var lastErr error
	for time.Now().Before(deadline) {
		if ok, code := d.Exited(); ok {
			d.t.Fatalf("zfs-serve exited (status %d) while waiting for %s\n%s", code, what, tail(d.Log(), 40))
		}
		st, err := d.Status()
		if err == nil && cond(st) {
			return st
		}
		last, lastErr = st, err
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(last, "", "  ")
	d.t.Fatalf("timed out after %v waiting for %s; last status %s (err %v)\n%s", timeout, what, b, lastErr, tail(d.Log(), 40))
	return nil
}

// WorkerPIDs returns the pids of the workers in st.
func WorkerPIDs(st *ctl.Status) []int {
	var pids []int
	for _, w := range st.Workers {
		if w.PID != 0 {
			pids = append(pids, w.PID)
		}
	}
	return pids
}

// URL returns the zfetch URL of path on this daemon.
func (d *Daemon) URL(path string) string { return "zfs://" + d.Addr + path }

// Result is a finished command.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// run runs a binary to completion with a timeout.
func run(t testing.TB, timeout time.Duration, bin string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %v\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), timeout, errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	if strings.Contains(errb.String(), "WARNING: DATA RACE") {
		t.Errorf("%s: the race detector found a data race:\n%s", filepath.Base(bin), errb.String())
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// Zctl runs zctl against d's control socket.
func (d *Daemon) Zctl(args ...string) Result {
	d.t.Helper()
	return run(d.t, 60*time.Second, zctlBin, append([]string{"-s", d.Control}, args...)...)
}

// Zfetch runs zfetch.
func Zfetch(t testing.TB, args ...string) Result {
	t.Helper()
	return run(t, 120*time.Second, zfetch, args...)
}

// WriteRandom creates a file of n random bytes and returns its sha256.
func WriteRandom(t testing.TB, path string, n int64) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// FileSHA256 hashes a file.
func FileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// waitFor polls cond every 10ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// state is the field after the parenthesised command name
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// openFDs counts a process's open descriptors.
func openFDs(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// ppid returns a process's parent pid.
func ppid(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	n, _ := strconv.Atoi(f[1])
	return n
}

// cpuTicks returns a process's user+system CPU time in clock ticks.
func cpuTicks(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FileSHA256Bytes hashes b.
func FileSHA256Bytes(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// ctlStatus is ctl.Status, short for test predicates.
type ctlStatus = ctl.Status
