package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestZfetchIntoDeviceOrFIFO: -o naming a device or a FIFO writes the
// file into it, in order, as curl -o and wget -O do, over both protocols;
// the node is never replaced by a file renamed over it (zfetch -o
// /dev/null once left a regular file in /dev/null's place). What needs a
// regular file (-c, -x N, -r) is a usage error, and a download whose
// destination under -O is such a node is refused before any byte.
func TestZfetchIntoDeviceOrFIFO(t *testing.T) {
	d, sum := serveOneFile(t, 3<<20)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	makeFIFO(t, fifo)
	for _, url := range []string{d.URL("/f.bin"), d.httpURL("/f.bin")} {
		got := readFIFO(fifo)
		r := Zfetch(t, "-q", "-o", fifo, url)
		mustKind(t, fifo, os.ModeNamedPipe) // first: a FIFO replaced leaves its reader waiting for ever
		if r.Code != 0 {
			t.Fatalf("zfetch -o FIFO %s: exit %d: %s", url, r.Code, r.Stderr)
		}
		select {
		case s := <-got:
			if s != sum {
				t.Fatalf("%s: the FIFO's reader got sha256 %s, want %s", url, s, sum)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s: zfetch is done but the FIFO's reader has not seen its end", url)
		}
	}
	for _, args := range [][]string{{"-c"}, {"-x", "4"}, {"-r"}} {
		r := Zfetch(t, append(append([]string{"-q"}, args...), "-o", fifo, d.URL("/f.bin"))...)
		if r.Code != 2 || !strings.Contains(r.Stderr, "is a FIFO") {
			t.Errorf("zfetch %v -o FIFO: exit %d %q, want a usage error naming the FIFO", args, r.Code, r.Stderr)
		}
		mustKind(t, fifo, os.ModeNamedPipe)
	}
	// -O: the URL's name in the directory is the FIFO.
	odir := t.TempDir()
	makeFIFO(t, filepath.Join(odir, "f.bin"))
	r := Zfetch(t, "-q", "-O", odir, d.URL("/f.bin"))
	if r.Code == 0 || !strings.Contains(r.Stderr, "is a FIFO, not a regular file") {
		t.Fatalf("zfetch -O onto a FIFO: exit %d %q, want it refused", r.Code, r.Stderr)
	}
	if es, _ := os.ReadDir(odir); len(es) != 1 {
		t.Errorf("-O onto a FIFO left %d names in the directory, want the FIFO alone", len(es))
	}
	mustKind(t, filepath.Join(odir, "f.bin"), os.ModeNamedPipe)

	// A character device: /dev/null's own numbers, made here.
	null := filepath.Join(dir, "null")
	if err := syscall.Mknod(null, syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Skipf("mknod of a character device (needs root): %v", err)
	}
	for _, url := range []string{d.URL("/f.bin"), d.httpURL("/f.bin")} {
		if r := Zfetch(t, "-q", "-o", null, url); r.Code != 0 {
			t.Fatalf("zfetch -o NULLDEV %s: exit %d: %s", url, r.Code, r.Stderr)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(null, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 1<<8|3 {
			t.Fatalf("%s: the device was replaced: mode %o rdev %d %v", url, st.Mode, st.Rdev, err)
		}
	}
	if es, _ := os.ReadDir(dir); len(es) != 2 {
		t.Errorf("%d names beside the FIFO and the device, want none (no .part)", len(es)-2)
	}
}

// serveOneFile starts a daemon with one worker serving /f.bin, n random
// bytes, and returns it with the file's sha256.
func serveOneFile(t *testing.T, n int64) (*Daemon, string) {
	t.Helper()
	root := t.TempDir()
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), n)
	return StartDaemon(t, DaemonOpts{Root: root, Workers: 1}), sum
}

// makeFIFO makes a FIFO at path.
func makeFIFO(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
}
