package zctl

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/ctl/ctltest"
)

// fakeDaemon is a ctl.Handler with canned answers.
type fakeDaemon struct {
	status    *ctl.Status
	progress  []*ctl.Status
	drainErr  error
	reloadMsg string
	reloadErr error

	mu    sync.Mutex
	calls []string
}

func (d *fakeDaemon) record(s string) {
	d.mu.Lock()
	d.calls = append(d.calls, s)
	d.mu.Unlock()
}

func (d *fakeDaemon) Status(context.Context) (*ctl.Status, error) {
	d.record("status")
	return d.status, nil
}

func (d *fakeDaemon) Drain(_ context.Context, timeout time.Duration, p func(*ctl.Status)) error {
	d.record("drain " + timeout.String())
	if p != nil {
		for _, st := range d.progress {
			p(st)
		}
	}
	return d.drainErr
}

func (d *fakeDaemon) Kill(context.Context) error {
	d.record("kill")
	return nil
}

func (d *fakeDaemon) Reload(_ context.Context, wait bool, p func(*ctl.Status)) (string, error) {
	d.record("reload")
	if p != nil {
		for _, st := range d.progress {
			p(st)
		}
	}
	return d.reloadMsg, d.reloadErr
}

func serve(t *testing.T, d *fakeDaemon) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "z")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "c.sock")
	ln, err := ctl.Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &ctl.Server{Handler: d, Log: slog.New(slog.DiscardHandler)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return path
}

func run(args ...string) (string, string, error) {
	var out, errOut strings.Builder
	err := Run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestRun(t *testing.T) {
	st := drainingStatus()
	d := &fakeDaemon{
		status: st,
		progress: []*ctl.Status{
			{State: ctl.StateDraining, Transfers: []ctl.Transfer{{Path: "/big.iso", Sent: 1, Total: 4, Client: "c:1"}}},
			{State: ctl.StateDraining, Transfers: []ctl.Transfer{{Path: "/big.iso", Sent: 1, Total: 4, Client: "c:1"}}},
			{State: ctl.StateDraining, Totals: ctl.Totals{Workers: 1}},
		},
		reloadMsg: "generation 3 serving with 2 workers",
	}
	sock := serve(t, d)

	tests := []struct {
		args []string
		out  string
		call string
	}{
		{[]string{"drain"}, "draining\n", "drain 0s"},
		{[]string{"drain", "--timeout", "30s", "--wait"}, "waiting for 1 transfers: /big.iso 25.0% (c:1)\nwaiting for 1 workers to exit\n" +
			"drained: every transfer finished; zfs-serve has exited\n", "drain 30s"},
		{[]string{"kill"}, "killed\n", "kill"},
		{[]string{"reload"}, "reloaded: generation 3 serving with 2 workers\n", "reload"},
	}
	for _, tt := range tests {
		d.mu.Lock()
		d.calls = nil
		d.mu.Unlock()
		out, errOut, err := run(append([]string{"-s", sock}, tt.args...)...)
		if err != nil || out != tt.out || errOut != "" {
			t.Errorf("zctl %s: %v\nstdout %q\nwant   %q\nstderr %q", tt.args, err, out, tt.out, errOut)
		}
		d.mu.Lock()
		if len(d.calls) != 1 || d.calls[0] != tt.call {
			t.Errorf("zctl %s: daemon saw %q, want %q", tt.args, d.calls, tt.call)
		}
		d.mu.Unlock()
	}

	// status --json is the Status object, as the daemon sent it.
	out, _, err := run("-s", sock, "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got ctl.Status
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("status --json: %v: %s", err, out)
	}
	if !reflect.DeepEqual(&got, st) {
		t.Errorf("status --json:\n got %+v\nwant %+v", &got, st)
	}

	// status is the table; $ZFS_SERVE_CONTROL finds the socket.
	t.Setenv("ZFS_SERVE_CONTROL", sock)
	out, _, err = run("status")
	if err != nil || !strings.HasPrefix(out, "zfs-serve 0.1.0  draining  pid 4181  up 3m12s  generation 2\n") ||
		!strings.Contains(out, "\nTRANSFERS (5)\n") {
		t.Errorf("status: %v\n%s", err, out)
	}
}

func TestRunErrors(t *testing.T) {
	d := &fakeDaemon{status: &ctl.Status{}, reloadErr: errors.New(`invalid configuration, nothing changed: f.toml:3: unknown key "wokers"`),
		drainErr: errors.New("drain timeout: 1 transfers cut off")}
	sock := serve(t, d)
	missing := filepath.Join(filepath.Dir(sock), "missing.sock")
	tests := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"-s", sock, "reload"}, cli.ExitError, `reload failed: invalid configuration, nothing changed: f.toml:3: unknown key "wokers"`},
		{[]string{"-s", sock, "drain", "--wait"}, cli.ExitError, "drain timeout: 1 transfers cut off"},
		{[]string{"-s", missing, "status"}, ExitUnreachable, "is zfs-serve running?"},
		{[]string{"-s", sock}, cli.ExitUsage, "no command given"},
		{[]string{"-s", sock, "restart"}, cli.ExitUsage, `unknown command "restart"`},
		{[]string{"-s", sock, "status", "extra"}, cli.ExitUsage, `unexpected argument "extra"`},
		{[]string{"-s", sock, "drain", "--timeout", "soon"}, cli.ExitUsage, "invalid value"},
		{[]string{"-s", sock, "drain", "--timeout", "-5s"}, cli.ExitUsage, "--timeout wants a positive duration such as 30s or 5m, not -5s"},
		{[]string{"-s", sock, "drain", "--timeout", "0s"}, cli.ExitUsage, "--timeout wants a positive duration such as 30s or 5m, not 0s"},
		{[]string{"-s", sock, "drain", "--wait", "--timeout", "0"}, cli.ExitUsage, "--timeout wants a positive duration"},
		{[]string{"-s", "", "status"}, cli.ExitUsage, "-s wants a socket path"},
		{[]string{"-x"}, cli.ExitUsage, "flag provided but not defined"},
		{[]string{"-s", sock, "kill", "--now"}, cli.ExitUsage, "flag provided but not defined: -now (see --help)"},
	}
	calls := func() int {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.calls)
	}
	for _, tt := range tests {
		before := calls()
		out, errOut, err := run(tt.args...)
		if tt.code == cli.ExitUsage && calls() != before {
			t.Errorf("zctl %s: a bad command line reached the daemon", tt.args)
		}
		if code := cli.Code(err); code != tt.code || err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("zctl %s: exit %d, %v; want exit %d with %q", tt.args, code, err, tt.code, tt.err)
		}
		// Printed once, by cli.Report; only "no command given" shows the usage first.
		if out != "" || (errOut != "" && tt.err != "no command given") {
			t.Errorf("zctl %s: stdout %q, stderr %q; want nothing before cli.Report", tt.args, out, errOut)
		}
	}
}

