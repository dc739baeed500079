package ctl

import (
	"fmt"
	"os"
	"path/filepath"
)

// Where the control socket lives. The rules are here, not in config, so
// that zctl, which needs them to find a daemon, does not link the
// configuration schema; config uses them for the daemon's default.

// SystemControlPath is the control socket of a zfs-serve run by root or
// systemd.
const SystemControlPath = "/run/zfs-serve/control.sock"

// MaxSocketPath is the longest path a unix socket can have on Linux:
// sun_path holds 108 bytes, the terminating NUL included.
const MaxSocketPath = 107

// DefaultControlPath is the control socket path shared by zfs-serve and zctl:
// /run/zfs-serve/control.sock for root or under systemd, else in the user's
// runtime directory, else in /tmp.
func DefaultControlPath() string {
	return controlPath(os.Geteuid(), os.Getuid(), UnderSystemd(), os.Getenv("XDG_RUNTIME_DIR"))
}

// ControlPaths are the places zctl looks for the control socket, in
// order. For root: the system one, then the user's runtime directory (if
// $XDG_RUNTIME_DIR is set), then /tmp. For any other user their own
// places come first and the system one last, so that a user running a
// daemon of their own talks to it, never by accident to the system's
// (which a member of its control_group could drain). A daemon run as
// root, under systemd, or as this user with or without XDG_RUNTIME_DIR
// is at one of them.
func ControlPaths() []string {
	return controlPaths(os.Geteuid(), os.Getuid(), os.Getenv("XDG_RUNTIME_DIR"))
}

func controlPaths(euid, uid int, xdgRuntimeDir string) []string {
	var own []string
	if xdgRuntimeDir != "" {
		own = append(own, controlPath(-1, uid, false, xdgRuntimeDir))
	}
	own = append(own, controlPath(-1, uid, false, ""))
	if euid == 0 {
		return append([]string{SystemControlPath}, own...)
	}
	return append(own, SystemControlPath)
}

// controlPath is the rule behind DefaultControlPath, with the process's
// identity and environment as arguments (euid -1: not root).
func controlPath(euid, uid int, systemd bool, xdgRuntimeDir string) string {
	if euid == 0 || systemd {
		return SystemControlPath
	}
	if xdgRuntimeDir != "" {
		return filepath.Join(xdgRuntimeDir, "zfs-serve", "control.sock")
	}
	return fmt.Sprintf("/tmp/zfs-serve-%d/control.sock", uid)
}

// UnderSystemd reports whether this process is a systemd service that
// talks to systemd (notify or socket activation). INVOCATION_ID alone is
// not enough: user services and desktop terminals can carry it.
func UnderSystemd() bool {
	return os.Getenv("NOTIFY_SOCKET") != "" || os.Getenv("LISTEN_FDS") != ""
}
