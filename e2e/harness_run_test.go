package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Result is a finished command.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// run runs a binary to completion with a timeout.
func run(t testing.TB, timeout time.Duration, bin string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %v\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), timeout, errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	if strings.Contains(errb.String(), "WARNING: DATA RACE") {
		t.Errorf("%s: the race detector found a data race:\n%s", filepath.Base(bin), errb.String())
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// Zctl runs zctl against d's control socket.
func (d *Daemon) Zctl(args ...string) Result {
	d.t.Helper()
	return run(d.t, 60*time.Second, zctlBin, append([]string{"-s", d.Control}, args...)...)
}

// Zfetch runs zfetch.
func Zfetch(t testing.TB, args ...string) Result {
	t.Helper()
	return run(t, 120*time.Second, zfetch, args...)
}
