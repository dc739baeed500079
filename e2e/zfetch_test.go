package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/fetch"
)

// This file tests zfetch through the real binaries: resume after a kill,
// retries across a worker crash, a drain and restart, and a reload, files
// that change on the server, ranges, trees and receive modes. Timing is
// controlled by zfetch's own --limit-rate (so a transfer is reliably in
// flight) and by SIGSTOP; waits are on conditions, with deadlines.

// bgZfetch is a zfetch running in the background, its output in files.
type bgZfetch struct {
	cmd            *exec.Cmd
	stdout, stderr string
	done           chan struct{}
	code           int
}

func startZfetch(t *testing.T, args ...string) *bgZfetch {
	t.Helper()
	dir := t.TempDir()
	b := &bgZfetch{stdout: filepath.Join(dir, "stdout"), stderr: filepath.Join(dir, "stderr"), done: make(chan struct{})}
	out, err := os.Create(b.stdout)
	if err != nil {
		t.Fatal(err)
	}
	errf, err := os.Create(b.stderr)
	if err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command(zfetch, args...)
	b.cmd.Stdout, b.cmd.Stderr = out, errf
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out.Close()
	errf.Close()
	go func() {
		b.cmd.Wait()
		b.code = b.cmd.ProcessState.ExitCode()
		if ws, ok := b.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			b.code = 128 + int(ws.Signal())
		}
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			b.cmd.Process.Signal(syscall.SIGCONT)
			b.cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

func (b *bgZfetch) signal(sig syscall.Signal) { b.cmd.Process.Signal(sig) }

// wait waits for zfetch to exit and returns its result.
func (b *bgZfetch) wait(t *testing.T, timeout time.Duration) Result {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(timeout):
		b.signal(syscall.SIGKILL)
		<-b.done
		t.Fatalf("zfetch did not finish within %v; stderr:\n%s", timeout, b.readStderr())
	}
	out, _ := os.ReadFile(b.stdout)
	return Result{Stdout: string(out), Stderr: b.readStderr(), Code: b.code}
}

func (b *bgZfetch) readStderr() string {
	s, _ := os.ReadFile(b.stderr)
	return string(s)
}

// jsonEvents parses zfetch --json output.
func jsonEvents(t *testing.T, out string) []map[string]any {
	t.Helper()
	var evs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON event line: %q", sc.Text())
		}
		evs = append(evs, m)
	}
	return evs
}

func eventsOf(evs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, e := range evs {
		if e["event"] == kind {
			out = append(out, e)
		}
	}
	return out
}

func num(v any) int64 {
	f, _ := v.(float64)
	return int64(f)
}

// progressOf is how many bytes of dst are in place, from its .part: the
// length for a front-to-back download, the resume state for a
// preallocated one.
func progressOf(dst string) int64 {
	b, err := os.ReadFile(dst + ".part" + fetch.StateSuffix)
	if err != nil {
		return 0
	}
	st, err := fetch.DecodeState(b)
	if err != nil {
		return 0
	}
	if st.Prealloc {
		return st.Size - st.Remaining()
	}
	fi, err := os.Stat(dst + ".part")
	if err != nil {
		return 0
	}
	return fi.Size()
}

func waitProgress(t *testing.T, b *bgZfetch, dst string, n int64) {
	t.Helper()
	if !waitFor(30*time.Second, func() bool { return progressOf(dst) >= n }) {
		t.Fatalf("%s did not reach %d bytes (at %d); stderr:\n%s", dst, n, progressOf(dst), b.readStderr())
	}
}

// inFlight waits until the daemon sends path with at least n bytes out.
func inFlight(t *testing.T, d *Daemon, path string, n int64) *ctlStatus {
	t.Helper()
	return d.WaitStatus(30*time.Second, "a transfer of "+path+" in flight", func(st *ctlStatus) bool {
		for _, tr := range st.Transfers {
			if tr.Path == path && tr.Sent >= n {
				return true
			}
		}
		return false
	})
}

func transferOf(st *ctlStatus, path string) (pid int, offset int64) {
	for _, tr := range st.Transfers {
		if tr.Path == path {
			return tr.WorkerPID, tr.Offset
		}
	}
	return 0, 0
}

func noTransfers(t *testing.T, d *Daemon) uint64 {
	t.Helper()
	st := d.WaitStatus(10*time.Second, "no transfer in flight", func(st *ctlStatus) bool { return len(st.Transfers) == 0 })
	return st.Totals.BytesSent
}

// replaceFile gives path new content and an mtime an hour later, by
// rename, as a deploy would.
func replaceFile(t *testing.T, path string, size int64) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	tmp := path + ".new"
	sum := WriteRandom(t, tmp, size)
	mt := fi.ModTime().Add(time.Hour)
	if err := os.Chtimes(tmp, mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return sum
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// resumeFindsTreeComplete runs zfetch -r -c of path into out, where the
// tree is complete: every file is skipped and the server sends nothing.
func resumeFindsTreeComplete(t *testing.T, d *Daemon, out, path string) {
	t.Helper()
	before := noTransfers(t, d)
	r := Zfetch(t, "-r", "-c", "--json", "-O", out, d.URL(path))
	if r.Code != 0 {
		t.Fatalf("zfetch -r -c: exit %d: %s", r.Code, r.Stderr)
	}
	for _, e := range eventsOf(jsonEvents(t, r.Stdout), "done") {
		if e["skipped"] != true {
			t.Errorf("-c fetched a complete file again: %v", e)
		}
	}
	if after := noTransfers(t, d); after != before {
		t.Errorf("-c on a complete tree sent %d bytes", after-before)
	}
}
