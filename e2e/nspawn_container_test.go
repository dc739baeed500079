package e2e

// A real systemd 252 as PID 1 of a systemd-nspawn container, for the
// end-to-end test of the Debian package (nspawn_test.go).
//
// The root filesystem is a debootstrap'd Debian 12 minbase, cached as a
// zstd tarball under /var/cache/zfs-serve-e2e/ keyed on the debootstrap
// arguments, so a machine pays for debootstrap once. Each test unpacks it
// into a fresh directory and boots it with --volatile=overlay, inside a
// private mount namespace (unshare) with a tmpfs over /run/systemd, in a
// cgroup of its own in every hierarchy, with its own network namespace
// (--private-network, so the container's 127.0.0.1:7070 is its own). The
// host drives it with nsenter. Close powers it off with SIGTERM to nspawn,
// then removes the cgroups and the directory: nothing is left behind.
//
// The apt mirror is read from the host's apt sources at run time; no
// mirror name is written in the project.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	rootfsCacheDir = "/var/cache/zfs-serve-e2e"
	rootfsSuite    = "bookworm"
)

// rootfsArgs are debootstrap's arguments before the target and mirror;
// they and rootfsPrune key the cache.
var rootfsArgs = []string{"--variant=minbase", "--include=systemd,systemd-sysv,dbus,procps", rootfsSuite}

// rootfsPrune makes the tree smaller and mirror-free once debootstrap is
// done. Changing it changes the cache key.
const rootfsPrune = `set -e
rm -f var/cache/apt/archives/*.deb var/cache/apt/*.bin var/log/bootstrap.log
find var/lib/apt/lists -maxdepth 1 -type f -delete
: > etc/apt/sources.list
rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/*
`

// nspawnTools are the host commands a container needs.
var nspawnTools = []string{"systemd-nspawn", "nsenter", "unshare", "zstd", "tar", "dpkg-deb", "make"}

// skipUnlessNspawn skips t when this machine cannot boot a container.
func skipUnlessNspawn(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no systemd container")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to boot a systemd-nspawn container (run scripts/test as root)")
	}
	var missing []string
	for _, c := range nspawnTools {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if _, err := os.Stat(rootfsCache()); err != nil {
		if _, err := exec.LookPath("debootstrap"); err != nil {
			missing = append(missing, "debootstrap")
		}
	}
	if len(missing) > 0 {
		t.Skipf("missing %s (Debian packages systemd-container, debootstrap, zstd, make; scripts/deps installs them as root)", strings.Join(missing, ", "))
	}
	if len(cgroupHierarchies()) == 0 {
		t.Skip("no cgroup hierarchy found under /sys/fs/cgroup")
	}
}

// rootfsCache is the cached tarball's path for the current arguments.
func rootfsCache() string {
	h := sha256.New()
	fmt.Fprintf(h, "%q\n%s", rootfsArgs, rootfsPrune)
	return filepath.Join(rootfsCacheDir, fmt.Sprintf("rootfs-%s-%s.tar.zst", rootfsSuite, hex.EncodeToString(h.Sum(nil))[:16]))
}

// aptMirror is the first Debian mirror in the host's apt sources.
func aptMirror() (string, error) {
	if f, err := os.Open("/etc/apt/sources.list.d/debian.sources"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "URIs:"); ok {
				if fs := strings.Fields(v); len(fs) > 0 {
					return fs[0], nil
				}
			}
		}
	}
	b, err := os.ReadFile("/etc/apt/sources.list")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if fs := strings.Fields(line); len(fs) >= 3 && fs[0] == "deb" {
				if strings.HasPrefix(fs[1], "[") { // deb [options] URI
					for i, f := range fs {
						if strings.HasSuffix(f, "]") && i+1 < len(fs) {
							return fs[i+1], nil
						}
					}
					continue
				}
				return fs[1], nil
			}
		}
	}
	return "", errors.New("no mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list")
}

