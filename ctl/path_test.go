package ctl

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestControlPath(t *testing.T) {
	tests := []struct {
		euid, uid int
		systemd   bool
		xdg       string
		want      string
	}{
		{0, 0, false, "", "/run/zfs-serve/control.sock"},
		{0, 0, false, "/run/user/0", "/run/zfs-serve/control.sock"},
		{1000, 1000, true, "/run/user/1000", "/run/zfs-serve/control.sock"},
		{1000, 1000, false, "/run/user/1000", "/run/user/1000/zfs-serve/control.sock"},
		{1000, 1000, false, "", "/tmp/zfs-serve-1000/control.sock"},
		{-1, 1001, false, "", "/tmp/zfs-serve-1001/control.sock"},
	}
	for _, tt := range tests {
		if got := controlPath(tt.euid, tt.uid, tt.systemd, tt.xdg); got != tt.want {
			t.Errorf("controlPath(%d, %d, %v, %q) = %q, want %q", tt.euid, tt.uid, tt.systemd, tt.xdg, got, tt.want)
		}
	}
}

func clearSystemdEnv(t *testing.T) {
	for _, k := range []string{"NOTIFY_SOCKET", "INVOCATION_ID", "LISTEN_FDS"} {
		t.Setenv(k, "")
	}
}

func TestDefaultControlPath(t *testing.T) {
	clearSystemdEnv(t)
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/4242")
	want := "/run/user/4242/zfs-serve/control.sock"
	if os.Geteuid() == 0 {
		want = SystemControlPath
	}
	if got := DefaultControlPath(); got != want {
		t.Errorf("DefaultControlPath() = %q, want %q", got, want)
	}
	t.Run("INVOCATION_ID alone", func(t *testing.T) {
		clearSystemdEnv(t)
		t.Setenv("INVOCATION_ID", "x")
		if UnderSystemd() {
			t.Error("INVOCATION_ID alone (a user service, a desktop terminal) counts as systemd")
		}
	})
	for _, k := range []string{"NOTIFY_SOCKET", "LISTEN_FDS"} {
		t.Run(k, func(t *testing.T) {
			clearSystemdEnv(t)
			t.Setenv(k, "x")
			if !UnderSystemd() {
				t.Errorf("%s set: UnderSystemd() = false", k)
			}
			if got := DefaultControlPath(); got != SystemControlPath {
				t.Errorf("%s set: DefaultControlPath() = %q", k, got)
			}
		})
	}
	clearSystemdEnv(t)
	if UnderSystemd() {
		t.Error("UnderSystemd() with no systemd variables")
	}
}

func TestControlPaths(t *testing.T) {
	xdg, tmp := "/run/user/1000/zfs-serve/control.sock", "/tmp/zfs-serve-1000/control.sock"
	for _, c := range []struct {
		name      string
		euid, uid int
		xdg       string
		want      []string
	}{
		{"user with XDG_RUNTIME_DIR", 1000, 1000, "/run/user/1000", []string{xdg, tmp, SystemControlPath}},
		{"user without", 1000, 1000, "", []string{tmp, SystemControlPath}},
		{"root", 0, 0, "", []string{SystemControlPath, "/tmp/zfs-serve-0/control.sock"}},
		{"root with XDG_RUNTIME_DIR", 0, 1000, "/run/user/1000", []string{SystemControlPath, xdg, tmp}},
	} {
		if got := controlPaths(c.euid, c.uid, c.xdg); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	clearSystemdEnv(t)
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/4242")
	if got := ControlPaths(); len(got) != 3 || !slices.Contains(got, "/run/user/4242/zfs-serve/control.sock") {
		t.Errorf("ControlPaths() = %q", got)
	}
}

// TestZctlDoesNotLinkConfig: zctl finds the daemon with the rules in this
// package; it must not link the configuration schema (config and its
// TOML library) to do so.
func TestZctlDoesNotLinkConfig(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list zctl's dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", "github.com/zfs-serve/zfs-serve/cmd/zctl").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/zfs-serve/zfs-serve/config" || strings.HasPrefix(pkg, "github.com/BurntSushi/toml") {
			t.Errorf("zctl links %s", pkg)
		}
	}
}
