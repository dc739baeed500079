package ctl

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/zfs-serve/zfs-serve/internal/human"
)

// Listen creates the control socket at path: the directory if missing, a
// stale socket file replaced (only after a dial proves nobody answers; a
// file that is not a socket is never removed), mode 0660 and, if gid >= 0,
// group gid. If a zfs-serve that is draining answers at path, the new
// socket is made beside it and takes the path over when Publish is called
// (see takeover.go); one that serves makes Listen fail.
//
// The socket's directory must be safe (see checkSocketDir): the default
// for an unprivileged user is /tmp/zfs-serve-UID/control.sock, and any
// local user could have created /tmp/zfs-serve-UID first to swap the
// socket for their own or to remove it.
func Listen(path string, gid int) (*Socket, error) {
	dir := filepath.Dir(path)
	// The last component is 0755, not 0700: a control_group member who is
	// not the daemon's user must be able to traverse it to reach the 0660
	// socket. Nobody but its owner can add, remove or rename entries in it.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := checkSocketDir(dir); err != nil {
		return nil, err
	}
	for try := 0; ; try++ {
		var found os.FileInfo
		takeover := false
		if st, err := os.Lstat(path); err == nil {
			// connect(2) to a file that is not a socket fails with
			// ECONNREFUSED too: without this check a regular file (or
			// a directory, a symlink...) at the configured path would
			// be taken for a stale socket and removed.
			if st.Mode().Type() != os.ModeSocket {
				return nil, fmt.Errorf("control socket %s exists and is not a socket (%s); refusing to replace it", path, human.FileKind(st.Mode()))
			}
			stale, err := checkAnswer(path)
			if err != nil {
				return nil, err
			}
			found, takeover = st, !stale
		}
		sock, changed, err := create(path, gid, found, takeover)
		if changed && try < 5 {
			continue // the file changed while it was looked at: again
		}
		if changed {
			return nil, fmt.Errorf("control socket %s: keeps changing while zfs-serve starts", path)
		}
		return sock, err
	}
}

// create makes the socket at path, with its lock held, if the file there
// is still found (nil: none): replacing a stale one, or taking over a
// draining daemon's. changed reports that the file is another by now.
func create(path string, gid int, found os.FileInfo, takeover bool) (sock *Socket, changed bool, err error) {
	unlock, err := lockSocket(path)
	if err != nil {
		return nil, false, fmt.Errorf("control socket: %w", err)
	}
	defer unlock()
	st, err := os.Lstat(path)
	switch {
	case found == nil && err == nil:
		return nil, true, nil
	case found != nil && errors.Is(err, os.ErrNotExist):
		found, takeover = nil, false // removed by its daemon on its way out
	case found != nil && (err != nil || !os.SameFile(st, found)):
		return nil, true, nil
	}
	if found != nil && !takeover {
		if err := os.Remove(path); err != nil {
			return nil, false, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	// A socket that takes the path over is made beside the old one, and
	// Publish renames it over it once the daemon serves: the path never
	// lacks a socket that answers, and a new daemon that fails to start
	// leaves the draining one its path.
	at := path
	if takeover {
		at = besidePath(path)
		os.Remove(at) // a leftover of a process that had this pid, if any
	}
	// Create it with 0660 from the start: no window where others could
	// connect, and no chmod afterwards (chmod follows symlinks: between
	// bind and chmod the name could point elsewhere).
	old := syscall.Umask(0o117)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: at, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, false, fmt.Errorf("control socket: %w", err)
	}
	// Socket.Close removes the file only if it is still this one.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*Socket, bool, error) {
		os.Remove(at)
		ln.Close()
		return nil, false, err
	}
	if gid >= 0 {
		// Lchown: never follow a symlink put in the socket's place.
		if err := os.Lchown(at, -1, gid); err != nil {
			return fail(fmt.Errorf("control socket: chown to group %d: %w", gid, err))
		}
	}
	if st, err = os.Lstat(at); err != nil {
		return fail(fmt.Errorf("control socket: %w", err))
	}
	sock = &Socket{UnixListener: ln, path: path, file: st}
	if takeover {
		sock.beside, sock.found = at, found
	}
	return sock, false, nil
}

// besidePath is where a socket that is to take path over waits for it.
func besidePath(path string) string {
	return filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.new.%d", filepath.Base(path), os.Getpid()))
}

// checkSocketDir refuses a socket directory that someone else could use to
// replace or remove the socket: it must be a real directory (not a
// symlink), owned by the effective uid or root, and if group- or
// other-writable it must be sticky (like /tmp, where others cannot remove
// or rename what is ours).
func checkSocketDir(dir string) error {
	why, err := socketDirProblem(dir)
	if err != nil || why == "" {
		return err
	}
	return fmt.Errorf("%s: someone else could replace or remove the socket; remove it or choose another path with --control", why)
}

// socketDirProblem says what makes dir unsafe for a control socket
// (checkSocketDir), "" if nothing does; err is a directory that cannot
// be examined.
func socketDirProblem(dir string) (string, error) {
	st, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("control socket directory: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("control socket directory %s: cannot read its owner", dir)
	}
	m, uid, euid := st.Mode(), int(sys.Uid), os.Geteuid()
	var why string
	switch {
	case m.Type() != os.ModeDir:
		why = "is " + human.FileKind(m) + ", not a directory"
	case uid != euid && uid != 0:
		why = fmt.Sprintf("is owned by uid %d, not by uid %d or root", uid, euid)
		if euid == 0 {
			why = fmt.Sprintf("is owned by uid %d, not by root", uid)
		}
	case m.Perm()&0o022 != 0 && m&os.ModeSticky == 0:
		why = "is writable by group or others and not sticky"
	default:
		return "", nil
	}
	return fmt.Sprintf("control socket directory %s (owner uid %d, mode %v) %s", dir, uid, m, why), nil
}
