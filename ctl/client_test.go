package ctl

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl/ctltest"
)

func TestSocketPath(t *testing.T) {
	for _, k := range []string{"NOTIFY_SOCKET", "INVOCATION_ID", "LISTEN_FDS"} {
		t.Setenv(k, "")
	}
	xdg := shortDir(t)
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	user := filepath.Join(xdg, "zfs-serve", "control.sock")
	if got := controlPath(-1, os.Getuid(), false, xdg); got != user {
		t.Fatalf("controlPath(user, %q) = %q, want %q", xdg, got, user)
	}

	t.Setenv("ZFS_SERVE_CONTROL", "/env/c.sock")
	if got := SocketPath("/explicit/c.sock"); got != "/explicit/c.sock" {
		t.Errorf("explicit path: got %q", got)
	}
	if got := SocketPath(""); got != "/env/c.sock" {
		t.Errorf("$ZFS_SERVE_CONTROL: got %q", got)
	}

	t.Setenv("ZFS_SERVE_CONTROL", "")
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	system, tmp := SystemControlPath, fmt.Sprintf("/tmp/zfs-serve-%d/control.sock", os.Getuid())
	// Nothing exists: the rule's answer for this user.
	want := DefaultControlPath()
	switch {
	case exists(system):
		want = system
	case exists(tmp):
		want = tmp
	}
	if got := SocketPath(""); got != want {
		t.Errorf("no socket exists: got %q, want %q", got, want)
	}
	// The user's socket exists.
	if err := os.MkdirAll(filepath.Dir(user), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(user, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	want = user
	if exists(system) {
		want = system // it comes first
	}
	if got := SocketPath(""); got != want {
		t.Errorf("user socket exists: got %q, want %q", got, want)
	}
}

// TestSocketPathTmp: with $XDG_RUNTIME_DIR set but no socket there, zctl
// finds a daemon started without it (/tmp/zfs-serve-$UID/control.sock).
func TestSocketPathTmp(t *testing.T) {
	for _, k := range []string{"NOTIFY_SOCKET", "INVOCATION_ID", "LISTEN_FDS", "ZFS_SERVE_CONTROL"} {
		t.Setenv(k, "")
	}
	t.Setenv("XDG_RUNTIME_DIR", shortDir(t))
	if _, err := os.Stat(SystemControlPath); err == nil {
		t.Skip(SystemControlPath + " exists and comes first")
	}
	tmp := fmt.Sprintf("/tmp/zfs-serve-%d/control.sock", os.Getuid())
	if _, err := os.Stat(tmp); err != nil {
		// Create it for the test, and remove only what was created.
		dir := filepath.Dir(tmp)
		if _, err := os.Stat(dir); err != nil {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Skip(err)
			}
			t.Cleanup(func() { os.Remove(dir) })
		}
		if err := os.WriteFile(tmp, nil, 0o600); err != nil {
			t.Skip(err)
		}
		t.Cleanup(func() { os.Remove(tmp) })
	}
	if got := SocketPath(""); got != tmp {
		t.Errorf("SocketPath(\"\") = %q, want %q", got, tmp)
	}
}

func TestFirstExisting(t *testing.T) {
	dir := shortDir(t)
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	paths := []string{a, b, c}
	if got := firstExisting(paths, "fallback", ""); got != "fallback" {
		t.Errorf("none exists: %q", got)
	}
	os.WriteFile(c, nil, 0o600)
	if got := firstExisting(paths, "fallback", ""); got != c {
		t.Errorf("only the last exists: %q", got)
	}
	os.WriteFile(b, nil, 0o600)
	if got := firstExisting(paths, "fallback", ""); got != b {
		t.Errorf("the last two exist: %q", got)
	}
}

func TestDialErrors(t *testing.T) {
	dir := shortDir(t)
	_, err := Dial(filepath.Join(dir, "none.sock"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "is zfs-serve running?") || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("missing socket: %v", err)
	}
	long := "/" + strings.Repeat("d", 120) + "/c.sock"
	if _, err := Dial(long); err == nil || !strings.Contains(err.Error(), "a unix socket path can have at most 107") {
		t.Errorf("path too long: %v", err)
	}
	if os.Geteuid() != 0 { // root ignores file modes
		p := filepath.Join(dir, "locked.sock")
		ln, err := Listen(p, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		os.Chmod(p, 0)
		_, err = Dial(p)
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "control_group") {
			t.Errorf("socket without permission: %v", err)
		}
	}
}

func TestClientNoAnswer(t *testing.T) {
	progress := `{"v":1,"ok":true,"event":"progress"}` + "\n"
	to := Timeouts{Answer: 30 * time.Millisecond, Reload: 90 * time.Millisecond}
	for _, tt := range []struct {
		name     string
		req      Request
		out      string
		progress int
		after    time.Duration
	}{
		{"status", Request{Cmd: CmdStatus}, "", 0, to.Answer},
		{"kill", Request{Cmd: CmdKill}, "", 0, to.Answer},
		{"drain", Request{Cmd: CmdDrain}, "", 0, to.Answer},
		{"drain --wait, between progress lines", Request{Cmd: CmdDrain, Wait: true}, progress + progress, 2, to.Answer},
		{"half a line", Request{Cmd: CmdStatus}, `{"v":1,`, 0, to.Answer},
		{"reload", Request{Cmd: CmdReload}, "", 0, to.Reload},
		{"reload --wait, first line", Request{Cmd: CmdReload, Wait: true}, "", 0, to.Reload},
		{"reload --wait, between progress lines", Request{Cmd: CmdReload, Wait: true}, progress, 1, to.Answer},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, ctltest.SilentDaemon(t, tt.out))
			c.Timeouts = to
			n := 0
			start := time.Now()
			_, err := c.Do(tt.req, func(*Response) { n++ })
			var na *NoAnswerError
			if !errors.As(err, &na) || na.After != tt.after || n != tt.progress {
				t.Fatalf("got %v after %d progress lines; want no answer in %v after %d", err, n, tt.after, tt.progress)
			}
			if want := fmt.Sprintf("no answer from the daemon in %v: is it stopped?", tt.after); err.Error() != want {
				t.Errorf("message %q, want %q", err, want)
			}
			if d := time.Since(start); d < tt.after {
				t.Errorf("gave up after %v, before %v", d, tt.after)
			}
		})
	}
	if c := dial(t, ctltest.SilentDaemon(t, "")); c.Timeouts != DefaultTimeouts || DefaultTimeouts.Answer != 10*time.Second || DefaultTimeouts.Reload != 95*time.Second {
		t.Errorf("Dial sets timeouts %+v (defaults %+v); want 10s and 95s for reload", c.Timeouts, DefaultTimeouts)
	}
}

