package serve

import (
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// slowListener answers every fanotify open-permission event on the files
// of dir after wait, as a virus scanner or fapolicyd does from its own
// process; it is gone at the end of the test.
func slowListener(t *testing.T, dir string, wait time.Duration) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("fanotify permission events need root")
	}
	fan, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		t.Skipf("fanotify: %v", err)
	}
	if err := unix.FanotifyMark(fan, unix.FAN_MARK_ADD, unix.FAN_OPEN_PERM|unix.FAN_EVENT_ON_CHILD, unix.AT_FDCWD, dir); err != nil {
		unix.Close(fan)
		t.Skipf("fanotify mark: %v", err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 4096)
		for {
			select {
			case <-done:
				return
			default:
			}
			fds := []unix.PollFd{{Fd: int32(fan), Events: unix.POLLIN}}
			if n, _ := unix.Poll(fds, 50); n <= 0 {
				continue
			}
			n, err := unix.Read(fan, buf)
			if err != nil {
				continue
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
	}()
	t.Cleanup(func() {
		close(done)
		<-stopped
		unix.Close(fan) // answers whatever is left: allowed
	})
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
