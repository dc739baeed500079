package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// stopInFlight: a client paused mid-file (SIGSTOP) while systemctl stop
// runs; the service drains, the download completes byte-exact once the
// client goes on, then the service stops, and the next connection starts
// it again.
func (z *zfsContainer) stopInFlight(t *testing.T) {
	oldPID := z.Show(unitService, "MainPID")["MainPID"]
	// One connection (-x 1): the 48 MiB response cannot fit in the socket
	// buffers, so while the client is stopped the server's send is too.
	cl := z.NetCommand(z.pkg.zfetch, "-q", "-x", "1", "-o", "-", "zfs://127.0.0.1:7070/big.bin")
	stdout, err := cl.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var clErr strings.Builder
	cl.Stderr = &clErr
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if stopped {
			cl.Process.Signal(syscall.SIGCONT)
		}
		cl.Process.Kill()
		cl.Wait()
	}()
	h := sha256.New()
	if _, err := io.CopyN(h, stdout, 1<<20); err != nil {
		t.Fatalf("first MiB: %v (%s)", err, clErr.String())
	}
	if err := cl.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped = true
	// Mid-file: the server has a transfer of big.bin in flight, not done.
	var tr ctl.Transfer
	if !waitFor(10*time.Second, func() bool {
		for _, x := range z.status(t).Transfers {
			if x.Path == "/big.bin" && x.Sent < x.Total {
				tr = x
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no transfer of /big.bin in flight")
	}

	stop := z.Command("systemctl", "stop", unitService)
	var stopOut strings.Builder
	stop.Stdout, stop.Stderr = &stopOut, &stopOut
	stop.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stop.Start(); err != nil {
		t.Fatal(err)
	}
	stopDone := make(chan struct{})
	var stopErr error
	go func() { stopErr = stop.Wait(); close(stopDone) }()
	defer func() {
		select {
		case <-stopDone:
		default:
			syscall.Kill(-stop.Process.Pid, syscall.SIGKILL)
			<-stopDone
		}
	}()
	defer func() {
		if t.Failed() {
			t.Logf("journal:\n%s", tail(z.Exec(time.Minute, "journalctl", "-u", unitService, "--no-pager", "-o", "short-precise").Stdout, 40))
		}
	}()
	z.WaitShow(10*time.Second, "deactivating", unitService, func(p map[string]string) bool { return p["ActiveState"] == "deactivating" }, "ActiveState")
	select {
	case <-stopDone:
		t.Fatalf("systemctl stop returned (%v) while a download was in flight (%d of %d bytes sent)", stopErr, tr.Sent, tr.Total)
	default:
	}
	st := z.status(t)
	paused := false
	for _, x := range st.Transfers {
		paused = paused || (x.Path == "/big.bin" && x.Sent < x.Total)
	}
	if st.State != ctl.StateDraining || !paused {
		t.Errorf("while stopping: state %s, transfers %+v; want draining with big.bin part sent", st.State, st.Transfers)
	}

	if err := cl.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	n, err := io.Copy(h, stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Wait(); err != nil {
		t.Fatalf("zfetch: %v (%s)", err, clErr.String())
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != z.bigSHA || n+1<<20 != bigSize {
		t.Fatalf("download across the stop: %d bytes, sha256 %s; want %d bytes, %s", n+1<<20, got, bigSize, z.bigSHA)
	}
	select {
	case <-stopDone:
		if stopErr != nil {
			t.Fatalf("systemctl stop: %v\n%s", stopErr, stopOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("systemctl stop still running 30s after the download ended")
	}
	// zfetch checks the file's identity once more after its last byte
	// (docs/ZFETCH.md), on a new connection: when that comes after the
	// old supervisor exited, socket activation starts a new one, as for
	// any client. Either way the stopped one must have ended cleanly.
	p := z.Show(unitService, "ActiveState", "Result", "ExecMainStatus", "MainPID")
	switch {
	case p["ActiveState"] == "inactive":
		if p["Result"] != "success" || p["ExecMainStatus"] != "0" {
			t.Errorf("after stop: %v, want inactive, success, exit status 0", p)
		}
	case p["MainPID"] == oldPID || p["MainPID"] == "0":
		t.Errorf("after stop: %v, want inactive (or re-activated by a client: a new MainPID, not %s)", p, oldPID)
	default:
		j := z.Exec(time.Minute, "journalctl", "-u", unitService, "--no-pager", "-o", "cat").Stdout
		if !strings.Contains(j, "zfs-serve exited cleanly: every transfer finished") || !strings.Contains(j, "Deactivated successfully") {
			t.Errorf("re-activated after the stop, but the stopped supervisor did not end cleanly:\n%s", tail(j, 20))
		}
	}
	if s := z.Show(unitSocket, "ActiveState")["ActiveState"]; s != "active" {
		t.Errorf("%s is %q after the service stopped, want active (listening)", unitSocket, s)
	}
	// The next connection re-activates it.
	z.fetch(t, "/small.bin", z.smallSHA)
	if pid := z.Show(unitService, "MainPID")["MainPID"]; pid == "0" || pid == oldPID {
		t.Errorf("MainPID %s after re-activation (was %s), want a new supervisor", pid, oldPID)
	}
}
