package ctl

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Taking the control socket over from a draining daemon.
//
// A new zfs-serve may start while the old one drains (it takes the port
// over, see daemon/takeover.go); both are configured with the same control
// socket path. Listen asks whoever answers at the path for its status: a
// daemon that is draining (or stopping) loses the path to the new one,
// whose socket is made beside it and renamed over it, so that the path
// always leads to a daemon that answers; a serving one makes Listen fail
// as before. The old daemon keeps the connections it has (a zctl drain
// --wait goes on getting its progress); new ones reach the new daemon.
// At its exit the old daemon removes the file only if it is still its
// own socket. Both steps hold an flock on the socket's directory, so that
// a check and a removal cannot interleave with a takeover.

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
	path     string
	file     os.FileInfo // the socket file, to know it from a successor's
	tookOver bool
	once     sync.Once
}

// TookOver reports whether the socket took its path over from a draining
// daemon.
func (s *Socket) TookOver() bool { return s.tookOver }

// Close removes the socket's file, unless a daemon that took the path
// over has put its own there, and closes the socket.
func (s *Socket) Close() error {
	s.once.Do(func() {
		unlock, lerr := lockDir(filepath.Dir(s.path))
		if lerr != nil {
			return // left behind: a later Listen finds it stale
		}
		defer unlock()
		if st, err := os.Lstat(s.path); err == nil && os.SameFile(st, s.file) {
			os.Remove(s.path)
		}
	})
	return s.UnixListener.Close()
}

// lockDir takes an exclusive flock on dir, waiting up to 10 s, and returns
// its release.
func lockDir(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if (err != syscall.EWOULDBLOCK && err != syscall.EINTR) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		time.Sleep(10 * time.Millisecond)
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
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
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
