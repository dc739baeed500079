package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// activation is one systemd-socket-activate setup: the file listener on
// a TCP port and the control socket, in the given fd order.
type activation struct {
	port        int
	control     string
	controlName string // FileDescriptorName of the unix socket ("control" or another)
	tcpFirst    bool
}

// startActivated runs zfs-serve under systemd-socket-activate, which binds
// the sockets, waits for the first connection on any of them, then execs
// zfs-serve with LISTEN_FDS and LISTEN_FDNAMES.
func startActivated(t *testing.T, dir string, a activation, control string, args ...string) *sdProc {
	t.Helper()
	tcp, unix := fmt.Sprintf("127.0.0.1:%d", a.port), a.control
	argv := []string{"systemd-socket-activate"}
	if a.tcpFirst {
		argv = append(argv, "-l", tcp, "-l", unix, "--fdname="+FDNames("zfs", a.controlName))
	} else {
		argv = append(argv, "-l", unix, "-l", tcp, "--fdname="+FDNames(a.controlName, "zfs"))
	}
	argv = append(argv, zfsServe)
	argv = append(argv, args...)
	p := startProc(t, dir, control, argv, nil)
	// systemd-socket-activate says "Listening on ADDR as FD." for each
	// socket once bound; wait for both, or for it to fail.
	if !waitFor(10*time.Second, func() bool {
		select {
		case <-p.exited:
			return true
		default:
		}
		return strings.Count(p.log(), "Listening on") == 2
	}) {
		t.Fatalf("systemd-socket-activate did not bind its sockets:\n%s", p.log())
	}
	select {
	case <-p.exited:
		t.Fatalf("systemd-socket-activate exited:\n%s", p.log())
	default:
	}
	return p
}

// TestSocketActivationByName hands zfs-serve its two sockets in both
// orders: it must pick them by name, serve on the "zfs" one, answer on
// the "control" one, bind neither of the configured addresses, and pass
// neither the sockets nor LISTEN_* on to its workers.
func TestSocketActivationByName(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	for _, tc := range []struct {
		name     string
		tcpFirst bool
	}{{"zfs fd first", true}, {"control fd first", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortTempDir(t)
			root := filepath.Join(dir, "root")
			want := WriteRandom(t, filepath.Join(root, "f.bin"), 3<<20+17)
			a := activation{port: freePort(t), control: filepath.Join(dir, "ctl.sock"), controlName: "control", tcpFirst: tc.tcpFirst}
			unusedPort, unusedCtl := freePort(t), filepath.Join(dir, "configured.sock")
			p := startActivated(t, dir, a, a.control, "--config", "/dev/null", "--root", root, "--workers", "2",
				"--listen", fmt.Sprintf("127.0.0.1:%d", unusedPort), "--control", unusedCtl)

			// The fds really are in the order this case wants.
			tcpFD, ctlFD := "3", "4"
			if !tc.tcpFirst {
				tcpFD, ctlFD = "4", "3"
			}
			lg := p.log()
			if !strings.Contains(lg, fmt.Sprintf("Listening on 127.0.0.1:%d as %s.", a.port, tcpFD)) ||
				!strings.Contains(lg, fmt.Sprintf("Listening on %s as %s.", a.control, ctlFD)) {
				t.Fatalf("systemd-socket-activate did not pass the fds in the intended order:\n%s", lg)
			}

			// The first connection, on the control socket, starts zfs-serve.
			st := p.waitStatus(15*time.Second, "serving", func(st *ctl.Status) bool { return st.State == ctl.StateServing })
			wantAddr := fmt.Sprintf("127.0.0.1:%d", a.port)
			if len(st.Listeners) != 1 || st.Listeners[0] != (ctl.Listener{Name: "zfs", Addr: wantAddr, Activated: true}) {
				t.Errorf("listeners = %+v, want only the activated zfs socket %s", st.Listeners, wantAddr)
			}
			if st.Control != a.control {
				t.Errorf("control = %q, want the activated %q", st.Control, a.control)
			}
			if _, err := os.Stat(unusedCtl); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the configured control socket %s was created too (stat: %v)", unusedCtl, err)
			}
			if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", unusedPort), time.Second); err == nil {
				c.Close()
				t.Errorf("the configured --listen 127.0.0.1:%d is bound too", unusedPort)
			}

			out := filepath.Join(dir, "out.bin")
			if r := Zfetch(t, "-q", "-o", out, "zfs://"+wantAddr+"/f.bin"); r.Code != 0 {
				t.Fatalf("zfetch: exit %d: %s", r.Code, r.Stderr)
			}
			if got := FileSHA256(t, out); got != want {
				t.Errorf("downloaded sha256 %s, want %s", got, want)
			}

			checkWorkerEnv(t, st)
			for _, pid := range WorkerPIDs(st) {
				if n := listeningSockets(t, pid); n != 0 {
					t.Errorf("worker %d holds %d listening sockets", pid, n)
				}
			}
			lg = p.log()
			for _, w := range []string{
				`msg="listening (socket-activated)" proc=supervisor name=zfs addr=` + wantAddr,
				`msg="control socket (socket-activated)" proc=supervisor path=` + a.control,
			} {
				if !strings.Contains(lg, w) {
					t.Errorf("log lacks %s", w)
				}
			}
			if strings.Contains(lg, "level=ERROR") {
				t.Errorf("errors in the log:\n%s", lg)
			}

			p.cmd.Process.Signal(syscall.SIGTERM)
			if code := p.waitExit(30 * time.Second); code != 0 {
				t.Errorf("exit status %d after SIGTERM, want 0", code)
			}
		})
	}
}

