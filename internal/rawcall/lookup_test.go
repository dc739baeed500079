package rawcall

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLookup(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("d/", 200) + "f" // past Lookup's stack buffer
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(long)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, long), []byte("deep"), 0o644); err != nil {
		t.Fatal(err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_XDEV}
	for _, c := range []struct {
		path string
		size int64
		err  error
	}{
		{"f", 5, nil},
		{long, 4, nil},
		{"missing", 0, unix.ENOENT},
		{"out", 0, unix.EXDEV}, // a symlink out of the root: RESOLVE_BENEATH refuses it
		{"../f", 0, unix.EXDEV},
		{"f\x00x", 0, unix.EINVAL},
	} {
		var st unix.Stat_t
		err := Lookup(dfd, c.path, &how, &st)
		if err != c.err {
			t.Errorf("Lookup(%.20q) = %v, want %v", c.path, err, c.err)
			continue
		}
		if err == nil && st.Size != c.size {
			t.Errorf("Lookup(%.20q): size %d, want %d", c.path, st.Size, c.size)
		}
	}
	// No descriptor is left open.
	before := openFDs(t)
	var st unix.Stat_t
	for range 100 {
		Lookup(dfd, "f", &how, &st)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after 100 lookups, %d before", after, before)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(es)
}

func TestLocal(t *testing.T) {
	for _, c := range []struct {
		path string
		want bool
	}{
		{"/dev/shm", true}, // tmpfs
		{"/proc", false},
		{"/sys", false},
	} {
		fd, err := unix.Open(c.path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Logf("%s: %v", c.path, err)
			continue
		}
		var st unix.Statfs_t
		unix.Fstatfs(fd, &st)
		if c.path == "/dev/shm" && st.Type != unix.TMPFS_MAGIC {
			unix.Close(fd)
			continue // not a tmpfs on this machine
		}
		if got := Local(fd); got != c.want {
			t.Errorf("Local(%s) = %v, want %v", c.path, got, c.want)
		}
		unix.Close(fd)
	}
}
