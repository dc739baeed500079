package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// insideEnv is the environment of commands run in the container.
var insideEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
	"TERM=dumb", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "HOME=/root"}

// Command returns a command that runs argv inside the container (all its
// namespaces), not started.
func (c *container) Command(argv ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a", "--"}, argv...)...)
	cmd.Env = insideEnv
	return cmd
}

// Exec runs argv inside the container and returns its output and status.
func (c *container) Exec(timeout time.Duration, argv ...string) Result {
	c.t.Helper()
	return runCmd(c.t, timeout, c.Command(argv...))
}

// Must runs argv inside the container and fails the test unless it exits 0.
func (c *container) Must(argv ...string) string {
	c.t.Helper()
	r := c.Exec(60*time.Second, argv...)
	if r.Code != 0 {
		c.t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(argv, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// NetCommand returns a command that runs a host binary in the container's
// network namespace only (nsenter -n does not fork, so the command's pid
// is the host pid of that binary).
func (c *container) NetCommand(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-n", "--", bin}, args...)...)
	cmd.Env = cleanEnv()
	return cmd
}

// Path is where the host sees path inside the container.
func (c *container) Path(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", c.leader, path)
}

// Show returns systemctl show's value of each property of unit.
func (c *container) Show(unit string, props ...string) map[string]string {
	c.t.Helper()
	out := c.Must("systemctl", "show", unit, "-p", strings.Join(props, ","))
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// WaitShow polls unit's properties until cond holds.
func (c *container) WaitShow(timeout time.Duration, what, unit string, cond func(map[string]string) bool, props ...string) map[string]string {
	c.t.Helper()
	var last map[string]string
	if !waitFor(timeout, func() bool {
		last = c.Show(unit, props...)
		return cond(last)
	}) {
		c.t.Fatalf("%s: timed out after %v waiting for %s; last %v", unit, timeout, what, last)
	}
	return last
}

// runCmd runs cmd to completion with a timeout. It runs in a process
// group of its own, so that a timeout kills what nsenter forked too.
func runCmd(t *testing.T, timeout time.Duration, cmd *exec.Cmd) Result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("%s: timed out after %v\nstdout: %s\nstderr: %s", strings.Join(cmd.Args, " "), timeout, out.String(), errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}
