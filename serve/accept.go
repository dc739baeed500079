package serve

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
)

// Listener is a listening socket a worker accepts on itself, in the
// "accept" dispatch mode (docs/ARCHITECTURE.md): the supervisor passed it
// a copy of the socket, and every worker of the generation waits on its
// own copy. It waits in the runtime poller, so no thread blocks in
// accept: a worker is one Go process with GOMAXPROCS of 1, and a thread
// blocked in epoll_wait would hold that P until sysmon took it back.
//
// The poller's epoll registration is not EPOLLEXCLUSIVE (the runtime
// does not offer it), so a new connection makes every worker that waits
// readable at once; those that lose the race find an empty queue. Such
// wake-ups are counted (Stats) so that what this costs can be measured.
type Listener struct {
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool // set before f is closed

	accepted atomic.Uint64
	wakeups  atomic.Uint64 // the poller said readable
	empty    atomic.Uint64 // ... and the queue was empty: another took it
}

// NewListener takes the listening socket fd, which must be non-blocking
// (O_NONBLOCK belongs to the open file, so the supervisor's is ours too).
// Closing the Listener closes fd.
func NewListener(fd int, name string) (*Listener, error) {
	fl, err := fcntlFlags(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	if fl&syscall.O_NONBLOCK == 0 {
		syscall.Close(fd)
		return nil, fmt.Errorf("listener %s is blocking", name)
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Listener{f: f, rc: rc}, nil
}

func fcntlFlags(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0)
	if e != 0 {
		return 0, fmt.Errorf("fcntl F_GETFL: %w", e)
	}
	return int(r), nil
}

// ErrListenerClosed is returned by Accept once Close was called.
var ErrListenerClosed = errors.New("listener closed")

// Accept waits until a connection is queued, then accepts up to max of
// them with accept4(SOCK_NONBLOCK|SOCK_CLOEXEC) until EAGAIN, calling fn
// with each new fd and its peer. fn runs while the socket is held: Close
// waits for it to return, so once Close has returned no fn is running or
// will run. Accept returns how many it accepted, and an error that
// stopped it: ErrListenerClosed, or the accept error (EMFILE, ENFILE,
// ENOBUFS, ...) after the connections accepted before it.
func (l *Listener) Accept(max int, fn func(fd int, sa syscall.Sockaddr)) (int, error) {
	return l.AcceptLimited(max, nil, nil, fn)
}

// AcceptLimited is Accept under a limit that other listeners share: before
// each accept4 it takes a slot with take, and stops (without waiting) when
// take refuses; a slot that accept4 did not fill (EAGAIN, an error) is
// given back with put. A slot that it filled goes with the connection to
// fn. Room computed once for a whole batch would let every listener's
// loop fill the same room.
func (l *Listener) AcceptLimited(max int, take func() bool, put func(), fn func(fd int, sa syscall.Sockaddr)) (int, error) {
	n, waited := 0, false
	var aerr error
	err := l.rc.Read(func(fd uintptr) bool {
		full := false
	accept:
		for n < max {
			if take != nil && !take() {
				full = true
				break
			}
			nfd, sa, e := syscall.Accept4(int(fd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
			if e != nil && put != nil {
				put()
			}
			switch e {
			case nil:
				n++
				fn(nfd, sa)
			case syscall.EINTR, syscall.ECONNABORTED:
			case syscall.EAGAIN:
				break accept
			default:
				aerr = e
				break accept
			}
		}
		if waited {
			l.wakeups.Add(1)
			if n == 0 && !full {
				l.empty.Add(1)
			}
		}
		waited = n == 0 && aerr == nil && !full
		return !waited // false: wait in the poller and call again
	})
	l.accepted.Add(uint64(n))
	if err != nil {
		if l.closed.Load() || errors.Is(err, os.ErrClosed) {
			err = ErrListenerClosed
		}
		return n, err
	}
	return n, aerr
}

// Close stops accepting and closes this process's copy of the socket
// (the socket itself lives on in the supervisor). It waits for a running
// Accept's fn to return.
func (l *Listener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}

// ListenerStats are what a Listener counted.
type ListenerStats struct {
	Accepted uint64 // connections
	Wakeups  uint64 // times the poller woke it up
	Empty    uint64 // wake-ups that found nothing to accept
}

// Stats returns what l counted.
func (l *Listener) Stats() ListenerStats {
	return ListenerStats{Accepted: l.accepted.Load(), Wakeups: l.wakeups.Load(), Empty: l.empty.Load()}
}