// ensureRootfs returns the cached root filesystem tarball, making it with
// debootstrap first if needed (under a lock: concurrent test runs on one
// machine build it once). A failed debootstrap (no network, no mirror)
// skips the test: it is the machine that cannot, not the code.
func ensureRootfs(t *testing.T) string {
	t.Helper()
	cache := rootfsCache()
	if err := os.MkdirAll(rootfsCacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(rootfsCacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(cache); err == nil {
		return cache
	}
	mirror, err := aptMirror()
	if err != nil {
		t.Skipf("cannot make the container's root filesystem: %v", err)
	}
	start := time.Now()
	work, err := os.MkdirTemp(rootfsCacheDir, "build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)
	dir := filepath.Join(work, "rootfs")
	args := append(append([]string{}, rootfsArgs...), dir, mirror)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "debootstrap", args...).CombinedOutput()
	if err != nil {
		t.Skipf("debootstrap %s failed (%v); no container test on this machine:\n%s", strings.Join(rootfsArgs, " "), err, tail(string(out), 15))
	}
	prune := exec.Command("sh", "-c", rootfsPrune)
	prune.Dir = dir
	if out, err := prune.CombinedOutput(); err != nil {
		t.Fatalf("pruning the root filesystem: %v\n%s", err, out)
	}
	tmp := cache + ".tmp"
	pack := exec.Command("sh", "-c", `tar --numeric-owner --xattrs --xattrs-include='*' -C "$1" -cf - . | zstd -3 -q -T0 -f -o "$2"`, "sh", dir, tmp)
	if out, err := pack.CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("packing the root filesystem: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, cache); err != nil {
		t.Fatal(err)
	}
	t.Logf("made the container root filesystem %s in %v (cached for later runs)", cache, time.Since(start).Round(time.Second))
	return cache
}

// cgroupHierarchies are the cgroup mounts a container's processes must be
// moved into: the unified hierarchy and, on a hybrid host, name=systemd.
func cgroupHierarchies() []string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return []string{"/sys/fs/cgroup"}
	}
	var hs []string
	for _, h := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"} {
		if unix.Statfs(h, &st) == nil && (st.Type == unix.CGROUP_SUPER_MAGIC || st.Type == unix.CGROUP2_SUPER_MAGIC) {
			hs = append(hs, h)
		}
	}
	return hs
}

// container is one booted systemd-nspawn container.
type container struct {
	t       *testing.T
	root    string // the unpacked root filesystem (left pristine: --volatile=overlay)
	cgroup  string // our cgroup's name in each hierarchy
	nspawn  *exec.Cmd
	exited  chan struct{}
	leader  int    // the container's PID 1, as the host sees it
	logPath string // nspawn's output: the container's console
}

