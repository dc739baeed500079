package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestZfetchRangesAndModes: -x 4 and every --recv mode, into files and to
// stdout, byte-exact, for the sizes that break naive code.
func TestZfetchRangesAndModes(t *testing.T) {
	root := shortTempDir(t)
	sizes := map[string]int64{"empty": 0, "one": 1, "page": 4096, "mib-plus-one": 1<<20 + 1, "big": 24<<20 + 3}
	sums := map[string]string{}
	for name, n := range sizes {
		sums[name] = WriteRandom(t, filepath.Join(root, name), n)
	}
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	for _, mode := range []string{"copy", "splice", "mmap"} {
		for _, x := range []string{"1", "4"} {
			t.Run(mode+"-x"+x, func(t *testing.T) {
				out := t.TempDir()
				for name, sum := range sums {
					r := Zfetch(t, "-q", "--recv", mode, "-x", x, "-O", out, d.URL("/"+name))
					if r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
						t.Fatalf("%s: exit %d, stdout %q, stderr %q", name, r.Code, r.Stdout, r.Stderr)
					}
					if got := FileSHA256(t, filepath.Join(out, name)); got != sum {
						t.Fatalf("%s: sha256 %s, want %s", name, got, sum)
					}
					fi, _ := os.Stat(filepath.Join(out, name))
					si, _ := os.Stat(filepath.Join(root, name))
					if !fi.ModTime().Equal(si.ModTime()) {
						t.Errorf("%s: mtime %v, the server's is %v", name, fi.ModTime(), si.ModTime())
					}
				}
				if x != "1" {
					return
				}
				// To stdout (mmap cannot map a pipe: it uses splice).
				for name, sum := range sums {
					r := Zfetch(t, "-q", "--recv", mode, "-o", "-", d.URL("/"+name))
					if r.Code != 0 || FileSHA256Bytes([]byte(r.Stdout)) != sum {
						t.Fatalf("%s to stdout: exit %d, %d bytes: %s", name, r.Code, len(r.Stdout), r.Stderr)
					}
				}
			})
		}
	}
}

// TestZfetchTree: -r recreates a tree of nested directories, empty files,
// empty directories and names with spaces, byte-exact; run again with -c it
// transfers nothing.
func TestZfetchTree(t *testing.T) {
	root := shortTempDir(t)
	files := map[string]int64{
		"tree/a.bin":                            100000,
		"tree/empty":                            0,
		"tree/name with spaces.txt":             1234,
		"tree/sub dir/b.bin":                    5<<20 + 1,
		"tree/sub dir/deeper/still deeper/c":    1,
		"tree/sub dir/deeper/empty too":         0,
		"tree/ünïcödé ✓/文件.bin":                 4096,
		"outside/not-fetched":                   10,
		"tree/sub dir/deeper/still deeper/page": 4096,
	}
	sums := map[string]string{}
	for name, n := range files {
		sums[name] = WriteRandom(t, filepath.Join(root, name), n)
	}
	os.MkdirAll(filepath.Join(root, "tree", "empty dir", "nested empty"), 0o755)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	out := t.TempDir()
	r := Zfetch(t, "-r", "-O", out, d.URL("/tree"))
	if r.Code != 0 {
		t.Fatalf("zfetch -r: exit %d: %s", r.Code, r.Stderr)
	}
	for name, sum := range sums {
		p := filepath.Join(out, name)
		if strings.HasPrefix(name, "outside/") {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s fetched from outside the tree", name)
			}
			continue
		}
		if got := FileSHA256(t, p); got != sum {
			t.Errorf("%s: sha256 %s, want %s", name, got, sum)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "tree", "empty dir", "nested empty")); err != nil || !fi.IsDir() {
		t.Errorf("empty directories not recreated: %v", err)
	}
	// Plain (not a terminal) output: a line per file and a summary.
	if !strings.Contains(r.Stderr, "8 of 8 files complete") || strings.ContainsAny(r.Stderr, "\r\x1b") {
		t.Errorf("stderr:\n%s", r.Stderr)
	}
	resumeFindsTreeComplete(t, d, out, "/tree")
}

