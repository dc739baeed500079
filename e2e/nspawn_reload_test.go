package e2e

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// hungReload (part of the watchdog step, WatchdogSec=2s): a reload whose
// configuration file cannot be read (a FIFO no one writes, as a file
// system that does not answer would leave it) does not stop the
// supervisor's pings, so systemd does not restart the service; once the
// file can be read the reload completes. ts is the last watchdog
// timestamp seen; hungReload returns the latest.
func (z *zfsContainer) hungReload(t *testing.T, ts, pid string, restarts int) string {
	conf, err := os.ReadFile(z.Path(confPath))
	if err != nil {
		t.Fatal(err)
	}
	restore := func() {
		os.Remove(z.Path(confPath))
		if err := os.WriteFile(z.Path(confPath), conf, 0o644); err != nil {
			t.Error(err)
		}
	}
	defer restore()
	before := z.status(t).Generation
	if err := os.Remove(z.Path(confPath)); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(z.Path(confPath), 0o644); err != nil {
		t.Fatal(err)
	}
	z.Must("systemctl", "reload", "--no-block", unitService)
	if st := z.waitStatus(t, 10*time.Second, func(st *ctl.Status) bool { return st.State == ctl.StateReloading }); st.Generation != before {
		t.Fatalf("reloading at generation %d, want %d", st.Generation, before)
	}
	// Four pings (2.7 s at WatchdogSec/3) while the read waits: longer
	// than WatchdogSec, so a loop stuck in the read would have been
	// restarted by now.
	for range 4 {
		ts = z.WaitShow(5*time.Second, "a WATCHDOG=1 while a reload waits to read", unitService, func(q map[string]string) bool {
			return q["WatchdogTimestampMonotonic"] != ts
		}, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
	}
	q := z.Show(unitService, "MainPID", "NRestarts", "ActiveState")
	if n, _ := strconv.Atoi(q["NRestarts"]); q["MainPID"] != pid || n != restarts {
		t.Fatalf("while a reload waits to read: MainPID %s (was %s), NRestarts %s (was %d)", q["MainPID"], pid, q["NRestarts"], restarts)
	}
	if st := z.status(t); st.State != ctl.StateReloading {
		t.Fatalf("state %s while the reload waits to read, want reloading", st.State)
	}
	f, err := os.OpenFile(z.Path(confPath), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(conf)
	f.Close()
	if st := z.waitStatus(t, 30*time.Second, func(st *ctl.Status) bool { return st.State == ctl.StateServing && st.Generation == before+1 }); !allReady(st, st.Generation, len(currentWorkers(st))) {
		t.Fatalf("after the read: %+v", st)
	}
	return ts
}

// waitStatus polls z.status until cond holds, for up to timeout.
func (z *zfsContainer) waitStatus(t *testing.T, timeout time.Duration, cond func(*ctl.Status) bool) *ctl.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := z.status(t)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after %v: %+v", timeout, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