// bootContainer unpacks the cached root filesystem and boots it, with
// binds (host:container, read-only), and waits until systemd says the
// system is running. t.Cleanup powers it off and removes what it made.
func bootContainer(t *testing.T, binds ...string) *container {
	t.Helper()
	cache := ensureRootfs(t)
	sweepContainerLeftovers(t)
	root, err := os.MkdirTemp(rootfsWorkDir, fmt.Sprintf("%s%d-", rootfsWorkPrefix, os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	c := &container{t: t, root: root, cgroup: fmt.Sprintf("%s%d", cgroupPrefix, os.Getpid()),
		exited: make(chan struct{}), logPath: filepath.Join(shortTempDir(t), "console.log")}
	t.Cleanup(c.close)
	unpack := exec.Command("sh", "-c", `zstd -dc -q "$1" | tar --numeric-owner --xattrs --xattrs-include='*' -C "$2" -xpf -`, "sh", cache, root)
	if out, err := unpack.CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", cache, err, out)
	}

	// The recipe: a private mount namespace with a tmpfs over /run/systemd
	// (nspawn writes /run/systemd/nspawn), and the process moved into our
	// own cgroup in every hierarchy before it execs nspawn.
	args := []string{"--mount", "--propagation", "private", "sh", "-c", `
		for h in $ZFS_E2E_CGROUPS; do mkdir -p "$h/$ZFS_E2E_CG" && echo $$ > "$h/$ZFS_E2E_CG/cgroup.procs" || exit 1; done
		r=/run/systemd; [ -d $r ] || r=/run
		mount -t tmpfs tmpfs $r && exec "$@"`, "sh",
		"systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--volatile=overlay", "--console=pipe",
		"--private-network", "--machine=" + c.cgroup, "-D", root}
	for _, b := range binds {
		args = append(args, "--bind-ro="+b)
	}
	args = append(args, "-b")
	logf, err := os.Create(c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	c.nspawn = exec.Command("unshare", args...)
	c.nspawn.Stdout, c.nspawn.Stderr = logf, logf
	c.nspawn.Env = append(cleanEnv(),
		"ZFS_E2E_CGROUPS="+strings.Join(cgroupHierarchies(), " "), "ZFS_E2E_CG="+c.cgroup,
		// Debian 12 boots with the unified cgroup hierarchy; so does the container.
		"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	// If the test binary dies (a panic, a -timeout), the container powers
	// off too: SIGTERM on parent death. Pdeathsig follows the thread that
	// forked, so that thread stays locked and alive until nspawn exits.
	c.nspawn.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
	start := time.Now()
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		err := c.nspawn.Start()
		started <- err
		if err == nil {
			c.nspawn.Wait()
		}
		close(c.exited)
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	// unshare and sh exec in place, so the process is nspawn now; its
	// child is the container's init.
	if !waitFor(30*time.Second, func() bool {
		select {
		case <-c.exited:
			return true
		default:
		}
		c.leader = childOf(c.nspawn.Process.Pid)
		return c.leader > 0 && comm(c.leader) == "systemd"
	}) || c.leader <= 0 {
		t.Fatalf("the container's systemd did not start:\n%s", c.console())
	}
	select {
	case <-c.exited:
		t.Fatalf("systemd-nspawn exited:\n%s", c.console())
	default:
	}
	// is-system-running --wait fails until systemd answers on its private
	// socket; then it waits for the boot to finish.
	var r Result
	waitFor(60*time.Second, func() bool {
		r = c.Exec(60*time.Second, "systemctl", "is-system-running", "--wait")
		switch strings.TrimSpace(r.Stdout) {
		case "running", "degraded", "maintenance", "stopping":
			return true
		}
		return false
	})
	if state := strings.TrimSpace(r.Stdout); state != "running" {
		failed := c.Exec(30*time.Second, "systemctl", "--failed", "--no-legend")
		t.Fatalf("the container's system is %q (%s), want running; failed units:\n%s\nconsole:\n%s", state, strings.TrimSpace(r.Stderr), failed.Stdout, c.console())
	}
	t.Logf("container booted in %v (leader pid %d)", time.Since(start).Round(10*time.Millisecond), c.leader)
	return c
}

// Names of what a container run makes on the host, with the test
// process's pid in them, so that a later run can tell leftovers of a
// test binary that died (its pid is gone) from a run in progress.
const (
	rootfsWorkDir    = "/var/tmp"
	rootfsWorkPrefix = "zfs-e2e-rootfs-"
	cgroupPrefix     = "zfs-serve-e2e-"
)

// sweepContainerLeftovers removes the root directories and empty cgroups
// of earlier runs whose test process is gone (one killed before its
// cleanup ran; its container powered off on its own, see Pdeathsig).
func sweepContainerLeftovers(t *testing.T) {
	t.Helper()
	deadOwner := func(name, prefix string) bool {
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, prefix), "-", 2)[0])
		return err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == syscall.ESRCH
	}
	ents, _ := os.ReadDir(rootfsWorkDir)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), rootfsWorkPrefix) && deadOwner(e.Name(), rootfsWorkPrefix) {
			t.Logf("removing %s, left by an earlier run", filepath.Join(rootfsWorkDir, e.Name()))
			os.RemoveAll(filepath.Join(rootfsWorkDir, e.Name()))
		}
	}
	for _, h := range cgroupHierarchies() {
		ents, _ := os.ReadDir(h)
		for _, e := range ents {
			if !e.IsDir() || !strings.HasPrefix(e.Name(), cgroupPrefix) || !deadOwner(e.Name(), cgroupPrefix) {
				continue
			}
			dir := filepath.Join(h, e.Name())
			if err := removeCgroup(dir); err != nil {
				t.Logf("cgroup %s, left by an earlier run, still has processes: %v", dir, err)
			}
		}
	}
}