// TestZfetchOutputAndExitCodes: what zfetch prints and returns when it is
// not on a terminal: plain lines, nothing with -q, JSON, and one clear line
// and a distinct status per kind of failure.
func TestZfetchOutputAndExitCodes(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 8<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	dir := t.TempDir()
	dst := filepath.Join(dir, "f.bin")

	r := Zfetch(t, "--limit-rate", "32M", "-o", dst, d.URL("/f.bin"))
	if r.Code != 0 || FileSHA256(t, dst) != sum {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	if strings.ContainsAny(r.Stderr+r.Stdout, "\r\x1b") {
		t.Fatalf("escape codes or \\r without a terminal:\n%q", r.Stderr)
	}
	if !strings.Contains(r.Stderr, "f.bin: 8.00 MiB, starting") || !strings.Contains(r.Stderr, "f.bin: done, 8.00 MiB in") {
		t.Fatalf("plain output:\n%s", r.Stderr)
	}

	if r := Zfetch(t, "-q", "-o", filepath.Join(dir, "q"), d.URL("/f.bin")); r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Fatalf("-q: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}

	// -c on a complete file: nothing to do, exit 0 (curl fails here).
	before := noTransfers(t, d)
	if r := Zfetch(t, "-c", "-q", "-o", dst, d.URL("/f.bin")); r.Code != 0 {
		t.Fatalf("-c on a complete file: exit %d: %s", r.Code, r.Stderr)
	}
	if after := noTransfers(t, d); after != before {
		t.Fatalf("-c on a complete file sent %d bytes", after-before)
	}

	r = Zfetch(t, "--json", "--sha256", sum, "-o", filepath.Join(dir, "j"), d.URL("/f.bin"))
	evs := jsonEvents(t, r.Stdout)
	if r.Code != 0 || len(eventsOf(evs, "start")) != 1 || len(eventsOf(evs, "done")) != 1 || len(eventsOf(evs, "exit")) != 1 ||
		eventsOf(evs, "done")[0]["sha256"] != sum {
		t.Fatalf("--json: exit %d, events %v", r.Code, evs)
	}

	closed := "127.0.0.1:1"
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"not found", []string{"-o", filepath.Join(dir, "x"), d.URL("/a/b")}, 3, "zfetch: " + filepath.Join(dir, "x") + ": not found: /a/b\n"},
		{"directory", []string{"-O", dir, d.URL("/")}, 2, "names no file"},
		{"refused", []string{"--retries", "1", "-O", dir, "zfs://" + closed + "/f"}, 4, "connection refused (gave up after 2 attempts)"},
		{"bad digest", []string{"--sha256", strings.Repeat("ab", 32), "-o", filepath.Join(dir, "v"), d.URL("/f.bin")}, 5, "verification failed: sha256"},
		{"local", []string{"-o", filepath.Join(dir, "no", "such", "dir", "f"), d.URL("/f.bin")}, 6, "no such file or directory"},
		{"output is a directory", []string{"-o", t.TempDir(), d.URL("/f.bin")}, 6, "is a directory"},
		{"usage", []string{"-x", "0", d.URL("/f.bin")}, 2, "-x wants 1 to 64"},
		{"scheme", []string{"ftp://h/f"}, 2, "unsupported scheme"},
	}
	for _, c := range cases {
		r := Zfetch(t, append([]string{"-q"}, c.args...)...)
		if r.Code != c.code || !strings.Contains(r.Stderr, c.msg) || strings.Count(r.Stderr, "\n") != 1 {
			t.Errorf("%s: exit %d (want %d), stderr %q (want one line with %q)", c.name, r.Code, c.code, r.Stderr, c.msg)
		}
	}
	if r := Zfetch(t, "--help"); r.Code != 0 || !strings.Contains(r.Stdout, "Exit status:") || !strings.Contains(r.Stdout, "130  interrupted") || r.Stderr != "" {
		t.Errorf("--help: exit %d: stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
}
