package zfetch

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestLinkedFile: -o naming a symlink to a regular file puts the download
// in place of that file, and a dangling one at the missing name it ends
// in, never in place of the link; a link whose file has no path (a
// deleted file, through /proc/self/fd) or that loops is refused.
func TestLinkedFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	chain := filepath.Join(dir, "chain")
	if err := os.Symlink("file", link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(link, chain); err != nil {
		t.Fatal(err)
	}
	gone, err := os.Create(filepath.Join(dir, "gone"))
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	if err := os.Remove(gone.Name()); err != nil {
		t.Fatal(err)
	}
	deleted := filepath.Join(dir, "deleted")
	if err := os.Symlink(fmt.Sprintf("/proc/self/fd/%d", gone.Fd()), deleted); err != nil {
		t.Fatal(err)
	}
	// Dangling: to a missing name, directly or through another link; to
	// a closed descriptor of /proc/self/fd.
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink("new", dangling); err != nil {
		t.Fatal(err)
	}
	dchain := filepath.Join(dir, "dchain")
	if err := os.Symlink(dangling, dchain); err != nil {
		t.Fatal(err)
	}
	closed := filepath.Join(dir, "closed")
	if err := os.Symlink("/proc/self/fd/999999", closed); err != nil {
		t.Fatal(err)
	}
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		usage      bool
	}{
		{file, "", false},
		{link, file, false},
		{chain, file, false},
		{deleted, "", true},
		{dangling, filepath.Join(dir, "new"), false},
		{dchain, filepath.Join(dir, "new"), false},
		{closed, "/proc/self/fd/999999", false},
		{loop, "", true},
		{filepath.Join(dir, "none"), "", false},
	} {
		fi, err := os.Stat(tc.name)
		if err != nil {
			fi = nil
		}
		got, err := linkedFile(tc.name, fi)
		if got != tc.want || (err != nil) != tc.usage || (err != nil && ExitCode(err) != 2) {
			t.Errorf("linkedFile(%s) = %q, %v; want %q, usage error %v", tc.name, got, err, tc.want, tc.usage)
		}
	}
}
