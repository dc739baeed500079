package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestZfetchIntoFIFOWithoutReaderMaxTime: a FIFO that nobody reads blocks
// its opening for writing; --max-time still bounds the run (status 7), as
// docs/ZFETCH.md says it bounds everything, and the FIFO stays one.
func TestZfetchIntoFIFOWithoutReaderMaxTime(t *testing.T) {
	root := t.TempDir()
	WriteRandom(t, filepath.Join(root, "f.bin"), 64<<10)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, 30*time.Second, zfetch, "-q", "--max-time", "1s", "-o", fifo, d.URL("/f.bin"))
	if r.Code != 7 || !strings.Contains(r.Stderr, "--max-time") {
		t.Fatalf("zfetch -o FIFO without a reader --max-time 1s: exit %d %q, want 7", r.Code, r.Stderr)
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode().Type() != os.ModeNamedPipe {
		t.Fatalf("the FIFO is gone or replaced: %v %v", fi.Mode(), err)
	}
}
