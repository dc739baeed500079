package e2e

import (
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// TestDrainUnderLoad: 20 slow downloads in flight; a drain (by zctl, SIGUSR1
// or SIGTERM) answers new connections "draining" at once, lets every
// download finish byte-exact, and the supervisor exits 0.
func TestDrainUnderLoad(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	for _, trigger := range []string{"zctl", "SIGUSR1", "SIGTERM"} {
		t.Run(trigger, func(t *testing.T) {
			d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
			gate := make(chan struct{})
			var gets []*slowGet
			for range 20 {
				gets = append(gets, startSlowGet(t, d.Addr, "/big.bin", gate))
			}
			d.WaitStatus(5*time.Second, "20 transfers in flight", func(st *ctlStatus) bool { return len(st.Transfers) == 20 })

			var drainOut *exec.Cmd
			var out strings.Builder
			switch trigger {
			case "zctl":
				// --wait shows the remaining transfers until they are done.
				drainOut = exec.Command(zctlBin, "-s", d.Control, "drain", "--wait")
				drainOut.Stdout, drainOut.Stderr = &out, &out
				if err := drainOut.Start(); err != nil {
					t.Fatal(err)
				}
			case "SIGUSR1":
				d.Cmd.Process.Signal(syscall.SIGUSR1)
			case "SIGTERM":
				d.Cmd.Process.Signal(syscall.SIGTERM)
			}
			st := d.WaitState(ctl.StateDraining, 5*time.Second)
			if len(st.Transfers) != 20 || st.DrainDeadline == nil {
				t.Fatalf("draining status: %d transfers, deadline %v", len(st.Transfers), st.DrainDeadline)
			}
			// New connections are answered "draining" (HTTP: 503), which
			// clients retry, not refused: the listener stays open.
			if msg := drainingAnswers(d.Addr); msg != "" {
				t.Fatalf("a new connection while draining: %s", msg)
			}
			close(gate)
			for _, g := range gets {
				g.wait(t, sum)
			}
			if code := d.WaitExit(30 * time.Second); code != 0 {
				t.Fatalf("supervisor exit status %d after a drain, want 0\n%s", code, tail(d.Log(), 20))
			}
			if drainOut != nil {
				if err := drainOut.Wait(); err != nil {
					t.Fatalf("zctl drain --wait: %v\n%s", err, out.String())
				}
				if !strings.Contains(out.String(), "waiting for 20 transfers") || !strings.Contains(out.String(), "drained") {
					t.Fatalf("zctl drain --wait printed:\n%s", out.String())
				}
			}
			if !strings.Contains(d.Log(), "draining: no new connections") || !strings.Contains(d.Log(), "exited cleanly") {
				t.Fatalf("log lacks the drain:\n%s", d.Log())
			}
		})
	}
}

// TestDrainTimeout: a client that never reads is cut off at drain_timeout,
// and the exit status and log say so.
func TestDrainTimeout(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Config: "drain_timeout = \"1s\"\n"})
	never := make(chan struct{})
	defer close(never)
	startSlowGet(t, d.Addr, "/big.bin", never)
	d.WaitStatus(5*time.Second, "the transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	start := time.Now()
	if r := d.Zctl("drain"); r.Code != 0 {
		t.Fatalf("zctl drain: %d %s", r.Code, r.Stderr)
	}
	code := d.WaitExit(15 * time.Second)
	if code != 3 {
		t.Fatalf("exit status %d, want 3 (drain timeout)", code)
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("exited after %v, before the 1s drain_timeout", el)
	}
	if !regexp.MustCompile(`drain timeout \(1s\) expired: killed \d workers? with 1 connection in flight`).MatchString(d.Log()) {
		t.Fatalf("log does not say the drain timed out:\n%s", d.Log())
	}
}

// TestDrainTimeoutFlag: zctl drain --timeout replaces drain_timeout.
func TestDrainTimeoutFlag(t *testing.T) {
	root := shortTempDir(t)
	WriteRandom(t, filepath.Join(root, "big.bin"), 32<<20)
	d := StartDaemon(t, DaemonOpts{Root: root}) // drain_timeout: the 60s default
	never := make(chan struct{})
	defer close(never)
	startSlowGet(t, d.Addr, "/big.bin", never)
	d.WaitStatus(5*time.Second, "the transfer", func(st *ctlStatus) bool { return len(st.Transfers) == 1 })
	start := time.Now()
	r := d.Zctl("drain", "--wait", "--timeout", "500ms")
	if r.Code != 1 || !strings.Contains(r.Stderr, "drain timeout (500ms) expired") {
		t.Fatalf("zctl drain --wait --timeout: exit %d, %q %q", r.Code, r.Stdout, r.Stderr)
	}
	if code := d.WaitExit(5 * time.Second); code != 3 {
		t.Fatalf("exit status %d, want 3", code)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %v: the --timeout was not applied", el)
	}
}

// TestDrainDeadlineMovedEarlier: during a drain (here from SIGUSR1, with
// the default 60 s drain_timeout) `zctl drain --timeout` may bring the
// deadline closer, never push it back (a later one is kept as it is); status keeps its lists lists.
func TestDrainDeadlineMovedEarlier(t *testing.T) {
	d, st := stalledTransfer(t, DaemonOpts{Workers: 1})
	if err := syscall.Kill(st.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	st = d.WaitState("draining", 5*time.Second)
	if st.DrainDeadline == nil || time.Until(*st.DrainDeadline) < 30*time.Second {
		t.Fatalf("drain deadline %v, want the 60s default", st.DrainDeadline)
	}
	// Scripts iterate these: lists, never null. The listeners are still
	// open while draining (they answer "draining") and listed.
	r := d.Zctl("status", "--json")
	if r.Code != 0 || !strings.Contains(r.Stdout, `"addr": "`+d.Addr+`"`) || strings.Contains(r.Stdout, "\": null") {
		t.Errorf("status --json while draining: exit %d\n%s", r.Code, r.Stdout)
	}
	// A later deadline keeps the one in force (a stop script run twice).
	if r := d.Zctl("drain", "--timeout", "10m"); r.Code != 0 {
		t.Errorf("a later deadline: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if st := d.MustStatus(); st.DrainDeadline == nil || time.Until(*st.DrainDeadline) > time.Minute {
		t.Errorf("a later deadline replaced the drain's: %v", st.DrainDeadline)
	}
	if r := d.Zctl("drain", "--timeout", "1s"); r.Code != 0 {
		t.Fatalf("an earlier deadline: exit %d: %s", r.Code, r.Stderr)
	}
	if code := d.WaitExit(20 * time.Second); code != 3 {
		t.Fatalf("exit %d, want 3 (a transfer cut at the drain deadline)", code)
	}
	if !strings.Contains(d.Log(), "keeping the earlier deadline") || !strings.Contains(d.Log(), "drain deadline moved earlier") || !strings.Contains(d.Log(), "drain timeout (1s) expired") {
		t.Errorf("log:\n%s", tail(d.Log(), 20))
	}
}
