package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestZfetchPartIsSpecial: FILE.part being a FIFO or a character device
// (made with /dev/null's numbers) is refused by its kind, with or without
// -c, and neither it nor anything is renamed to FILE.
func TestZfetchPartIsSpecial(t *testing.T) {
	d, _ := serveOneFile(t, 1<<20)
	for _, kind := range []uint32{syscall.S_IFIFO, syscall.S_IFCHR} {
		for _, args := range [][]string{{}, {"-c"}, {"-x", "4"}} {
			dir := t.TempDir()
			dst := filepath.Join(dir, "f.bin")
			if err := syscall.Mknod(dst+".part", kind|0o666, 1<<8|3); err != nil {
				t.Skipf("mknod: %v", err)
			}
			r := Zfetch(t, append(append([]string{"-q"}, args...), "-o", dst, d.URL("/f.bin"))...)
			if r.Code != 6 || !strings.Contains(r.Stderr, "not a regular file") {
				t.Errorf("kind %o %v: exit %d %q, want 6", kind, args, r.Code, r.Stderr)
			}
			if _, err := os.Lstat(dst); err == nil {
				t.Errorf("kind %o %v: %s exists", kind, args, dst)
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(dst+".part", &st); err != nil || st.Mode&syscall.S_IFMT != kind {
				t.Errorf("kind %o %v: the .part was replaced: %o %v", kind, args, st.Mode, err)
			}
		}
	}
}
