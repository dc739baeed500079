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
