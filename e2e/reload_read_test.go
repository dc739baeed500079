package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// TestReloadReadWaits: a reload whose configuration cannot be read yet
// (its file a FIFO no one writes, as a file system that does not answer
// would leave it) does not stop the supervisor: zctl status answers,
// saying it is reloading, and downloads are served by the running
// generation. When the file can be read, the reload goes on with it.
func TestReloadReadWaits(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 1<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Config: "workers = 2\n"})
	if err := os.Remove(d.Config); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(d.Config, 0o644); err != nil {
		t.Fatal(err)
	}
	reload := make(chan Result, 1)
	go func() { reload <- run(t, 60*time.Second, zctlBin, "-s", d.Control, "reload") }()

	type answer struct {
		st  *ctl.Status
		err error
	}
	status := make(chan answer, 1)
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := d.Status()
			if err != nil || st.State == ctl.StateReloading || time.Now().After(deadline) {
				status <- answer{st, err}
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	select {
	case a := <-status:
		if a.err != nil || a.st.State != ctl.StateReloading || a.st.Generation != 1 {
			t.Fatalf("status while the reload reads: %+v, %v", a.st, a.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("zctl status does not answer while a reload waits to read its configuration:\n%s", tail(d.Log(), 10))
	}
	if r := Zfetch(t, "-q", "-o", "-", d.URL("/f.bin")); r.Code != 0 || sha(r.Stdout) != sum {
		t.Fatalf("download while the reload reads: exit %d %s", r.Code, r.Stderr)
	}
	select {
	case r := <-reload:
		t.Fatalf("the reload ended before its configuration could be read: %d %q %q", r.Code, r.Stdout, r.Stderr)
	default:
	}

	f, err := os.OpenFile(d.Config, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "root = %q\nlisten = [\"127.0.0.1:0\"]\ncontrol = %q\nworkers = 3\n", root, d.Control)
	f.Close()
	r := <-reload
	if r.Code != 0 || !strings.Contains(r.Stdout, "generation 2 serving with 3 workers") {
		t.Fatalf("reload: exit %d: %q %q", r.Code, r.Stdout, r.Stderr)
	}
}
