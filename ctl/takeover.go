package ctl

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/human"
)

// Taking the control socket over from a draining daemon.
//
// A new zfs-serve may start while the old one drains (it takes the port
// over, see daemon/takeover.go); both are configured with the same control
// socket path. Listen asks whoever answers at the path for its status: a
// daemon that is draining (or stopping) loses the path to the new one; a
// serving one makes Listen fail as before. The new socket is made beside
// the old one and serves from there (the new daemon's connections are
// accepted from the start), and Publish renames it over the old one once
// the new daemon serves: the path always leads to a daemon that answers,
// and a new daemon that fails to start (a worker that cannot open the
// root, a metrics address in use) leaves the draining one its path, so
// that zctl still reaches it. The old daemon keeps the connections it has
// (a zctl drain --wait goes on getting its progress); new ones reach the
// new daemon. At its exit the old daemon removes the file only if it is
// still its own socket. Every step holds an flock on a lock file beside
// the socket (lockSocket), so that a check and a removal cannot
// interleave with a takeover.

// ErrExiting is the answer of a daemon whose event loop has ended.
var ErrExiting = errors.New("zfs-serve is exiting")

// errShuttingDown is the server's answer to a request made during Shutdown.
const errShuttingDown = "zfs-serve is shutting down"

// Acceptor is what Server.Serve accepts connections from: a *Socket or a
// *net.UnixListener (one systemd passed).
type Acceptor interface {
	AcceptUnix() (*net.UnixConn, error)
	Close() error
}

// Socket is a control socket Listen created.
type Socket struct {
	*net.UnixListener
	path string
	once sync.Once

	mu   sync.Mutex
	file os.FileInfo // the socket file, to know it from a successor's
	// beside is where the socket is while it waits to take path over
	// from a draining daemon (Publish), "" once it is at path; found is
	// that daemon's socket file.
	beside string
	found  os.FileInfo
}

// TakesOver reports whether the socket is to take its path over from a
// draining daemon, and has not yet (Publish).
func (s *Socket) TakesOver() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.beside != ""
}

// Publish puts a socket that takes its path over from a draining daemon
// at its path (renamed over the draining daemon's); before, the path
// leads to the draining daemon and this socket is reachable only beside
// it. A daemon calls it once it serves. It does nothing for a socket
// already at its path.
func (s *Socket) Publish() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.beside == "" {
		return nil
	}
	for try := 0; ; try++ {
		st, err := os.Lstat(s.path)
		if err == nil && (s.found == nil || !os.SameFile(st, s.found)) {
			// Another socket came since Listen (a third daemon, or a
			// replacement by hand): the same check as Listen's.
			if st.Mode().Type() != os.ModeSocket {
				return fmt.Errorf("control socket %s is no longer a socket (%s); refusing to replace it", s.path, human.FileKind(st.Mode()))
			}
			if _, err := checkAnswer(s.path); err != nil {
				return err
			}
			s.found = st
		}
		done, err := s.rename()
		if done || err != nil || try >= 5 {
			if !done && err == nil {
				err = fmt.Errorf("control socket %s: keeps changing", s.path)
			}
			return err
		}
	}
}

// rename moves the socket from beside to its path, with its lock held,
// if the file there is still the one found (or none is).
func (s *Socket) rename() (done bool, err error) {
	unlock, err := lockSocket(s.path)
	if err != nil {
		return false, fmt.Errorf("control socket: %w", err)
	}
	defer unlock()
	st, err := os.Lstat(s.path)
	if err == nil && (s.found == nil || !os.SameFile(st, s.found)) {
		return false, nil // changed again: look again
	}
	if err := os.Rename(s.beside, s.path); err != nil {
		return false, fmt.Errorf("control socket: take %s over: %w", s.path, err)
	}
	s.beside, s.found = "", nil
	return true, nil
}

// Close removes the socket's file, unless a daemon that took the path
// over has put its own there, and closes the socket. A socket that did
// not take its path over yet removes its file beside the path.
func (s *Socket) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		at := s.path
		if s.beside != "" {
			at = s.beside
		}
		unlock, lerr := lockSocket(s.path)
		if lerr != nil {
			return // left behind: a later Listen finds it stale
		}
		defer unlock()
		if st, err := os.Lstat(at); err == nil && os.SameFile(st, s.file) {
			os.Remove(at)
		}
	})
	return s.UnixListener.Close()
}

// lockSocket takes an exclusive flock on the lock file of the socket at
// path (.NAME.lock beside it, mode 0600: nobody else can open it, so
// nobody else can hold the lock, unlike the directory, which any local
// user may open and lock), waiting up to 10 s, and returns its release,
// which removes the file.
func lockSocket(path string) (func(), error) {
	lp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".lock")
	deadline := time.Now().Add(10 * time.Second)
	for {
		fd, err := unix.Open(lp, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", lp, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != os.Geteuid() {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: not a regular file of uid %d (%v)", lp, os.Geteuid(), err)
		}
		for {
			err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
			if err == nil || (err != unix.EWOULDBLOCK && err != unix.EINTR) || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", lp, err)
		}
		// The holder before us removes the file as it lets go: if it did
		// after we opened it, this lock guards nothing. Again.
		var cur unix.Stat_t
		if unix.Lstat(lp, &cur) == nil && cur.Dev == st.Dev && cur.Ino == st.Ino {
			return func() { unix.Unlink(lp); unix.Close(fd) }, nil
		}
		unix.Close(fd)
	}
}

// askTimeout bounds the wait for the status of the daemon at the path.
const askTimeout = 3 * time.Second

// checkAnswer finds out who is at the control socket path: nobody (stale
// is true: the file may be replaced), a draining daemon (stale is false:
// its path may be taken over), or a serving one (an error).
func checkAnswer(path string) (stale bool, err error) {
	for try := 0; ; try++ {
		c, err := net.DialTimeout("unix", path, time.Second)
		if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
			return true, nil // nobody listens, or the file is gone (its daemon removed it)
		}
		if err != nil {
			return false, fmt.Errorf("control socket %s exists and is not a stale socket: %w", path, err)
		}
		cl := &Client{Timeouts: Timeouts{Answer: askTimeout}, c: c, br: bufio.NewReaderSize(c, 64<<10)}
		r, err := cl.Do(Request{Cmd: CmdStatus}, nil)
		cl.Close()
		var state string
		if err == nil && r.Status != nil {
			state = r.Status.State
		}
		switch {
		case state == StateDraining || state == StateStopping:
			return false, nil
		case err == nil:
			return false, fmt.Errorf("control socket %s: another zfs-serve is answering on it (%s)", path, state)
		case try < 30 && (errors.Is(err, ErrClosed) || r != nil && (r.Error == ErrExiting.Error() || r.Error == errShuttingDown)):
			// It is exiting: its socket is about to close.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return false, fmt.Errorf("control socket %s: another zfs-serve is answering on it (asked for its state: %w)", path, err)
	}
}
