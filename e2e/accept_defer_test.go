package e2e

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// activatedDaemon starts zfs-serve with conf on the listening socket f,
// passed as systemd passes it (fd 3, LISTEN_FDNAMES=zfs, LISTEN_PID the
// daemon's own: the shell execs it).
func activatedDaemon(t *testing.T, root string, f *os.File, conf string) *Daemon {
	t.Helper()
	return StartDaemon(t, DaemonOpts{Root: root, Config: conf, ExtraFiles: []*os.File{f},
		Env:    []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=zfs"},
		Prefix: []string{"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`}})
}

// deferAccept reads TCP_DEFER_ACCEPT of the socket f (in seconds, as the
// kernel rounds it: 1, 3, 7, ...).
func deferAccept(t *testing.T, f *os.File) int {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	v, gerr := 0, error(nil)
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func setDeferAccept(t *testing.T, f *os.File, secs int) {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
}

// TestAcceptModeDeferAcceptCleared: TCP_DEFER_ACCEPT, which the accept
// mode sets on the sockets it passes its workers, does not outlive the
// mode on a socket systemd keeps across restarts: a zfs-serve in the
// handoff mode clears the value the accept mode sets (it used to stay,
// and the handoff mode's behaviour depended on what ran before). A
// longer one (DeferAcceptSec= in the .socket unit) is the operator's,
// and both modes keep it.
func TestAcceptModeDeferAcceptCleared(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "f.bin"), 1<<20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	serve := func(conf string, want int, what string) {
		t.Helper()
		d := activatedDaemon(t, root, f, conf)
		if r := Zfetch(t, "-q", "-o", "-", d.URL("/f.bin")); r.Code != 0 || sha(r.Stdout) != sum {
			t.Fatalf("%s: zfetch: %d %s", what, r.Code, r.Stderr)
		}
		if got := deferAccept(t, f); got != want {
			t.Errorf("%s: TCP_DEFER_ACCEPT %d, want %d", what, got, want)
		}
		if r := d.Zctl("drain"); r.Code != 0 {
			t.Fatalf("%s: zctl drain: %d %s", what, r.Code, r.Stderr)
		}
		if code := d.WaitExit(30 * time.Second); code != 0 {
			t.Fatalf("%s: exit status %d\n%s", what, code, tail(d.Log(), 20))
		}
	}
	serve(acceptConf, 1, "accept mode")
	serve("dispatch = \"handoff\"\n", 0, "handoff mode after the accept mode")
	setDeferAccept(t, f, 5) // the kernel rounds it to 7
	serve(acceptConf, 7, "accept mode, DeferAcceptSec=5")
	serve("dispatch = \"handoff\"\n", 7, "handoff mode, DeferAcceptSec=5")
}
