package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
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

// TestZfetchIntoFIFOErrorFirst: zfetch opens -o FIFO only once the server
// has the file, so a missing file is status 3, with or without a reader
// (before, it waited for one, here until --max-time: status 7; now it
// still waits, within --max-time, for a reader to see the FIFO's end:
// TestZfetchIntoFIFOErrorLateReader); a reader already waiting sees the
// FIFO's end (no bytes) at once, as when zfetch opened it first. The good
// case still streams.
func TestZfetchIntoFIFOErrorFirst(t *testing.T) {
	d, sum := serveOneFile(t, 64<<10)
	fifo := filepath.Join(t.TempDir(), "fifo")
	makeFIFO(t, fifo)
	for _, url := range []string{d.URL("/missing.bin"), d.httpURL("/missing.bin")} {
		r := run(t, 60*time.Second, zfetch, "-q", "--max-time", "2s", "-o", fifo, url)
		if r.Code != 3 {
			t.Fatalf("%s into a FIFO without a reader: exit %d, want 3 (not found): %s", url, r.Code, r.Stderr)
		}
		got := readFIFO(fifo)
		r = run(t, 60*time.Second, zfetch, "-q", "--max-time", "30s", "-o", fifo, url)
		if r.Code != 3 {
			t.Fatalf("%s into a FIFO with a reader: exit %d, want 3: %s", url, r.Code, r.Stderr)
		}
		select {
		case s := <-got:
			if s != FileSHA256Bytes(nil) {
				t.Fatalf("%s: the waiting reader got sha256 %s, want no bytes", url, s)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: zfetch failed, but the FIFO's waiting reader never saw its end", url)
		}
	}
	got := readFIFO(fifo)
	if r := Zfetch(t, "-q", "-o", fifo, d.URL("/f.bin")); r.Code != 0 {
		t.Fatalf("zfetch -o FIFO: exit %d: %s", r.Code, r.Stderr)
	}
	if s := <-got; s != sum {
		t.Fatalf("the FIFO's reader got sha256 %s, want %s", s, sum)
	}
	mustKind(t, fifo, os.ModeNamedPipe)
}

// TestZfetchIntoFIFOErrorLateReader: a FIFO's reader started beside
// zfetch (zfetch -o p URL & consumer < p) may open the FIFO only after
// zfetch has learned that the file is missing. It must still see the
// FIFO's end, as it did when zfetch opened the FIFO first: a reader that
// opens a FIFO nobody will ever write waits forever. The failure is said
// at once all the same, and the status is the failure's.
func TestZfetchIntoFIFOErrorLateReader(t *testing.T) {
	d, _ := serveOneFile(t, 64<<10)
	fifo := filepath.Join(t.TempDir(), "fifo")
	makeFIFO(t, fifo)
	for _, url := range []string{d.URL("/missing.bin"), d.httpURL("/missing.bin")} {
		cmd := exec.Command(zfetch, "--max-time", "60s", "-o", fifo, url)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		said, done := make(chan string, 1), make(chan struct{})
		go func() {
			r := bufio.NewReader(stderr)
			line, _ := r.ReadString('\n')
			said <- line
			io.Copy(io.Discard, r)
			cmd.Wait()
			close(done)
		}()
		// The failure is said at once, before any reader comes.
		select {
		case line := <-said:
			if !strings.Contains(strings.ToLower(line), "not found") {
				t.Fatalf("%s: zfetch said %q, want not found", url, line)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("%s: zfetch -o FIFO without a reader said nothing of the missing file in 10s", url)
		}
		got := readFIFO(fifo)
		select {
		case s := <-got:
			if s != FileSHA256Bytes(nil) {
				t.Fatalf("%s: the late reader got sha256 %s, want no bytes", url, s)
			}
		case <-time.After(10 * time.Second):
			// Free the reader left in its open, and zfetch.
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			cmd.Process.Kill()
			<-done
			t.Fatalf("%s: zfetch failed (exit %d), and the FIFO's reader that came after that never saw its end", url, cmd.ProcessState.ExitCode())
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("%s: zfetch did not end once the reader had the FIFO's end", url)
		}
		if code := cmd.ProcessState.ExitCode(); code != 3 {
			t.Fatalf("%s: exit %d, want 3 (not found)", url, code)
		}
	}
}

// TestZfetchStreamReaderStalled: --max-time bounds a run whose output's
// reader stopped reading (a pipe on stdout, a FIFO named by -o): zfetch
// ends with status 7 while the reader still holds the pipe open and
// unread. Before, the write into the full pipe held zfetch until the
// reader went away.
func TestZfetchStreamReaderStalled(t *testing.T) {
	d, _ := serveOneFile(t, 32<<20)
	fifo := filepath.Join(t.TempDir(), "fifo")
	makeFIFO(t, fifo)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"stdout", []string{"-o", "-"}},
		{"fifo", []string{"-o", fifo}},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The reader: open, never read, closed at the end.
			var out *os.File
			cmd := exec.Command(zfetch, append(append([]string{"-q", "--max-time", "1s"}, c.args...), d.URL("/f.bin"))...)
			if c.name == "stdout" {
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				cmd.Stdout, out = w, w
			} else {
				r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
			}
			var errb strings.Builder
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if out != nil {
				out.Close() // the child has it
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 7 || !strings.Contains(errb.String(), "--max-time") {
					t.Fatalf("zfetch %s into a stalled reader: %v %q, want status 7", c.name, err, errb.String())
				}
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("zfetch --max-time 1s %s into a reader that stopped reading is still running after a minute: %q", c.name, errb.String())
			}
		})
	}
}

// TestZfetchStreamStalledJSON: --json for a stream whose reader stopped
// reading keeps the documented contract: the file that did not end has
// its "error" event, and the exit event counts it as failed ("error" on
// exit is for a run that failed before any file started).
func TestZfetchStreamStalledJSON(t *testing.T) {
	d, _ := serveOneFile(t, 32<<20)
	fifo := filepath.Join(t.TempDir(), "fifo")
	makeFIFO(t, fifo)
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0) // open, never read
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	res := run(t, 60*time.Second, zfetch, "--json", "--max-time", "1s", "-o", fifo, d.URL("/f.bin"))
	if res.Code != 7 {
		t.Fatalf("exit %d, want 7: %s", res.Code, res.Stderr)
	}
	evs := jsonEvents(t, res.Stdout)
	if e := eventsOf(evs, "error"); len(e) != 1 || e[0]["file"] != float64(0) {
		t.Errorf("error events %v, want one for file 0\n%s", e, res.Stdout)
	}
	x := eventsOf(evs, "exit")
	if len(x) != 1 || x[0]["failed"] != float64(1) || x[0]["code"] != float64(7) {
		t.Errorf("exit %v, want code 7 and failed 1", x)
	}
	if lines := strings.Count(res.Stderr, "\n"); lines != 1 {
		t.Errorf("stderr %q: want one line", res.Stderr)
	}
}