// childOf returns the first child of pid, or 0.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	fs := strings.Fields(string(b))
	if len(fs) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(fs[0])
	return n
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

func (c *container) console() string {
	b, _ := os.ReadFile(c.logPath)
	return tail(string(b), 40)
}

// insideEnv is the environment of commands run in the container.
var insideEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
	"TERM=dumb", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "HOME=/root"}

// Command returns a command that runs argv inside the container (all its
// namespaces), not started.
func (c *container) Command(argv ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a", "--"}, argv...)...)
	cmd.Env = insideEnv
	return cmd
}

// Exec runs argv inside the container and returns its output and status.
func (c *container) Exec(timeout time.Duration, argv ...string) Result {
	c.t.Helper()
	return runCmd(c.t, timeout, c.Command(argv...))
}

// Must runs argv inside the container and fails the test unless it exits 0.
func (c *container) Must(argv ...string) string {
	c.t.Helper()
	r := c.Exec(60*time.Second, argv...)
	if r.Code != 0 {
		c.t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(argv, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// NetCommand returns a command that runs a host binary in the container's
// network namespace only (nsenter -n does not fork, so the command's pid
// is the host pid of that binary).
func (c *container) NetCommand(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-n", "--", bin}, args...)...)
	cmd.Env = cleanEnv()
	return cmd
}

// Path is where the host sees path inside the container.
func (c *container) Path(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", c.leader, path)
}

// Show returns systemctl show's value of each property of unit.
func (c *container) Show(unit string, props ...string) map[string]string {
	c.t.Helper()
	out := c.Must("systemctl", "show", unit, "-p", strings.Join(props, ","))
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// WaitShow polls unit's properties until cond holds.
func (c *container) WaitShow(timeout time.Duration, what, unit string, cond func(map[string]string) bool, props ...string) map[string]string {
	c.t.Helper()
	var last map[string]string
	if !waitFor(timeout, func() bool {
		last = c.Show(unit, props...)
		return cond(last)
	}) {
		c.t.Fatalf("%s: timed out after %v waiting for %s; last %v", unit, timeout, what, last)
	}
	return last
}

// close powers the container off (SIGTERM to nspawn: a clean shutdown),
// then removes its cgroups and root directory. Anything still in our
// cgroups after that is ours and gets SIGKILL.
func (c *container) close() {
	if c.nspawn != nil && c.nspawn.Process != nil {
		c.nspawn.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(60 * time.Second):
			c.t.Errorf("the container did not power off within 60s; killing it")
			c.nspawn.Process.Kill()
			<-c.exited
		}
	}
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, c.cgroup)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if !waitFor(10*time.Second, func() bool { return killCgroup(dir) == 0 }) {
			c.t.Errorf("processes left in %s", dir)
		}
		if err := removeCgroup(dir); err != nil {
			c.t.Errorf("removing cgroup %s: %v", dir, err)
		}
	}
	if c.t.Failed() {
		c.t.Logf("container console:\n%s", c.console())
	}
	if c.root != "" {
		if err := os.RemoveAll(c.root); err != nil {
			c.t.Errorf("removing %s: %v", c.root, err)
		}
	}
}

// killCgroup sends SIGKILL to every process in the cgroup tree at dir and
// returns how many there were.
func killCgroup(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
				n++
			}
		}
		return nil
	})
	return n
}

// removeCgroup removes the cgroup tree at dir, deepest first.
func removeCgroup(dir string) error {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// runCmd runs cmd to completion with a timeout. It runs in a process
// group of its own, so that a timeout kills what nsenter forked too.
func runCmd(t *testing.T, timeout time.Duration, cmd *exec.Cmd) Result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("%s: timed out after %v\nstdout: %s\nstderr: %s", strings.Join(cmd.Args, " "), timeout, out.String(), errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}
