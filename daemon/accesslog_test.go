package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
)

// TestOpenAccessLog: access_log_path opens as a regular file, created if
// missing, appending; anything else fails with an error that says why,
// at once (a FIFO with or without a reader does not block).
func TestOpenAccessLog(t *testing.T) {
	dir := t.TempDir()
	open := func(path string) (*os.File, error) {
		type opened struct {
			f   *os.File
			err error
		}
		done := make(chan opened, 1)
		go func() {
			f, err := openAccessLog(&config.Config{AccessLog: true, AccessLogPath: path})
			done <- opened{f, err}
		}()
		select {
		case o := <-done:
			return o.f, o.err
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: openAccessLog blocks", path)
			return nil, nil
		}
	}

	file := filepath.Join(dir, "access.log")
	f, err := open(file)
	if err != nil || f == nil {
		t.Fatalf("%s: %v", file, err)
	}
	f.WriteString("one\n")
	f.Close()
	f, err = open(file) // again: appends
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("two\n")
	f.Close()
	if b, _ := os.ReadFile(file); string(b) != "one\ntwo\n" {
		t.Errorf("%s holds %q, want both lines", file, b)
	}
	if f, err := openAccessLog(&config.Config{AccessLog: false, AccessLogPath: filepath.Join(dir, "missing/x")}); err != nil || f != nil {
		t.Errorf("access_log = false: %v, %v", err, f)
	}

	os.Mkdir(filepath.Join(dir, "folder"), 0o755)
	os.Symlink(file, filepath.Join(dir, "link"))
	os.Symlink("loop", filepath.Join(dir, "loop"))
	syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644)
	for _, tc := range []struct{ name, want string }{
		{"missing/access.log", "no such file or directory"},
		{"folder", "is a directory"},
		{"link", "is a symbolic link"},
		{"loop/access.log", "too many levels of symbolic links"},
		{"fifo", "is a FIFO"},
	} {
		path := filepath.Join(dir, tc.name)
		if _, err := open(path); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want an error naming it and saying %q", tc.name, err, tc.want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "loop", "access.log")); err == nil {
		t.Error("created through the loop")
	}

	// A FIFO with a reader opens (without waiting), and is refused.
	r, err := os.OpenFile(filepath.Join(dir, "fifo"), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := open(filepath.Join(dir, "fifo")); err == nil || !strings.Contains(err.Error(), "is a FIFO, not a regular file") {
		t.Errorf("a FIFO with a reader: %v", err)
	}
}
