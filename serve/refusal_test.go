package serve

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

func TestRefusals(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644)
	ts.write(t, "dir/file", []byte("hello"))
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(ts.root, "out"))
	os.Symlink("dir/file", filepath.Join(ts.root, "in"))
	syscall.Mkfifo(filepath.Join(ts.root, "fifo"), 0o644)
	for _, tc := range []struct {
		q      wire.Request
		status wire.Status
		kind   wire.Kind
	}{
		{wire.Request{Op: wire.OpGet, Path: "/dir/file"}, wire.StatusOK, wire.KindFile},
		{wire.Request{Op: wire.OpGet, Path: "/in"}, wire.StatusOK, wire.KindFile},
		{wire.Request{Op: wire.OpGet, Path: "/out"}, wire.StatusForbidden, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/../x"}, wire.StatusForbidden, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/dir"}, wire.StatusNotRegular, wire.KindDir},
		{wire.Request{Op: wire.OpGet, Path: "/fifo"}, wire.StatusNotRegular, wire.KindOther},
		{wire.Request{Op: wire.OpGet, Path: "/nope"}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/dir/file/x"}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/dir/file", Offset: 6}, wire.StatusRangeNotSatisfiable, wire.KindNone},
		{wire.Request{Op: wire.OpStat, Path: "/dir"}, wire.StatusOK, wire.KindDir},
		{wire.Request{Op: wire.OpStat, Path: "/in"}, wire.StatusOK, wire.KindFile},
		{wire.Request{Op: wire.OpStat, Path: "/fifo"}, wire.StatusNotRegular, wire.KindOther},
		{wire.Request{Op: wire.OpStat, Path: "/out"}, wire.StatusForbidden, wire.KindNone},
		{wire.Request{Op: wire.OpList, Path: "/dir/file"}, wire.StatusNotDirectory, wire.KindNone},
		{wire.Request{Op: wire.OpList, Path: "/nope"}, wire.StatusNotFound, wire.KindNone},
		// A trailing "/" or "/." names a directory: never the file.
		{wire.Request{Op: wire.OpGet, Path: "/dir/file/"}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/dir/file/."}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/in/"}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpStat, Path: "/dir/file/"}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpStat, Path: "dir/file/."}, wire.StatusNotFound, wire.KindNone},
		{wire.Request{Op: wire.OpList, Path: "/dir/file/"}, wire.StatusNotDirectory, wire.KindNone},
		{wire.Request{Op: wire.OpList, Path: "/dir/file/."}, wire.StatusNotDirectory, wire.KindNone},
		{wire.Request{Op: wire.OpGet, Path: "/dir/"}, wire.StatusNotRegular, wire.KindDir},
		{wire.Request{Op: wire.OpStat, Path: "/dir/"}, wire.StatusOK, wire.KindDir},
		{wire.Request{Op: wire.OpStat, Path: "/dir/."}, wire.StatusOK, wire.KindDir},
		{wire.Request{Op: wire.OpList, Path: "/dir/"}, wire.StatusOK, wire.KindDir},
		{wire.Request{Op: wire.OpList, Path: "/dir/."}, wire.StatusOK, wire.KindDir},
	} {
		r, _ := ts.do(t, tc.q)
		if r.Status != tc.status || r.Kind != tc.kind {
			t.Errorf("%v %s: %v/%v %q, want %v/%v", tc.q.Op, tc.q.Path, r.Status, r.Kind, r.Message, tc.status, tc.kind)
		}
		if r.Status != wire.StatusOK && r.Message == "" {
			t.Errorf("%v %s: refusal without a message", tc.q.Op, tc.q.Path)
		}
	}
}

// TestOpenInRootFallback runs the confinement tests again through os.Root,
// as on a machine where openat2 is refused (ENOSYS).
func TestOpenInRootFallback(t *testing.T) {
	noOpenat2.Store(true)
	defer noOpenat2.Store(false)
	t.Run("refusals", TestRefusals)
	t.Run("list", TestList)
	t.Run("senders", TestSendersByteExact)
	ts := newTestServer(t, config.ModeSendfile)
	os.Symlink("/proc/self/root/etc/passwd", filepath.Join(ts.root, "magic"))
	if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/magic"}); r.Status != wire.StatusForbidden {
		t.Fatalf("magic link through os.Root: %v %q", r.Status, r.Message)
	}
}

// TestNameTooLong: a path component longer than the file system allows is
// "not found" and the connection stays usable (status 1 would close it).
func TestNameTooLong(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "f", []byte("x"))
	if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/" + strings.Repeat("a", 300)}); r.Status != wire.StatusNotFound {
		t.Fatalf("GET of a 300-byte name: %v %q", r.Status, r.Message)
	}
	if r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"}); r.Status != wire.StatusOK || string(body) != "x" {
		t.Fatalf("next request on the same connection: %v %q", r.Status, body)
	}
}

// TestRefusedNamesAreNotOpened: a FIFO or device is refused without being
// opened for reading (which would release a writer blocked in open(2), or
// trigger a device's open side effects): inotify sees no open of it. Only
// what is served is opened.
func TestRefusedNamesAreNotOpened(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "file", []byte("hello"))
	names := []string{"fifo"}
	if err := syscall.Mkfifo(filepath.Join(ts.root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 && syscall.Mknod(filepath.Join(ts.root, "null"), syscall.S_IFCHR|0o666, 1<<8|3) == nil {
		names = append(names, "null")
	} else {
		t.Log("not root: only the FIFO (mknod of a device needs root)")
	}
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	for _, n := range append(names, "file") {
		if _, err := unix.InotifyAddWatch(in, filepath.Join(ts.root, n), unix.IN_OPEN); err != nil {
			t.Fatal(err)
		}
	}
	opens := func() int {
		buf := make([]byte, 4096)
		n, _ := unix.Read(in, buf)
		return max(n, 0) / unix.SizeofInotifyEvent
	}
	for _, n := range names {
		if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/" + n}); r.Status != wire.StatusNotRegular {
			t.Fatalf("GET /%s: %+v", n, r)
		}
		if r, _ := ts.do(t, wire.Request{Op: wire.OpStat, Path: "/" + n}); r.Status != wire.StatusNotRegular {
			t.Fatalf("STAT /%s: %+v", n, r)
		}
	}
	if n := opens(); n != 0 {
		t.Fatalf("%d opens of refused names", n)
	}
	// The check itself: serving the regular file is an open inotify sees.
	if r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/file"}); r.Status != wire.StatusOK {
		t.Fatalf("GET /file: %+v", r)
	}
	if n := opens(); n == 0 {
		t.Fatal("inotify saw no open of the served file: the test proves nothing")
	}
}
