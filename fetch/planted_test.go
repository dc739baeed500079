package fetch

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOpenPartHardLink: a .part with a second name (a hard link planted
// in a shared folder, to a file of the user running zfetch) is refused:
// writing it would write that other file, as a symbolic link would.
func TestOpenPartHardLink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "precious")
	if err := os.WriteFile(victim, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	part := partName(filepath.Join(dir, "f"))
	if err := os.Link(victim, part); err != nil {
		t.Skipf("link: %v", err)
	}
	p, err := openPart(part)
	if err == nil {
		p.release()
	}
	var le *LocalError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "hard link") {
		t.Fatalf("openPart(a hard link) = %v, want a LocalError saying it is a hard link", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Fatalf("the linked file was written: %q", b)
	}
}

// TestOpenPartOtherOwner: a .part another user made (world-writable, so
// zfetch could write it) is refused: renamed into place, the download
// would stay that user's to rewrite after zfetch checked it.
func TestOpenPartOtherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	part := partName(filepath.Join(t.TempDir(), "f"))
	if err := os.WriteFile(part, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(part, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	if err := os.Chown(part, 65534, 65534); err != nil {
		t.Skipf("chown: %v", err)
	}
	p, err := openPart(part)
	if err == nil {
		p.release()
	}
	var le *LocalError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "another user") {
		t.Fatalf("openPart(another user's file) = %v, want a LocalError saying whose it is", err)
	}
}

// TestReadStateNotRegular: a FIFO at the state's name (or a link to one)
// makes the state unusable at once; reading it used to wait for a writer
// forever, and a link to an endless file would have been read whole.
func TestReadStateNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	// Let a read left blocked by a failure return, so the test ends.
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	link := filepath.Join(dir, "link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, link} {
		done := make(chan error, 1)
		go func() {
			_, err := readState(path)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("readState(%s) = nil error, want one", path)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("readState(%s) still waiting after 5s", path)
		}
	}
}

// TestInstallMTimeNotThroughLink: setting the .part's mtime never sets
// that of a file a symbolic link at the .part's name leads to.
func TestInstallMTimeNotThroughLink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "precious")
	if err := os.WriteFile(victim, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1_000_000_000, 0)
	if err := os.Chtimes(victim, old, old); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "f")
	p, err := openPart(partName(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer p.release()
	// Swapped after the open (a folder where others may rename).
	if err := os.Rename(p.path, p.path+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, p.path); err != nil {
		t.Fatal(err)
	}
	p.install(dst, time.Unix(1_700_000_000, 0).UnixNano())
	fi, err := os.Stat(victim)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(old) {
		t.Fatalf("the link's target got mtime %v", fi.ModTime())
	}
}

// TestWriteStateTmpNotRemovable: what is at the state's temporary name and
// cannot be removed (here a directory with a file in it; another user's
// link in a sticky folder is the same) is named as the reason the state
// cannot be written, not "file exists".
func TestWriteStateTmpNotRemovable(t *testing.T) {
	state := stateName(partName(filepath.Join(t.TempDir(), "f")))
	tmp := stateTmpName(state)
	if err := os.MkdirAll(filepath.Join(tmp, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := writeState(state, &State{Size: 1, Pending: [][2]int64{}})
	if err == nil || !strings.Contains(err.Error(), "cannot remove") {
		t.Fatalf("writeState = %v, want it to say what is there cannot be removed", err)
	}
}
