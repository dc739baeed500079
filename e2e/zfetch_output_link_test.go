package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestZfetchOutputSymlinks: -o naming a symlink. To a FIFO: written into
// through the link, which stays. To a magic link of /proc (what /dev/stdout
// is) whose file is a regular file: the file gets the bytes and the link is
// not replaced by a regular file (zfetch -o /dev/stdout > out would
// otherwise put a regular file in /dev/stdout's place). To a regular
// file: that file is replaced, the link stays; dangling: the missing file
// is made.
func TestZfetchOutputSymlinks(t *testing.T) {
	d, sum := serveOneFile(t, 1<<20)
	dir := t.TempDir()
	isLink := func(p, to string) {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode().Type() != os.ModeSymlink {
			t.Fatalf("%s: the symlink is gone or replaced: %v %v", p, fi.Mode(), err)
		}
		if got, _ := os.Readlink(p); got != to {
			t.Fatalf("%s: points to %q now, want %q", p, got, to)
		}
	}

	// A symlink to a FIFO.
	fifo := filepath.Join(dir, "fifo")
	makeFIFO(t, fifo)
	link := filepath.Join(dir, "tofifo")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		b, err := os.ReadFile(fifo)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- FileSHA256Bytes(b)
	}()
	if r := Zfetch(t, "-q", "-o", link, d.URL("/f.bin")); r.Code != 0 {
		t.Fatalf("zfetch -o LINK-TO-FIFO: exit %d: %s", r.Code, r.Stderr)
	}
	isLink(link, fifo)
	select {
	case s := <-got:
		if s != sum {
			t.Fatalf("the FIFO's reader got sha256 %s, want %s", s, sum)
		}
	case <-time.After(time.Minute):
		t.Fatal("zfetch is done but the FIFO's reader has not seen its end")
	}

	// What /dev/stdout is: a link to /proc/self/fd/1, here zfetch's stdout
	// redirected to a regular file.
	out := filepath.Join(dir, "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stdout := filepath.Join(dir, "stdout")
	if err := os.Symlink("/proc/self/fd/1", stdout); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(zfetch, "-q", "-o", stdout, d.URL("/f.bin"))
	var errb strings.Builder
	cmd.Stdout, cmd.Stderr = f, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("zfetch -o LINK-TO-/proc/self/fd/1 > FILE: %v: %s", err, errb.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("zfetch -o LINK-TO-/proc/self/fd/1: timed out")
	}
	isLink(stdout, "/proc/self/fd/1")
	if s := FileSHA256(t, out); s != sum {
		t.Fatalf("the file zfetch's stdout went to has sha256 %s, want %s", s, sum)
	}

	// A plain symlink to a regular file: the file is replaced, the link
	// stays (as with curl -o, which writes through it).
	tofile := filepath.Join(dir, "tofile")
	if err := os.Symlink("out", tofile); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := Zfetch(t, "-q", "-o", tofile, d.URL("/f.bin")); r.Code != 0 {
		t.Fatalf("zfetch -o LINK-TO-FILE: exit %d: %s", r.Code, r.Stderr)
	}
	isLink(tofile, "out")
	if s := FileSHA256(t, out); s != sum {
		t.Fatalf("the file the link leads to has sha256 %s, want %s", s, sum)
	}

	// A dangling symlink: the missing name it ends in is made, the link
	// stays (as curl -o does).
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink("new", dangling); err != nil {
		t.Fatal(err)
	}
	if r := Zfetch(t, "-q", "-o", dangling, d.URL("/f.bin")); r.Code != 0 {
		t.Fatalf("zfetch -o DANGLING-LINK: exit %d: %s", r.Code, r.Stderr)
	}
	isLink(dangling, "new")
	if s := FileSHA256(t, filepath.Join(dir, "new")); s != sum {
		t.Fatalf("the file made at the dangling link's end has sha256 %s, want %s", s, sum)
	}
	if es, _ := os.ReadDir(dir); len(es) != 7 {
		t.Errorf("%d names in the directory, want 7 (fifo, tofifo, out, stdout, tofile, dangling, new): no .part left", len(es))
	}
}
