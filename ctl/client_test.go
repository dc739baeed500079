package ctl

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zfs-serve/zfs-serve/config"
)

func TestSocketPath(t *testing.T) {
	for _, k := range []string{"NOTIFY_SOCKET", "INVOCATION_ID", "LISTEN_FDS"} {
		t.Setenv(k, "")
	}
	xdg := shortDir(t)
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	user := filepath.Join(xdg, "zfs-serve", "control.sock")
	if got := config.UserControlPath(); got != user {
		t.Fatalf("UserControlPath() = %q, want %q", got, user)
	}

	t.Setenv("ZFS_SERVE_CONTROL", "/env/c.sock")
	if got := SocketPath("/explicit/c.sock"); got != "/explicit/c.sock" {
		t.Errorf("explicit path: got %q", got)
	}
	if got := SocketPath(""); got != "/env/c.sock" {
		t.Errorf("$ZFS_SERVE_CONTROL: got %q", got)
	}

	t.Setenv("ZFS_SERVE_CONTROL", "")
	_, sysErr := os.Stat(config.SystemControlPath)
	systemExists := sysErr == nil
	// Nothing exists: the rule's answer for this user.
	want := config.DefaultControlPath()
	if systemExists {
		want = config.SystemControlPath
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
	if config.DefaultControlPath() == config.SystemControlPath && systemExists {
		want = config.SystemControlPath // it comes first for root
	}
	if got := SocketPath(""); got != want {
		t.Errorf("user socket exists: got %q, want %q", got, want)
	}
}

func TestDialErrors(t *testing.T) {
	dir := shortDir(t)
	_, err := Dial(filepath.Join(dir, "none.sock"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "is zfs-serve running?") || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("missing socket: %v", err)
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
