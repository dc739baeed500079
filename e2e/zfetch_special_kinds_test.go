package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readFIFO reads the FIFO to its end in the background; the channel gets
// the sha256 of what came (or the error).
func readFIFO(fifo string) <-chan string {
	got := make(chan string, 1)
	go func() {
		f, err := os.Open(fifo)
		if err != nil {
			got <- err.Error()
			return
		}
		defer f.Close()
		h := sha256.New()
		io.Copy(h, f)
		got <- hex.EncodeToString(h.Sum(nil))
	}()
	return got
}

func mustKind(t *testing.T, p string, kind os.FileMode) {
	t.Helper()
	if fi, err := os.Lstat(p); err != nil || fi.Mode().Type() != kind {
		t.Fatalf("%s is gone or replaced: %v %v", p, fi.Mode(), err)
	}
}

// TestZfetchSpecialOutputKinds: --json with -o FIFO puts the events on
// stdout and the bytes in the FIFO; a wrong --sha256 while streaming into a
// FIFO is exit 5; -o a socket is refused (nothing can be written into
// one by its name) and the socket stays; a tree whose local file is a FIFO
// gets the other files, refuses that one (exit 6) and leaves no .part.
func TestZfetchSpecialOutputKinds(t *testing.T) {
	root := t.TempDir()
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 1<<20)
	WriteRandom(t, filepath.Join(root, "tree", "a.bin"), 100<<10)
	WriteRandom(t, filepath.Join(root, "tree", "b.bin"), 100<<10)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	makeFIFO(t, fifo)

	got := readFIFO(fifo)
	r := Zfetch(t, "--json", "-o", fifo, d.httpURL("/f.bin"))
	mustKind(t, fifo, os.ModeNamedPipe)
	if r.Code != 0 || !strings.Contains(r.Stdout, `"event":"done"`) && !strings.Contains(r.Stdout, `"done"`) {
		t.Fatalf("zfetch --json -o FIFO: exit %d, stdout %q, stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	select {
	case s := <-got:
		if s != sum {
			t.Fatalf("--json -o FIFO: the reader got %s, want %s", s, sum)
		}
	case <-time.After(time.Minute):
		t.Fatal("the FIFO's reader has not seen its end")
	}

	got = readFIFO(fifo)
	r = Zfetch(t, "-q", "--sha256", strings.Repeat("0", 64), "-o", fifo, d.URL("/f.bin"))
	mustKind(t, fifo, os.ModeNamedPipe)
	if r.Code != 5 {
		t.Fatalf("zfetch --sha256 WRONG -o FIFO: exit %d %q, want 5", r.Code, r.Stderr)
	}
	<-got

	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r = Zfetch(t, "-q", "-o", sock, d.URL("/f.bin"))
	mustKind(t, sock, os.ModeSocket)
	if r.Code == 0 || !strings.Contains(r.Stderr, "socket") {
		t.Errorf("zfetch -o SOCKET: exit %d %q, want it refused, naming a socket", r.Code, r.Stderr)
	}

	out := t.TempDir()
	makeFIFO(t, filepath.Join(out, "b.bin"))
	r = Zfetch(t, "-q", "-r", "-o", out, d.URL("/tree"))
	if r.Code != 6 || !strings.Contains(r.Stderr, "is a FIFO") {
		t.Errorf("zfetch -r onto a tree with a FIFO: exit %d %q, want 6 naming the FIFO", r.Code, r.Stderr)
	}
	mustKind(t, filepath.Join(out, "b.bin"), os.ModeNamedPipe)
	if s, want := FileSHA256(t, filepath.Join(out, "a.bin")), FileSHA256(t, filepath.Join(root, "tree", "a.bin")); s != want {
		t.Errorf("a.bin: sha256 %s, want %s", s, want)
	}
	if es, _ := os.ReadDir(out); len(es) != 2 {
		t.Errorf("%d names in the tree, want a.bin and the FIFO", len(es))
	}
}
