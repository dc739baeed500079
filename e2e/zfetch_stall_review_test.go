package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestZfetchStreamStallMatrix: a reader that opens and never reads, for
// each receive mode, zfs:// and http://, stdout and FIFO, -q and --json,
// --max-time and SIGINT: zfetch ends within a few seconds with the stop's
// status.
func TestZfetchStreamStallMatrix(t *testing.T) {
	if os.Getenv("ZFS_E2E_STALL_MATRIX") != "1" {
		t.Skip("2 minutes: ZFS_E2E_STALL_MATRIX=1")
	}
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "f.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	dir := t.TempDir()
	n := 0
	for _, u := range []string{d.URL("/f.bin"), d.httpURL("/f.bin")} {
		for _, recv := range []string{"", "copy", "splice"} {
			for _, out := range []string{"stdout", "fifo"} {
				for _, mode := range []string{"-q", "--json"} {
					for _, stop := range []string{"max-time", "int"} {
						if (mode == "--json" || stop == "int") && recv == "copy" {
							continue
						}
						n++
						name := strings.Join([]string{u[:4], recv, out, mode, stop}, "/")
						fifo := filepath.Join(dir, "fifo"+itoa(int64(n)))
						makeFIFO(t, fifo)
						args := []string{mode}
						if recv != "" {
							args = append(args, "--recv", recv)
						}
						if stop == "max-time" {
							args = append(args, "--max-time", "1s")
						}
						if out == "stdout" {
							args = append(args, "-o", "-")
						} else {
							args = append(args, "-o", fifo)
						}
						args = append(args, u)
						stallOne(t, name, args, out, fifo, stop)
					}
				}
			}
		}
	}
}

func stallOne(t *testing.T, name string, args []string, out, fifo, stop string) {
	var w *os.File
	cmd := exec.Command(zfetch, args...)
	if out == "stdout" {
		r, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		cmd.Stdout, w = pw, pw
	} else {
		r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
	}
	var errb, outb strings.Builder
	cmd.Stderr = &errb
	if out != "stdout" {
		cmd.Stdout = &outb
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if w != nil {
		w.Close()
	}
	if stop == "int" {
		time.Sleep(1500 * time.Millisecond)
		cmd.Process.Signal(os.Interrupt)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	want := 7
	if stop == "int" {
		want = 130
	}
	select {
	case err := <-done:
		var ee *exec.ExitError
		el := time.Since(start)
		code := 0
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		t.Logf("%s: %v code %d stderr %q stdout %q", name, el.Round(100*time.Millisecond), code, errb.String(), outb.String())
		if code != want {
			t.Errorf("%s: code %d, want %d", name, code, want)
		}
		if el > 8*time.Second {
			t.Errorf("%s: took %v", name, el)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Errorf("%s: still running after 30 s: %q", name, errb.String())
	}
}

// TestZfetchStreamStalledJSON: --json for a stalled stream keeps the
// documented contract: the file that did not end has its "error" event,
// and the exit event counts it as failed ("error" on exit is for a run
// that failed before any file started).
func TestZfetchStreamStalledJSON(t *testing.T) {
	d, _ := serveOneFile(t, 32<<20)
	fifo := filepath.Join(t.TempDir(), "fifo")
	makeFIFO(t, fifo)
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(zfetch, "--json", "--max-time", "1s", "-o", fifo, d.URL("/f.bin"))
	var outb, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("exit %v, want 7: %s", err, errb.String())
	}
	evs := jsonEvents(t, outb.String())
	if e := eventsOf(evs, "error"); len(e) != 1 || e[0]["file"] != float64(0) {
		t.Errorf("error events %v, want one for file 0\n%s", e, outb.String())
	}
	x := eventsOf(evs, "exit")
	if len(x) != 1 || x[0]["failed"] != float64(1) || x[0]["code"] != float64(7) {
		t.Errorf("exit %v, want code 7 and failed 1", x)
	}
	if lines := strings.Count(errb.String(), "\n"); lines != 1 {
		t.Errorf("stderr %q: want one line", errb.String())
	}
}

// TestZfetchStreamSlowReader: a reader that reads, slowly: zfetch stops
// at --max-time; logged for comparison.
func TestZfetchStreamSlowReader(t *testing.T) {
	if os.Getenv("ZFS_E2E_STALL_MATRIX") != "1" {
		t.Skip("2 minutes: ZFS_E2E_STALL_MATRIX=1")
	}
	d, _ := serveOneFile(t, 32<<20)
	for _, recv := range []string{"copy", "splice"} {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			b := make([]byte, 4096)
			for {
				if _, err := pr.Read(b); err != nil {
					return
				}
				time.Sleep(250 * time.Millisecond)
			}
		}()
		cmd := exec.Command(zfetch, "-q", "--recv", recv, "--max-time", "1s", "-o", "-", d.URL("/f.bin"))
		var errb strings.Builder
		cmd.Stdout, cmd.Stderr = pw, &errb
		start := time.Now()
		cmd.Start()
		pw.Close()
		err = cmd.Wait()
		pr.Close()
		t.Logf("%s: %v after %v: %q", recv, err, time.Since(start).Round(100*time.Millisecond), errb.String())
	}
}
