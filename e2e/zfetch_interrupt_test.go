package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestZfetchInterrupt: Ctrl-C (SIGINT) keeps a resumable .part, exits 130
// and says how to resume; doing so completes the file.
func TestZfetchInterrupt(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	dst := filepath.Join(t.TempDir(), "f.bin")
	b := startZfetch(t, "--limit-rate", "16M", "-o", dst, d.URL("/f.bin"))
	waitProgress(t, b, dst, 4<<20)
	b.signal(syscall.SIGINT)
	r := b.wait(t, 10*time.Second)
	if r.Code != 130 {
		t.Fatalf("exit %d after SIGINT: %s", r.Code, r.Stderr)
	}
	hint := fmt.Sprintf("resume with: zfetch -c --limit-rate 16M -o %s %s", dst, d.URL("/f.bin"))
	if !strings.Contains(r.Stderr, "interrupted") || !strings.Contains(r.Stderr, hint) {
		t.Fatalf("stderr lacks %q:\n%s", hint, r.Stderr)
	}
	if _, err := os.Stat(dst + ".part"); err != nil {
		t.Fatalf("no .part kept: %v", err)
	}
	if r := Zfetch(t, "-c", "-q", "-o", dst, d.URL("/f.bin")); r.Code != 0 || FileSHA256(t, dst) != sum {
		t.Fatalf("resume: exit %d: %s", r.Code, r.Stderr)
	}
	if _, err := os.Stat(dst + ".part"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf(".part left after completion: %v", err)
	}
}

// TestZfetchInterruptBlockedReceive: with no rate limit a large body is
// received on a blocking socket. The server is stopped (SIGSTOP on its
// workers) so that zfetch sits in read(2) on the socket, in the kernel,
// where closing the descriptor would not wake it; Ctrl-C must still end
// it at once (not after the 30 s stall timeout), keep the .part, and the
// resume must complete it.
func TestZfetchInterruptBlockedReceive(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("reads /proc/PID/task/*/syscall with x86-64 syscall numbers")
	}
	const size = 512 << 20
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), size)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	workers := WorkerPIDs(st)
	t.Cleanup(func() {
		for _, pid := range workers {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	dst := filepath.Join(t.TempDir(), "big.bin")
	// copy mode: the .part grows as bytes arrive (mmap's progress is only
	// in its checkpoints).
	b := startZfetch(t, "--recv", "copy", "-o", dst, d.URL("/big.bin"))
	waitProgress(t, b, dst, 16<<20)
	for _, pid := range workers {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	if progressOf(dst) >= size {
		t.Skip("the transfer finished before the server could be stopped")
	}
	pid := b.cmd.Process.Pid
	if !waitFor(10*time.Second, func() bool { return blockedInSocketRead(pid) }) {
		t.Fatalf("no zfetch thread blocked in read(2) on its socket; progress %d of %d", progressOf(dst), size)
	}
	sent := time.Now()
	b.signal(syscall.SIGINT)
	r := b.wait(t, 10*time.Second)
	took := time.Since(sent)
	if took > 5*time.Second {
		t.Fatalf("zfetch took %v to stop after SIGINT", took)
	}
	if r.Code != 130 || !strings.Contains(r.Stderr, "interrupted") {
		t.Fatalf("exit %d after SIGINT: %s", r.Code, r.Stderr)
	}
	had := progressOf(dst)
	if had <= 0 {
		t.Fatalf("no .part progress kept (%d)", had)
	}
	for _, pid := range workers {
		syscall.Kill(pid, syscall.SIGCONT)
	}
	if r := Zfetch(t, "-c", "-q", "--recv", "copy", "-o", dst, d.URL("/big.bin")); r.Code != 0 || FileSHA256(t, dst) != sum {
		t.Fatalf("resume: exit %d: %s", r.Code, r.Stderr)
	}
	t.Logf("ended %v after SIGINT while blocked in read(2), at %d bytes; resumed", took.Round(time.Millisecond), had)
}

// blockedInSocketRead reports whether a thread of pid is in read(2) on one
// of its sockets (a thread that is running shows "running" instead).
func blockedInSocketRead(pid int) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 || f[0] != "0" { // read(2) on x86-64
			continue
		}
		var fd int
		if _, err := fmt.Sscanf(f[1], "0x%x", &fd); err != nil {
			continue
		}
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd)); err == nil && strings.HasPrefix(link, "socket:") {
			return true
		}
	}
	return false
}
