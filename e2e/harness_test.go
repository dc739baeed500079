// Package e2e tests zfs-serve through its real binaries: TestMain builds
// zfs-serve, zctl and zfetch once; each test starts its own daemon on a
// kernel-chosen loopback port with its own control socket, waits for
// readiness by polling status, and cleans up every process it started.
package e2e

import (
	"fmt"
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

// URL returns the zfetch URL of path on this daemon.
func (d *Daemon) URL(path string) string { return "zfs://" + d.Addr + path }