func TestHelp(t *testing.T) {
	sock := serve(t, &fakeDaemon{status: &ctl.Status{}})
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "Usage: zctl [-s PATH] COMMAND"},
		{[]string{"-h"}, "Usage: zctl [-s PATH] COMMAND"},
		{[]string{"help"}, "Usage: zctl [-s PATH] COMMAND"},
		{[]string{"-s", sock, "drain", "--help"}, "Usage: zctl drain [--wait] [--timeout DUR]\n"},
		{[]string{"status", "-h"}, "Usage: zctl status [--json]\n"},
	} {
		out, errOut, err := run(tt.args...)
		if cli.Code(err) != 0 || !strings.HasPrefix(out, tt.want) || errOut != "" {
			t.Errorf("zctl %s: %v (exit %d), stdout %q, stderr %q; want %q on stdout, exit 0", tt.args, err, cli.Code(err), out, errOut, tt.want)
		}
	}
	if out, _, _ := run("drain", "--help"); !strings.Contains(out, "-timeout DUR") {
		t.Errorf("drain --help lists no flags: %q", out)
	}
	if out, _, _ := run("--help"); !strings.Contains(out, "3 cannot reach the daemon, or it did not answer in time") {
		t.Errorf("--help does not document the exit status of a daemon that does not answer: %q", out)
	}
}

func TestNoAnswer(t *testing.T) {
	old := timeouts
	timeouts = ctl.Timeouts{Answer: 50 * time.Millisecond, Reload: 100 * time.Millisecond}
	t.Cleanup(func() { timeouts = old })
	for _, tt := range []struct {
		args     []string
		progress int
		want     string
	}{
		{[]string{"status"}, 0, "no answer from the daemon in 50ms: is it stopped?"},
		{[]string{"kill"}, 0, "no answer from the daemon in 50ms: is it stopped?"},
		{[]string{"drain"}, 0, "no answer from the daemon in 50ms: is it stopped?"},
		{[]string{"drain", "--wait"}, 2, "no answer from the daemon in 50ms: is it stopped?"},
		{[]string{"reload"}, 0, "reload failed: no answer from the daemon in 100ms: is it stopped?"},
		{[]string{"reload", "--wait"}, 1, "reload failed: no answer from the daemon in 50ms: is it stopped?"},
	} {
		sock := ctltest.SilentDaemon(t, strings.Repeat(`{"v":1,"ok":true,"event":"progress","status":{"state":"draining"}}`+"\n", tt.progress))
		_, _, err := run(append([]string{"-s", sock}, tt.args...)...)
		if code := cli.Code(err); code != ExitUnreachable || err == nil || err.Error() != tt.want {
			t.Errorf("zctl %s: exit %d, %v; want exit %d and %q", tt.args, code, err, ExitUnreachable, tt.want)
		}
	}
}
