package e2e

import (
	"fmt"
	"os"
	"os/exec"
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
	d, _ := serveOneFile(t, 64<<10)
	fifo := filepath.Join(t.TempDir(), "fifo")
	makeFIFO(t, fifo)
	r := run(t, 30*time.Second, zfetch, "-q", "--max-time", "1s", "-o", fifo, d.URL("/f.bin"))
	if r.Code != 7 || !strings.Contains(r.Stderr, "--max-time") {
		t.Fatalf("zfetch -o FIFO without a reader --max-time 1s: exit %d %q, want 7", r.Code, r.Stderr)
	}
	mustKind(t, fifo, os.ModeNamedPipe)
}

// TestZfetchIntoFIFOWithoutReaderInterrupt: one Ctrl-C ends the wait for a
// FIFO's reader (status 130), as it ends a download.
func TestZfetchIntoFIFOWithoutReaderInterrupt(t *testing.T) {
	d, _ := serveOneFile(t, 64<<10)
	fifo := filepath.Join(t.TempDir(), "fifo")
	makeFIFO(t, fifo)
	cmd := exec.Command(zfetch, "-q", "-o", fifo, d.URL("/f.bin"))
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	}()
	go func() { cmd.Wait(); close(done) }()
	// A thread of zfetch in the kernel's wait for the FIFO's other end.
	waiting := func() bool {
		ws, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", cmd.Process.Pid))
		for _, w := range ws {
			if b, _ := os.ReadFile(w); string(b) == "wait_for_partner" {
				return true
			}
		}
		return false
	}
	if !waitFor(time.Minute, waiting) {
		t.Skip("no thread of zfetch seen in wait_for_partner (/proc/PID/task/*/wchan)")
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("one SIGINT did not end zfetch waiting for the FIFO's reader")
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("exit %d %q, want 130", code, errb.String())
	}
	mustKind(t, fifo, os.ModeNamedPipe)
}
