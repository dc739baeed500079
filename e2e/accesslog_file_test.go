package e2e

import (
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAccessLogFile: with access_log_path, access lines (HTTP and native)
// go to that file and not to the daemon's log; workers that run as
// another user (user = "nobody") write it in a folder only root may
// enter, because the supervisor opens it. After a logrotate-style rename,
// a reload has the new workers write a new file. A symbolic link at the
// path fails the reload (the old generation serves on) and the start.
func TestAccessLogFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: the test runs its workers as nobody")
	}
	root, _ := httpTree(t)
	os.Chmod(root, 0o755)
	os.Chmod(binDir, 0o755) // nobody runs the workers' binary
	logs := shortTempDir(t) // 0700, root's: nobody cannot open a file in it
	path := filepath.Join(logs, "access.log")
	conf := "access_log = true\naccess_log_path = " + strconv.Quote(path) + "\nuser = \"nobody\"\ngroup = \"nogroup\"\n"
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2, Config: conf})

	curl(t, "-o", "/dev/null", d.httpURL("/small.txt")+"?before")
	Zfetch(t, "-q", "-o", "-", d.URL("/list/a.txt"))
	waitLines(t, path,
		regexp.MustCompile(`(?m)^time=\S+ level=INFO msg=access proc=worker pid=\d+ gen=1 slot=\d proto=http client=127\.0\.0\.1:\d+ method=GET path="?/small\.txt\?before"? status=200 bytes=4096 duration=\S+$`),
		regexp.MustCompile(`(?m)^time=\S+ level=INFO msg=access proc=worker pid=\d+ gen=1 slot=\d proto=native client=127\.0\.0\.1:\d+ method=GET path=/list/a\.txt status=ok bytes=10 duration=\S+$`))
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("%s: %v, mode %v, want 0640", path, err, st.Mode().Perm())
	}
	if strings.Contains(d.Log(), "msg=access") {
		t.Errorf("access lines in the daemon's log too:\n%s", tail(d.Log(), 10))
	}

	// logrotate: rename, then reload.
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if r := d.Zctl("reload"); r.Code != 0 || !strings.Contains(r.Stdout, "generation 2 serving") {
		t.Fatalf("reload: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	curl(t, "-o", "/dev/null", d.httpURL("/small.txt")+"?after")
	waitLines(t, path, regexp.MustCompile(`(?m)^time=\S+ level=INFO msg=access proc=worker pid=\d+ gen=2 .* path="?/small\.txt\?after"? status=200 `))
	if b, _ := os.ReadFile(rotated); !strings.Contains(string(b), "?before") || strings.Contains(string(b), "?after") {
		t.Errorf("the rotated file:\n%s", b)
	}

	// A symbolic link where the file should be: the reload fails, and
	// generation 2 goes on serving and logging.
	link := filepath.Join(logs, "link.log")
	if err := os.Symlink(filepath.Join(logs, "target.log"), link); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Config, []byte(strings.Replace(string(b), strconv.Quote(path), strconv.Quote(link), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := d.Zctl("reload"); r.Code == 0 || !strings.Contains(r.Stdout+r.Stderr, "is a symbolic link") {
		t.Fatalf("reload with a link: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	if _, err := os.Lstat(filepath.Join(logs, "target.log")); err == nil {
		t.Error("the link's target was created")
	}
	curl(t, "-o", "/dev/null", d.httpURL("/small.txt")+"?still")
	waitLines(t, path, regexp.MustCompile(`gen=2 .* path="?/small\.txt\?still"? status=200 `))

	// ... and it fails the start, with the reason: as a configuration
	// error (exit 2, as zfs-serve --check refuses it).
	d2 := StartDaemon(t, DaemonOpts{Root: root, Config: "access_log = true\naccess_log_path = " + strconv.Quote(link) + "\n", NoWait: true})
	if code := d2.WaitExit(20 * time.Second); code != 2 {
		t.Fatalf("start with a link: exit %d, want 2", code)
	}
	if !strings.Contains(d2.Log(), "is a symbolic link") {
		t.Fatalf("start with a link: the log does not say why:\n%s", tail(d2.Log(), 10))
	}
}

// waitLines waits for the file at path to match every one of want (a
// worker writes its lines within 50 ms, internal/logbuf).
func waitLines(t *testing.T, path string, want ...*regexp.Regexp) {
	t.Helper()
	var b []byte
	if !waitFor(5*time.Second, func() bool {
		b, _ = os.ReadFile(path)
		for _, w := range want {
			if !w.Match(b) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("%s lacks one of %q:\n%s", path, want, tail(string(b), 10))
	}
}

// TestAccessLogFileFull: a write to the access log that fails (a full
// disk) is reported in the daemon's log with its error, once, and once
// more with the lines lost when writes succeed again, rather than the
// lines vanishing without a word; a line the disk cut short does not
// swallow the next.
func TestAccessLogFileFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: the test mounts a tmpfs")
	}
	dir := shortTempDir(t)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skip("cannot mount a tmpfs:", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	path := filepath.Join(dir, "access.log")
	root, _ := httpTree(t)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: "access_log = true\naccess_log_path = " + strconv.Quote(path) + "\n"})
	// A line in the file first: its page has room left when the disk is
	// full, so the write that meets the full disk takes part of a line.
	curl(t, "-o", "/dev/null", d.httpURL("/small.txt")+"?first")
	waitLines(t, path, regexp.MustCompile(`path="?/small\.txt\?first"? status=200 `))
	fill := filepath.Join(dir, "fill")
	f, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 128<<10)) // up to ENOSPC
	f.Close()
	for i := range 60 { // more lines than the page has room for
		curl(t, "-o", "/dev/null", d.httpURL("/small.txt")+"?full"+strconv.Itoa(i))
	}
	if !waitFor(5*time.Second, func() bool {
		return regexp.MustCompile(`level=ERROR msg="access log lines lost: .*err=".*no space left on device"`).MatchString(d.Log())
	}) {
		t.Fatalf("a full disk is not reported:\n%s", tail(d.Log(), 10))
	}
	os.Remove(fill)
	curl(t, "-o", "/dev/null", d.httpURL("/small.txt")+"?again")
	waitLines(t, path, regexp.MustCompile(`path="?/small\.txt\?again"? status=200 `))
	if !waitFor(5*time.Second, func() bool {
		return regexp.MustCompile(`level=WARN msg="access log file written again" .*lines_lost=\d+`).MatchString(d.Log())
	}) {
		t.Fatalf("the recovery is not reported:\n%s", tail(d.Log(), 10))
	}
	if n := strings.Count(d.Log(), "access log lines lost"); n != 1 {
		t.Errorf("%d reports of the failure, want 1:\n%s", n, tail(d.Log(), 10))
	}
	// The write that met the full disk may have left part of a line (the
	// file's last page had room for some of it): that part is a line of
	// its own, and no line runs on from it.
	b, _ := os.ReadFile(path)
	for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if !strings.HasPrefix(line, "time=") || strings.Count(line, "time=") != 1 {
			t.Errorf("line %d of %s is not one access line or the start of one: %q", i+1, path, line)
		}
	}
}

