package e2e

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// drainingWithTransfer starts a daemon on addr (and metrics on maddr, if
// not ""), puts a transfer in flight that holds until the test ends, and
// drains it: a draining instance to take over from.
func drainingWithTransfer(t *testing.T, root, addr, maddr string) *Daemon {
	t.Helper()
	var args []string
	if maddr != "" {
		args = []string{"--metrics", maddr}
	}
	d := StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Args: args})
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	startSlowGet(t, d.Addr, "/big.bin", gate)
	if r := d.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %+v", r)
	}
	d.WaitState(ctl.StateDraining, 10*time.Second)
	return d
}

// TestTakeoverFailedStart: a new instance that takes the control socket
// over from a draining one but then fails to start (here its metrics
// address is held by something else) leaves the draining one its control
// socket and its port: zctl still reaches it, and new connections are
// answered "draining".
func TestTakeoverFailedStart(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	addr := freeAddr(t)
	d1 := drainingWithTransfer(t, root, addr, "")
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	d2 := StartDaemon(t, DaemonOpts{Root: root, Listen: addr, Control: d1.Control, NoWait: true,
		Args: []string{"--metrics", held.Addr().String()}})
	if code := d2.WaitExit(30 * time.Second); code == 0 {
		t.Fatalf("the new instance started with its metrics address held by another process:\n%s", d2.Log())
	}
	st, err := d1.Status()
	if err != nil {
		t.Fatalf("zctl cannot reach the draining instance after a failed takeover: %v", err)
	}
	if st.PID != d1.Cmd.Process.Pid || st.State != ctl.StateDraining {
		t.Errorf("the control socket leads to pid %d (%s), want the draining instance %d", st.PID, st.State, d1.Cmd.Process.Pid)
	}
	if msg := drainingAnswers(addr); msg != "" {
		t.Errorf("after a failed takeover: %s", msg)
	}
}
