package fetch

import (
	"errors"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Receiving a body on a blocking socket.
//
// Through Go's poller a receive runs the socket dry, parks the goroutine,
// and is woken by the runtime when more arrives: over loopback that is an
// epoll_pwait, a futex or two and a thread switch every ~200 KiB. A
// blocking receive sleeps in the kernel instead and is woken by the data
// itself, as curl's (blocking recvfrom) and the benchmark's minimal
// receiver's are. So a large body, when no rate limit paces it, is
// received with the socket's O_NONBLOCK cleared and out of Go's poller,
// bounded by SO_RCVTIMEO instead of a Go deadline.
//
// O_NONBLOCK belongs to the open file description, so it is set again
// before the connection is used through Go (another request, or the
// keep-alive pool). Closing the Conn (on cancellation) shuts the socket
// down, which wakes the blocked call: a close alone would not.

// blockMin is the smallest body received on a blocking socket; smaller
// ones are not worth the dozen extra system calls (dup, fcntl, setsockopt,
// and net.FileConn's).
const blockMin = 1 << 20

// errNoBlocking: this connection cannot receive on a blocking socket (not
// a socket with a descriptor, or fcntl/setsockopt refused); use the poller.
var errNoBlocking = errors.New("no blocking receive on this connection")

// blockIO is a socket in blocking mode for the length of one body.
type blockIO struct {
	fd    int
	stall time.Duration // no byte for this long is a timeout
	cur   time.Duration // SO_RCVTIMEO as set now
}

// blocking runs fn with the connection's socket in blocking mode and
// SO_RCVTIMEO set to stall, then gives the socket back to Go. It returns
// errNoBlocking, without running fn, if the socket cannot be switched.
//
// The socket is also taken out of Go's poller meanwhile: it would
// otherwise stay registered (edge-triggered) in the runtime's epoll set,
// and every arrival of data would wake a thread parked in epoll_pwait for
// nothing. So fn works on a dup of the descriptor, made outside the
// poller, and the net.Conn is closed (which removes it from the epoll set;
// the dup keeps the socket open); afterwards net.FileConn makes a new one
// from the dup for the keep-alive pool.
func (c *Conn) blocking(stall time.Duration, fn func(*blockIO) error) error {
	raw, err := c.rawConn()
	if err != nil {
		return errNoBlocking
	}
	fd := -1
	if cerr := raw.Control(func(s uintptr) {
		if d, err := unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0); err == nil {
			fd = d
		}
	}); cerr != nil {
		return netErr(cerr)
	}
	if fd < 0 {
		return errNoBlocking
	}
	b := &blockIO{fd: fd, stall: stall}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		unix.Close(fd)
		return errNoBlocking
	}
	if err := b.setTimeout(stall); err != nil {
		unix.Close(fd)
		return errNoBlocking
	}
	// O_NONBLOCK is the open file description's, shared with the
	// net.Conn's descriptor until that is closed below.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_NONBLOCK); err != nil {
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{})
		unix.Close(fd)
		return errNoBlocking
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		unix.Close(fd) // the net.Conn's descriptor is closed: nobody else uses the flags
		return netErr(errClosed)
	}
	old := c.c
	c.blockFD, c.inBlock = fd, true // from now on Close shuts fd down
	c.mu.Unlock()
	old.Close()
	if testHookBlock != nil {
		testHookBlock()
	}

	ferr := fn(b)

	c.mu.Lock()
	c.inBlock = false
	closed := c.closed
	c.mu.Unlock()
	if closed || ferr != nil {
		// Canceled, or the attempt failed: the connection is done for.
		c.broken = true
		unix.Close(fd)
		return ferr
	}
	// Back to Go: SO_RCVTIMEO off; FileConn dups fd (which is blocking,
	// so os.NewFile does not put it in the poller), sets O_NONBLOCK again
	// and registers the new descriptor.
	err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{})
	var nc net.Conn
	if err == nil {
		f := os.NewFile(uintptr(fd), "")
		nc, err = net.FileConn(f)
		f.Close()
	} else {
		unix.Close(fd)
	}
	if err != nil {
		// The body is in; only the connection cannot be kept.
		c.broken = true
		return nil
	}
	c.mu.Lock()
	if c.closed {
		nc.Close()
	} else {
		c.c = nc
	}
	c.mu.Unlock()
	return nil
}

var errClosed = errors.New("connection closed")

// testHookBlock, set by tests, is called once the socket is in blocking mode.
var testHookBlock func()

// setTimeout sets SO_RCVTIMEO to d (at least a microsecond: zero would
// mean none).
func (b *blockIO) setTimeout(d time.Duration) error {
	tv := unix.NsecToTimeval(max(d, time.Microsecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(b.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	b.cur = d
	return nil
}

// again decides about a receiving call that started at start and failed
// with err: EINTR (a signal, which cuts a call with a timeout short even
// under SA_RESTART) is repeated with what is left of the stall timeout;
// EAGAIN means the timeout expired. Otherwise err stands.
func (b *blockIO) again(err error, start time.Time) (bool, error) {
	switch err {
	case unix.EINTR:
		left := b.stall - time.Since(start)
		if left <= 0 {
			return false, os.ErrDeadlineExceeded
		}
		if err := b.setTimeout(left); err != nil {
			return false, err
		}
		return true, nil
	case unix.EAGAIN:
		return false, os.ErrDeadlineExceeded
	}
	return false, err
}

// done puts the full stall timeout back after a call cut short by EINTR.
func (b *blockIO) done() {
	if b.cur != b.stall {
		b.setTimeout(b.stall)
	}
}

// read receives into p: at least one byte, io.EOF-free (0, nil means the
// peer closed), or an error.
func (b *blockIO) read(p []byte) (int, error) {
	start := time.Now()
	for {
		n, err := unix.Read(b.fd, p)
		if err == nil {
			b.done()
			return n, nil
		}
		if again, err := b.again(err, start); !again {
			b.done()
			return 0, err
		}
	}
}

// splice moves up to n bytes from the socket into the pipe's write end pw
// (the pipe is empty, so only the socket can make it wait).
func (b *blockIO) splice(pw int, n int) (int64, error) {
	start := time.Now()
	for {
		got, err := unix.Splice(b.fd, nil, pw, nil, n, unix.SPLICE_F_MOVE)
		if err == nil {
			b.done()
			return got, nil
		}
		if again, err := b.again(err, start); !again {
			b.done()
			return 0, err
		}
	}
}