// TestAccessLogFileLevel: the file is an access log alone, as nginx's:
// log_level = "warn", which keeps access lines out of the daemon's log,
// does not empty it.
func TestAccessLogFileLevel(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "access.log")
	d := StartDaemon(t, DaemonOpts{Workers: 1, Config: "access_log = true\nlog_level = \"warn\"\naccess_log_path = " + strconv.Quote(path) + "\n"})
	if err := os.WriteFile(filepath.Join(d.Root, "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	curl(t, "-o", "/dev/null", d.httpURL("/a.txt")+"?warn")
	waitLines(t, path, regexp.MustCompile(`(?m)^time=\S+ level=INFO msg=access .* path="?/a\.txt\?warn"? status=200 `))
	if strings.Contains(d.Log(), "msg=access") {
		t.Errorf("access lines in the daemon's log:\n%s", tail(d.Log(), 10))
	}
}

// TestAccessLogRotate: the package's logrotate file (packaging/
// zfs-serve.logrotate), run by logrotate with its paths made this test's
// and its reload made zctl's: the file is renamed, the reload has the new
// workers write a new one, and the next rotation compresses the one
// before (delaycompress).
func TestAccessLogRotate(t *testing.T) {
	needTool(t, "logrotate")
	root, _ := httpTree(t)
	logs := shortTempDir(t)
	path := filepath.Join(logs, "access.log")
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: "access_log = true\naccess_log_path = " + strconv.Quote(path) + "\n"})

	pkg, err := os.ReadFile("../packaging/zfs-serve.logrotate")
	if err != nil {
		t.Fatal(err)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	group, err := user.LookupGroupId(me.Gid)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(pkg)
	for _, r := range []struct{ old, new string }{
		{"/var/log/zfs-serve/*.log", filepath.Join(logs, "*.log")},
		{"su zfs-serve zfs-serve", "su " + me.Username + " " + group.Name}, // the test's folder is its user's
		{"if systemctl --quiet is-active zfs-serve.service; then systemctl reload zfs-serve.service; fi",
			filepath.Join(binDir, "zctl") + " -s " + d.Control + " reload"},
	} {
		if !strings.Contains(conf, r.old) {
			t.Fatalf("packaging/zfs-serve.logrotate has no %q:\n%s", r.old, pkg)
		}
		conf = strings.Replace(conf, r.old, r.new, 1)
	}
	cfg := filepath.Join(logs, "logrotate.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	rotate := func() {
		t.Helper()
		if r := run(t, time.Minute, "logrotate", "-f", "-s", filepath.Join(logs, "state"), cfg); r.Code != 0 {
			t.Fatalf("logrotate: %d %s %s", r.Code, r.Stdout, r.Stderr)
		}
	}

	curl(t, "-o", "/dev/null", d.httpURL("/small.txt")+"?one")
	waitLines(t, path, regexp.MustCompile(`gen=1 .* path=/small\.txt\?one status=200 `))
	rotate()
	curl(t, "-o", "/dev/null", d.httpURL("/small.txt")+"?two")
	waitLines(t, path, regexp.MustCompile(`gen=2 .* path=/small\.txt\?two status=200 `))
	if b, _ := os.ReadFile(path + ".1"); !strings.Contains(string(b), "?one") || strings.Contains(string(b), "?two") {
		t.Fatalf("%s.1 after the first rotation:\n%s", path, b)
	}
	rotate()
	curl(t, "-o", "/dev/null", d.httpURL("/small.txt")+"?three")
	waitLines(t, path, regexp.MustCompile(`gen=3 .* path=/small\.txt\?three status=200 `))
	if _, err := os.Stat(path + ".2.gz"); err != nil {
		t.Fatalf("the first file is not compressed at the second rotation: %v", err)
	}
	if b, _ := os.ReadFile(path + ".1"); !strings.Contains(string(b), "?two") {
		t.Fatalf("%s.1 after the second rotation:\n%s", path, b)
	}
}
