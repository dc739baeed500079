package e2e

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func (z *zfsContainer) journal(t *testing.T) {
	j := z.Must("journalctl", "-u", unitService, "--no-pager", "-o", "cat")
	for _, w := range []string{
		`msg="zfs-serve starting" proc=supervisor version=` + z.pkg.version,
		`msg="listening (socket-activated)" proc=supervisor name=zfs addr=127.0.0.1:7070`,
		`msg="control socket (socket-activated)" proc=supervisor path=/run/zfs-serve/control.sock`,
		`msg="worker started" proc=supervisor`,
		`msg="generation 1 serving with`,
		`msg="reloading: starting a new generation"`,
		`msg="draining: no new connections; waiting for transfers in flight" proc=supervisor why=SIGTERM in_flight=1`,
		`msg="zfs-serve exited cleanly: every transfer finished"`,
	} {
		if !strings.Contains(j, w) {
			t.Errorf("journalctl -u %s lacks %s", unitService, w)
		}
	}
	// The unit's seccomp filter lets the workers ask cachestat(2) (the
	// kernel has it: the host's, 6.5 or later, or the test is moot).
	if strings.Contains(j, "cachestat(2) is forbidden") {
		t.Errorf("journalctl -u %s: the unit's SystemCallFilter refuses cachestat(2)", unitService)
	}
	// ... and the supervisor sched_setattr(2) (supervisor_sched_batch).
	if strings.Contains(j, "could not set the supervisor's scheduling policy") {
		t.Errorf("journalctl -u %s: the unit's SystemCallFilter refuses sched_setattr(2)", unitService)
	}
	// Each line carries its level as the journal's PRIORITY, so that
	// `journalctl -p warning` (and alerting on it) finds the refused
	// reload of the reload step, and only lines at warning or above.
	warn := z.Must("journalctl", "-u", unitService, "--no-pager", "-o", "cat", "-p", "warning")
	if !strings.Contains(warn, `msg="reload failed; still serving the previous configuration"`) {
		t.Errorf("journalctl -u %s -p warning lacks the failed reload (every line at PRIORITY=6?):\n%s", unitService, tail(warn, 20))
	}
	if strings.Contains(warn, `msg="worker started"`) {
		t.Errorf("journalctl -u %s -p warning has info lines:\n%s", unitService, tail(warn, 20))
	}
	if dbg := z.Must("journalctl", "-u", unitService, "--no-pager", "-o", "cat", "-p", "info..info"); !strings.Contains(dbg, `msg="worker started"`) {
		t.Errorf("journalctl -u %s -p info..info lacks the info lines:\n%s", unitService, tail(dbg, 20))
	}
	if t.Failed() {
		t.Logf("journal:\n%s", tail(j, 60))
	}
}

// watchdog: with WatchdogSec= from a drop-in the supervisor's loop pings
// systemd, a reload that cannot read its configuration included
// (hungReload); frozen with SIGSTOP, it is restarted.
func (z *zfsContainer) watchdog(t *testing.T) {
	dropin := "/etc/systemd/system/" + unitService + ".d"
	if err := os.MkdirAll(z.Path(dropin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(z.Path(dropin+"/watchdog.conf"), []byte("[Service]\nWatchdogSec=2s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.RemoveAll(z.Path(dropin))
		z.Exec(time.Minute, "systemctl", "daemon-reload")
	}()
	z.Must("systemctl", "daemon-reload")
	z.Must("systemctl", "restart", unitService)
	p := z.Show(unitService, "MainPID", "NRestarts", "WatchdogUSec", "WatchdogTimestampMonotonic")
	if p["WatchdogUSec"] != "2s" {
		t.Fatalf("WatchdogUSec=%s, want 2s from the drop-in", p["WatchdogUSec"])
	}
	// The pings arrive: the watchdog timestamp moves, twice.
	ts := p["WatchdogTimestampMonotonic"]
	for range 2 {
		ts = z.WaitShow(5*time.Second, "a WATCHDOG=1", unitService, func(q map[string]string) bool {
			return q["WatchdogTimestampMonotonic"] != ts
		}, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
	}
	restarts, _ := strconv.Atoi(p["NRestarts"])
	ts = z.hungReload(t, ts, p["MainPID"], restarts)
	z.Must("kill", "-STOP", p["MainPID"])
	q := z.WaitShow(30*time.Second, "a restart by the watchdog", unitService, func(q map[string]string) bool {
		n, _ := strconv.Atoi(q["NRestarts"])
		return q["ActiveState"] == "active" && q["MainPID"] != "0" && q["MainPID"] != p["MainPID"] && n > restarts
	}, "MainPID", "NRestarts", "ActiveState")
	t.Logf("watchdog: MainPID %s -> %s, NRestarts %d -> %s", p["MainPID"], q["MainPID"], restarts, q["NRestarts"])
	if j := z.Must("journalctl", "-u", unitService, "--no-pager", "-o", "cat"); !strings.Contains(j, "Watchdog timeout") {
		t.Errorf("the journal does not say the watchdog fired")
	}
	z.fetch(t, "/small.bin", z.smallSHA)
}