// TestSocketActivationUnknownName passes a socket with a name zfs-serve
// does not know: an error in the log, the socket closed, and the rest
// works (the control socket is then the configured one).
func TestSocketActivationUnknownName(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("systemd-socket-activate"); err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	dir := shortTempDir(t)
	root := filepath.Join(dir, "root")
	want := WriteRandom(t, filepath.Join(root, "f.bin"), 100<<10)
	own := filepath.Join(dir, "own.sock")
	a := activation{port: freePort(t), control: filepath.Join(dir, "bogus.sock"), controlName: "bogus", tcpFirst: true}
	p := startActivated(t, dir, a, own, "--config", "/dev/null", "--root", root, "--workers", "1", "--control", own)

	// The first connection, a download, starts zfs-serve.
	addr := fmt.Sprintf("127.0.0.1:%d", a.port)
	out := filepath.Join(dir, "out.bin")
	if r := Zfetch(t, "-q", "-o", out, "zfs://"+addr+"/f.bin"); r.Code != 0 {
		t.Fatalf("zfetch: exit %d: %s", r.Code, r.Stderr)
	}
	if got := FileSHA256(t, out); got != want {
		t.Errorf("downloaded sha256 %s, want %s", got, want)
	}
	st := p.waitStatus(10*time.Second, "serving", func(st *ctl.Status) bool { return st.State == ctl.StateServing })
	if st.Control != own || len(st.Listeners) != 1 || !st.Listeners[0].Activated {
		t.Errorf("control %q listeners %+v; want the configured control socket and the activated zfs listener", st.Control, st.Listeners)
	}
	lg := p.log()
	if !strings.Contains(lg, "level=ERROR") || !strings.Contains(lg, "name=bogus") {
		t.Errorf("no error naming the unknown socket in the log:\n%s", lg)
	}
	// Closed, not kept: nobody listens on it any more.
	if !waitFor(5*time.Second, func() bool {
		c, err := net.Dial("unix", a.control)
		if err == nil {
			c.Close()
		}
		return errors.Is(err, syscall.ECONNREFUSED)
	}) {
		t.Errorf("the socket named bogus (%s) is still open", a.control)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.waitExit(30 * time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
}
