package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// accessLogJournal: with access_log = true every response's line reaches
// the journal. journald rate-limits each unit's messages (by default
// 10,000 per 30 s, times a factor of 4-6 for the free disk space), which
// a busy server's access log passes within seconds; the unit opts out
// (a burst of a million a second). Here journald's own limit is made tiny
// (a burst of 20, about 50 lines after its factor) and 3,000 requests
// (HEAD: no bodies to store) must all be in the journal, with no
// "Suppressed" from journald.
func (z *zfsContainer) accessLogJournal(t *testing.T) {
	const n = 3000
	jconf := "/etc/systemd/journald.conf.d"
	if err := os.MkdirAll(z.Path(jconf), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(z.Path(jconf+"/ratelimit.conf"), []byte("[Journal]\nRateLimitIntervalSec=60s\nRateLimitBurst=20\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	restore := z.editConf(t, map[string]string{"access_log = false": "access_log = true"})
	defer func() {
		restore()
		os.RemoveAll(z.Path(jconf))
		z.Exec(time.Minute, "systemctl", "restart", "systemd-journald")
		z.Exec(time.Minute, "systemctl", "restart", unitService)
	}()
	z.Must("systemctl", "restart", "systemd-journald")
	z.Must("systemctl", "restart", unitService)
	since := strings.TrimSpace(z.Must("date", "+%Y-%m-%d %H:%M:%S"))

	// One request per URL, 16 at a time, each answer's head into its own file.
	dir := t.TempDir()
	r := runCmd(t, 2*time.Minute, z.NetCommand("curl", "-sS", "-f", "-I", "--max-time", "100", "-Z", "--parallel-max", "16",
		"-o", filepath.Join(dir, "#1"), "http://127.0.0.1:7070/small.bin?n=[1-"+strconv.Itoa(n)+"]"))
	if r.Code != 0 {
		t.Fatalf("curl: exit %d: %s", r.Code, tail(r.Stderr, 10))
	}
	line := regexp.MustCompile(`msg=access .* method=HEAD path="/small\.bin\?n=\d+" status=200 bytes=0 `)
	var got int
	var j string
	if !waitFor(30*time.Second, func() bool {
		j = z.Must("journalctl", "-u", unitService, "--since", since, "--no-pager", "-o", "cat")
		got = len(line.FindAllStringIndex(j, -1))
		return got >= n
	}) {
		all := z.Exec(time.Minute, "journalctl", "--since", since, "--no-pager", "-o", "cat", "--grep", "Suppressed|dropped")
		t.Fatalf("%d of %d access lines in the journal\nsuppressed or dropped:\n%s\nzfs-serve:\n%s", got, n, tail(all.Stdout, 10), tail(j, 10))
	}
	if got != n {
		t.Errorf("%d access lines for %d requests", got, n)
	}
	if s := z.Must("journalctl", "--since", since, "--no-pager", "-o", "cat"); strings.Contains(s, "Suppressed") {
		t.Errorf("journald suppressed messages:\n%s", tail(s, 10))
	}
}

// accessLogFile: access_log_path = "/var/log/zfs-serve/access.log" works
// under the unit's sandbox (ProtectSystem=strict: LogsDirectory= is the one
// writable folder under /var/log), the file owned by the service's user
// and private to it.
func (z *zfsContainer) accessLogFile(t *testing.T) {
	const path = "/var/log/zfs-serve/access.log"
	restore := z.editConf(t, map[string]string{"access_log = false": "access_log = true", `access_log_path = ""`: `access_log_path = "` + path + `"`})
	defer func() {
		restore()
		z.Exec(time.Minute, "systemctl", "reload", unitService)
	}()
	z.Must("systemctl", "reload", unitService)
	z.fetch(t, "/small.bin", z.smallSHA)
	var b []byte
	if !waitFor(10*time.Second, func() bool {
		b, _ = os.ReadFile(z.Path(path))
		return strings.Contains(string(b), "msg=access") && strings.Contains(string(b), "path=/small.bin status=ok")
	}) {
		t.Fatalf("%s:\n%s\njournal:\n%s", path, tail(string(b), 5), tail(z.Must("journalctl", "-u", unitService, "--no-pager", "-o", "cat"), 10))
	}
	// 0640 less the unit's UMask=0077.
	if owner := strings.TrimSpace(z.Must("stat", "-c", "%U:%G %a", path)); owner != "zfs-serve:zfs-serve 600" {
		t.Errorf("%s: %s, want zfs-serve:zfs-serve 600", path, owner)
	}
}

// editConf replaces whole lines of the package's configuration (each key
// of lines by its value; a line missing fails the test) and returns what
// puts the file back as it was.
func (z *zfsContainer) editConf(t *testing.T, lines map[string]string) (restore func()) {
	t.Helper()
	conf, err := os.ReadFile(z.Path(confPath))
	if err != nil {
		t.Fatal(err)
	}
	edited := conf
	for old, new := range lines {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(old) + `$`)
		if !re.Match(edited) {
			t.Fatalf("%s has no line %q", confPath, old)
		}
		edited = re.ReplaceAllLiteral(edited, []byte(new))
	}
	if err := os.WriteFile(z.Path(confPath), edited, 0o644); err != nil {
		t.Fatal(err)
	}
	return func() { os.WriteFile(z.Path(confPath), conf, 0o644) }
}
