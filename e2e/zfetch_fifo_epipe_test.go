package e2e

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestZfetchFIFOReaderGone: the FIFO's reader goes away after a few bytes:
// zfetch stops with a local error (exit 6), whatever the receive mode,
// rather than taking the broken pipe for the network's fault and retrying.
func TestZfetchFIFOReaderGone(t *testing.T) {
	d, _ := serveOneFile(t, 32<<20)
	fifo := filepath.Join(t.TempDir(), "fifo")
	makeFIFO(t, fifo)
	for _, url := range []string{d.URL("/f.bin"), d.httpURL("/f.bin")} {
		for _, recv := range []string{"splice", "copy", "mmap"} {
			done := make(chan struct{})
			go func() {
				defer close(done)
				f, err := os.Open(fifo)
				if err != nil {
					return
				}
				b := make([]byte, 10)
				f.Read(b)
				f.Close()
			}()
			r := Zfetch(t, "-q", "--recv", recv, "--retry-for", "20s", "-o", fifo, url)
			<-done
			t.Logf("%s --recv %s: exit %d %q", url, recv, r.Code, r.Stderr)
			if r.Code != 6 {
				t.Errorf("%s --recv %s: reader gone: exit %d %q, want 6", url, recv, r.Code, r.Stderr)
			}
		}
	}
}

// TestZfetchIntoDeviceRecvModes: every receive mode, and --limit-rate,
// into a character device made with /dev/null's numbers: the whole file
// goes in (exit 0) and the device stays.
func TestZfetchIntoDeviceRecvModes(t *testing.T) {
	d, _ := serveOneFile(t, 2<<20)
	dir := t.TempDir()
	null := filepath.Join(dir, "null")
	if err := syscall.Mknod(null, syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Skipf("mknod of a character device (needs root): %v", err)
	}
	for _, url := range []string{d.URL("/f.bin"), d.httpURL("/f.bin")} {
		for _, args := range [][]string{{"--recv", "splice"}, {"--recv", "copy"}, {"--recv", "mmap"}, {"--limit-rate", "20M"}} {
			r := Zfetch(t, append(append([]string{"--json"}, args...), "-o", null, url)...)
			if r.Code != 0 {
				t.Errorf("%s %v -o NULLDEV: exit %d %q", url, args, r.Code, r.Stderr)
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(null, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 1<<8|3 {
				t.Fatalf("%s %v: the device was replaced: mode %o %v", url, args, st.Mode, err)
			}
		}
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Errorf("%d names beside the device, want none", len(es)-1)
	}
}