// fakeDaemon answers each connection's first line with the given output,
// then closes it.
func fakeDaemon(t *testing.T, out string) string {
	t.Helper()
	path := filepath.Join(shortDir(t), "d.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, out)
			c.Close()
		}
	}()
	return path
}

func TestClientDo(t *testing.T) {
	tests := []struct {
		name     string
		out      string
		progress int
		msg      string
		err      string
		isClosed bool
	}{
		{"ok", `{"v":1,"ok":true,"message":"killed"}` + "\n", 0, "killed", "", false},
		{"progress then final", `{"v":1,"ok":true,"event":"progress","status":{}}` + "\n" + `{"v":1,"ok":true,"event":"progress"}` + "\n" + `{"v":1,"ok":true,"message":"drained"}` + "\n", 2, "drained", "", false},
		{"refused", `{"v":1,"ok":false,"error":"permission denied"}` + "\n", 0, "", "permission denied", false},
		{"closed before answering", "", 0, "", "closed the control connection before answering", true},
		{"closed after progress", `{"v":1,"ok":true,"event":"progress"}` + "\n", 1, "", "closed the control connection", true},
		{"truncated answer", `{"v":1,"ok":true`, 0, "", "truncated", false},
		{"not JSON", "hello\n", 0, "", "malformed response", false},
		{"other version", `{"v":2,"ok":true}` + "\n", 0, "", "daemon speaks control protocol version 2, zctl 1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, fakeDaemon(t, tt.out))
			n := 0
			r, err := c.Do(Request{Cmd: CmdDrain}, func(*Response) { n++ })
			if n != tt.progress {
				t.Errorf("%d progress calls, want %d", n, tt.progress)
			}
			if tt.err == "" {
				if err != nil || r.Message != tt.msg {
					t.Errorf("got %+v, %v; want message %q", r, err, tt.msg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("got %v, want an error with %q", err, tt.err)
			}
			if errors.Is(err, ErrClosed) != tt.isClosed {
				t.Errorf("errors.Is(%v, ErrClosed) = %v", err, !tt.isClosed)
			}
		})
	}
}

// TestPlantedTmpSocket: zctl does not talk to a socket at the /tmp
// fallback (/tmp/zfs-serve-UID/control.sock) whose directory zfs-serve
// would not have made it in: anyone can create /tmp/zfs-serve-UID first
// and answer there. A user without XDG_RUNTIME_DIR (cron, sudo -u) who
// controls the system's daemon as a member of its control_group had
// that path looked at first, so "zctl drain" went to whoever planted it,
// which could answer "draining" while the real daemon served on.
func TestPlantedTmpSocket(t *testing.T) {
	base := shortDir(t)
	system := filepath.Join(base, "system.sock")
	os.WriteFile(system, nil, 0o600)
	for _, c := range []struct {
		name  string
		mode  os.FileMode
		owner int // -1: this process's
		ok    bool
	}{
		{"own, private", 0o700, -1, true},
		{"own, 0755", 0o755, -1, true},
		{"own, writable by others", 0o777, -1, false},
		{"another user's", 0o755, 65534, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(base, strings.ReplaceAll(c.name, " ", "_"))
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, c.mode); err != nil {
				t.Fatal(err)
			}
			if c.owner >= 0 {
				if err := os.Lchown(dir, c.owner, c.owner); err != nil {
					t.Skip("cannot give the directory to another user:", err)
				}
			}
			tmp := filepath.Join(dir, "control.sock")
			ln, err := net.Listen("unix", tmp)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			defer func(f func() string) { tmpControlPath = f }(tmpControlPath)
			tmpControlPath = func() string { return tmp }

			want := system
			if c.ok {
				want = tmp
			}
			if got := firstExisting([]string{tmp, system}, tmp, tmp); got != want {
				t.Errorf("zctl picks %s, want %s", got, want)
			}
			cl, err := Dial(tmp)
			if cl != nil {
				cl.Close()
			}
			if c.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), "is not a zfs-serve's") {
				t.Errorf("Dial %s: %v", tmp, err)
			}
		})
	}
}
