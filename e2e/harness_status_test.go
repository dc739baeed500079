package e2e

import (
	"encoding/json"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// Status asks the daemon for its status through the control socket.
func (d *Daemon) Status() (*ctl.Status, error) {
	c, err := ctl.Dial(d.Control)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r, err := c.Do(ctl.Request{Cmd: ctl.CmdStatus}, nil)
	if err != nil {
		return nil, err
	}
	// Only this daemon's workers: while a new instance starts, its control
	// socket's path still leads to the draining one it takes over from.
	if r.Status.PID == d.Cmd.Process.Pid {
		d.mu.Lock()
		for _, w := range r.Status.Workers {
			if w.PID != 0 {
				d.workers[w.PID] = true
			}
		}
		d.mu.Unlock()
	}
	return r.Status, nil
}

// MustStatus is Status that fails the test on error.
func (d *Daemon) MustStatus() *ctl.Status {
	d.t.Helper()
	st, err := d.Status()
	if err != nil {
		d.t.Fatalf("status: %v\n%s", err, tail(d.Log(), 30))
	}
	return st
}

// WaitState polls status until the daemon reports state.
func (d *Daemon) WaitState(state string, timeout time.Duration) *ctl.Status {
	d.t.Helper()
	return d.WaitStatus(timeout, "state "+state, func(st *ctl.Status) bool { return st.State == state })
}

// WaitStatus polls status until cond holds.
func (d *Daemon) WaitStatus(timeout time.Duration, what string, cond func(*ctl.Status) bool) *ctl.Status {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var last *ctl.Status
	var lastErr error
	for time.Now().Before(deadline) {
		if ok, code := d.Exited(); ok {
			d.t.Fatalf("zfs-serve exited (status %d) while waiting for %s\n%s", code, what, tail(d.Log(), 40))
		}
		st, err := d.Status()
		if err == nil && cond(st) {
			return st
		}
		last, lastErr = st, err
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(last, "", "  ")
	d.t.Fatalf("timed out after %v waiting for %s; last status %s (err %v)\n%s", timeout, what, b, lastErr, tail(d.Log(), 40))
	return nil
}

// WorkerPIDs returns the pids of the workers in st.
func WorkerPIDs(st *ctl.Status) []int {
	var pids []int
	for _, w := range st.Workers {
		if w.PID != 0 {
			pids = append(pids, w.PID)
		}
	}
	return pids
}

// ctlStatus is ctl.Status, short for test predicates.
type ctlStatus = ctl.Status
