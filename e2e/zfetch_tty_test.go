package e2e

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/mattn/go-runewidth"
)

// runOnPTY runs zfetch with its stdio on a pseudo-terminal of the given
// width and returns everything it wrote there, and how long it ran.
func runOnPTY(t *testing.T, cols int, args ...string) (string, time.Duration, int) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: uint16(cols), Rows: 30}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(zfetch, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		io.Copy(&out, ptmx) // ends with EIO once the child has exited and closed the tty
		close(copied)
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case <-waited:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-waited
		t.Fatal("zfetch on a terminal did not finish")
	}
	el := time.Since(start)
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
		t.Fatal("terminal output did not end")
	}
	return out.String(), el, cmd.ProcessState.ExitCode()
}

var (
	ansi      = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)
	ttyStats  = regexp.MustCompile(`\d+\.\d\d% +[\d.]+ [KMG]?i?B/[\d.]+ [KMG]?i?B +[\d.]+ [KMG]?i?B/s ETA \S+`)
	lineBreak = regexp.MustCompile(`[\r\n]`)
)

// TestZfetchProgressOnTerminal: under a pseudo-terminal the progress line
// is redrawn in place (carriage returns, no new lines) at most about ten
// times a second, shows percent, bytes, rate and ETA, and never exceeds
// the terminal's width, however narrow.
func TestZfetchProgressOnTerminal(t *testing.T) {
	root := shortTempDir(t)
	name := "a file with a rather long name, to be shortened on narrow terminals.bin"
	sum := WriteRandom(t, filepath.Join(root, name), 24<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	url := d.URL("/" + strings.ReplaceAll(name, " ", "%20"))
	for _, cols := range []int{120, 80, 50} {
		dst := filepath.Join(t.TempDir(), "out.bin")
		out, el, code := runOnPTY(t, cols, "--limit-rate", "24M", "-o", dst, url)
		if code != 0 {
			t.Fatalf("%d columns: exit %d:\n%q", cols, code, out)
		}
		if FileSHA256(t, dst) != sum {
			t.Fatalf("%d columns: wrong content", cols)
		}
		body := strings.TrimSuffix(out, "\r\n") // the pty turns the final \n into \r\n
		if strings.Contains(body, "\n") {
			t.Fatalf("%d columns: a single file printed several lines instead of redrawing one:\n%q", cols, out)
		}
		redraws := strings.Count(body, "\r")
		var frames, withStats int
		for _, f := range lineBreak.Split(body, -1) {
			f = ansi.ReplaceAllString(f, "")
			if f == "" {
				continue
			}
			frames++
			if w := runewidth.StringWidth(f); w >= cols {
				t.Errorf("%d columns: a %d-column line: %q", cols, w, f)
			}
			if ttyStats.MatchString(f) {
				withStats++
			}
		}
		// About a second at 24 MiB/s: several redraws, but at most ~10/s.
		if limit := int(el/(100*time.Millisecond)) + 2; redraws > limit || withStats < 3 {
			t.Fatalf("%d columns: %d redraws (limit %d in %v), %d frames with percent, bytes, rate and ETA:\n%q",
				cols, redraws, limit, el, withStats, out)
		}
		t.Logf("%d columns: %d redraws in %v; last: %q", cols, redraws, el.Round(time.Millisecond),
			ansi.ReplaceAllString(lineBreak.Split(body, -1)[frames-1], ""))
	}
}

// TestZfetchNoTerminalNoEscapes: with stdout and stderr redirected to a
// file, there is no carriage return and no escape code at all; -q prints
// nothing.
func TestZfetchNoTerminalNoEscapes(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "a.bin"), 8<<20)
	WriteRandom(t, filepath.Join(root, "b.bin"), 1<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	for _, quiet := range []bool{false, true} {
		dir := t.TempDir()
		log := filepath.Join(dir, "log")
		f, err := os.Create(log)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--limit-rate", "32M", "-O", dir, d.URL("/a.bin"), d.URL("/b.bin"), d.URL("/missing")}
		if quiet {
			args = append([]string{"-q"}, args...)
		}
		cmd := exec.Command(zfetch, args...)
		cmd.Stdout, cmd.Stderr = f, f
		err = cmd.Run()
		f.Close()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("exit %v, want 3 (one file missing)", err)
		}
		b, _ := os.ReadFile(log)
		s := string(b)
		if strings.ContainsAny(s, "\r\x1b") {
			t.Fatalf("redirected output has \\r or escape codes:\n%q", s)
		}
		if quiet {
			if s != "zfetch: "+filepath.Join(dir, "missing")+": not found: /missing\n" {
				t.Fatalf("-q printed more than the error:\n%s", s)
			}
			continue
		}
		for _, want := range []string{"a.bin: 8.00 MiB, starting", "a.bin: done, 8.00 MiB in", "b.bin: done", "missing: not found: /missing", "2 of 3 files complete"} {
			if !strings.Contains(s, want) {
				t.Errorf("output lacks %q:\n%s", want, s)
			}
		}
	}
}
