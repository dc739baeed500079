package serve

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// slowListener answers every fanotify open-permission event on the files
// of dir after wait, as a virus scanner or fapolicyd does: from a process
// of its own (this test binary run again, TestMain), as it must be. In
// this process it would need the runtime to run it while a raw open
// waits for it, holding its P: a collection that stops the world (or waits
// for every P, as its mark termination does) then waits for the open, and
// the open for the listener, which cannot run (it hung the unit tests
// once). The listener is killed at the end of the test.
func slowListener(t *testing.T, dir string, wait time.Duration) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("fanotify permission events need root")
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fanotifyDirEnv+"="+dir, fanotifyWaitEnv+"="+wait.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill() // its fanotify group goes with it: what is left is allowed
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	select {
	case l := <-line:
		if l != "ready" {
			t.Skipf("fanotify listener: %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fanotify listener did not start in 10 s")
	}
}

// The environment that makes this test binary the fanotify listener of
// slowListener (TestMain).
const (
	fanotifyDirEnv  = "ZFS_SERVE_TEST_FANOTIFY_DIR"
	fanotifyWaitEnv = "ZFS_SERVE_TEST_FANOTIFY_WAIT"
)

// fanotifyListener is slowListener's process: it marks dir, says "ready"
// (or why not) on stdout, and answers every open-permission event after
// wait, allowed, until it is killed.
func fanotifyListener(dir string, wait time.Duration) {
	fan, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		fmt.Printf("fanotify: %v\n", err)
		return
	}
	if err := unix.FanotifyMark(fan, unix.FAN_MARK_ADD, unix.FAN_OPEN_PERM|unix.FAN_EVENT_ON_CHILD, unix.AT_FDCWD, dir); err != nil {
		fmt.Printf("fanotify mark: %v\n", err)
		return
	}
	fmt.Println("ready")
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fan, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		time.Sleep(wait) // the listener at work, not synchronisation
		for off := 0; off+int(unsafe.Sizeof(unix.FanotifyEventMetadata{})) <= n; {
			m := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
			r := unix.FanotifyResponse{Fd: m.Fd, Response: unix.FAN_ALLOW}
			unix.Write(fan, (*[unsafe.Sizeof(r)]byte)(unsafe.Pointer(&r))[:])
			unix.Close(int(m.Fd))
			off += int(m.Event_len)
		}
	}
}

// TestRawOpenOffWhenSlow: where opening a file waits for a fanotify
// permission listener (raw, the worker's thread waits with it),
// rawSlowMax such raw opens in a row turn raw opens off: the next miss is
// opened the ordinary way, and served.
func TestRawOpenOffWhenSlow(t *testing.T) {
	settleNow(t)
	fc, root, _ := testCache(t, 0)
	if !root.fs().local || !root.fs().cached {
		t.Skip("no raw opens on this root")
	}
	dir := root.r.Name()
	names := []string{"/f1", "/f2", "/f3", "/f4", "/f5"}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Lstat(filepath.Join(dir, n)) // cached dentries, and no open
	}
	slowListener(t, dir, 3*rawOpenSlow)
	for _, n := range names {
		fd, st, e, err := fc.open(root, n, nil)
		if err != nil || st.Size != int64(len(n)) {
			t.Fatalf("open %s: size %d, %v", n, st.Size, err)
		}
		fc.release(fd, e)
	}
	if n := fc.rawOpens.Load(); n != rawSlowMax {
		t.Errorf("%d of %d misses opened raw while each open waits for a listener, want %d", n, len(names), rawSlowMax)
	}
}

// TestNoteRawOpen: raw opens go off after rawSlowMax slow ones in a row,
// not after slow ones apart (a preempted thread), and stay off.
func TestNoteRawOpen(t *testing.T) {
	slow, fast := 2*rawOpenSlow, rawOpenSlow/10
	for _, c := range []struct {
		name string
		took []time.Duration
		off  bool
	}{
		{"fast", []time.Duration{fast, fast, fast}, false},
		{"one slow", []time.Duration{fast, slow, fast}, false},
		{"slow apart", []time.Duration{slow, fast, slow, slow, fast, slow}, false},
		{"slow in a row", []time.Duration{fast, slow, slow, slow}, true},
		{"off for good", []time.Duration{slow, slow, slow, fast, fast}, true},
	} {
		var r rootDir
		for _, d := range c.took {
			r.noteRawOpen(d)
		}
		if r.rawOff.Load() != c.off {
			t.Errorf("%s: raw opens off %v, want %v", c.name, r.rawOff.Load(), c.off)
		}
	}
}
