package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestZfetchDestinationBecomesFIFO: a FIFO made at the destination while
// the download runs is not replaced by the .part renamed over it at the
// end: exit 6, naming it and the .part that keeps the download.
func TestZfetchDestinationBecomesFIFO(t *testing.T) {
	d, sum := serveOneFile(t, 4<<20)
	dir := t.TempDir()
	dst := filepath.Join(dir, "f.bin")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, zfetch, "-q", "--limit-rate", "2M", "-o", dst, d.URL("/f.bin"))
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(time.Minute, func() bool { fi, err := os.Stat(dst + ".part"); return err == nil && fi.Size() > 0 }) {
		t.Fatal("no .part with bytes in it")
	}
	makeFIFO(t, dst)
	err := cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	mustKind(t, dst, os.ModeNamedPipe)
	if code != 6 || !strings.Contains(errb.String(), "is a FIFO") {
		t.Fatalf("exit %d (%v) %q, want 6 naming the FIFO", code, err, errb.String())
	}
	// The whole download is kept, and said to be.
	if !strings.Contains(errb.String(), "kept in "+dst+".part") {
		t.Errorf("stderr %q does not say where the download is", errb.String())
	}
	if s, want := FileSHA256(t, dst+".part"), sum; s != want {
		t.Errorf("%s.part: sha256 %s, want %s", dst, s, want)
	}
}
