package serve

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/internal/rawcall"
)

// A sender moves n bytes of the file fd, from off, to the connection, in
// chunks of at most Options.Chunk bytes so that one fast client cannot
// keep the worker from its other connections, and returns errShort if the
// file ends early.
type sender interface {
	send(c *conn, fd int, off, n int64, t *transfer) error
}

var errShort = errors.New("file ended before the promised length")

func newSender(mode string) (sender, error) {
	switch mode {
	case config.ModeSendfile, "":
		return sendfileSender{}, nil
	case config.ModeSplice:
		return spliceSender{}, nil
	case config.ModeMmap:
		return mmapSender{}, nil
	case config.ModeCopy:
		return copySender{}, nil
	}
	return nil, fmt.Errorf("unknown zero-copy mode %q", mode)
}

// opKind is the socket operation in conn.op.
type opKind uint8

const (
	opSendmsg  opKind = iota // op.buf with op.flags
	opSendfile               // op.len bytes of file op.fd from op.off
	opSplice                 // op.len bytes from pipe op.fd with op.flags
	opSendmsgv               // op.buf then op.buf2 with op.flags (inline.go)
)

// sockOp is the one socket write a connection has in progress. It lives in
// the conn and is run by a method value bound once per connection, so
// sending costs no allocation per call.
type sockOp struct {
	kind  opKind
	buf   []byte
	buf2  []byte
	iov   [2]unix.Iovec
	msg   unix.Msghdr
	flags int
	fd    int
	off   int64
	len   int
	raw   bool // the call cannot sleep (internal/rawcall); for opSendfile, set by each attempt
	armed bool
	n     int
	err   error
}

// send runs c.op, a non-blocking system call that writes to the socket,
// until it makes progress, waiting in the runtime poller while the socket
// is full. send_timeout means "no progress for that long": the write
// deadline is armed only once a call has to wait (a client that keeps up
// costs no timer update), kept fresh while the response keeps waiting,
// and cleared by disarmWrite after the response.
func (c *conn) send() (int, error) {
	if c.rc == nil {
		// Not attached (attach.go): one attempt, and the poller only if
		// the socket is full.
		c.op.armed = false
		c.doOp(uintptr(c.fd))
		if c.op.err != unix.EAGAIN {
			return c.op.n, c.op.err
		}
		c.attach()
		c.armWrite()
	}
	for {
		c.op.armed = !c.wdl.IsZero()
		if c.op.armed {
			c.unlead() // this attempt waits if the socket is full (leader.go)
			c.armWrite()
		}
		if err := c.rc.Write(c.runOp); err != nil {
			return 0, err
		}
		if c.op.err == unix.EAGAIN {
			c.armWrite()
			continue
		}
		return c.op.n, c.op.err
	}
}

// sendNow is one attempt of c.op that never waits: 0 and no error if the
// socket is full. The caller may publish what is about to wait (a
// transfer, inline.go) before send waits for the rest.
func (c *conn) sendNow() (int, error) {
	c.op.armed = false
	if c.rc == nil {
		c.doOp(uintptr(c.fd))
	} else if err := c.rc.Write(c.runOp); err != nil {
		return 0, err
	}
	if c.op.err == unix.EAGAIN {
		return 0, nil
	}
	return c.op.n, c.op.err
}

// doOp is c.runOp: one attempt of c.op. It returns false to wait for the
// socket to become writable, which it does only once the deadline is armed.
func (c *conn) doOp(sock uintptr) bool {
	for {
		switch c.op.kind {
		case opSendmsg:
			c.op.n, c.op.err = c.sendmsg(int(sock))
		case opSendfile:
			// Asked at every attempt, not once per chunk: after a wait
			// for the socket (a slow client, up to send_timeout) the
			// chunk's pages may have left the cache.
			// Not raw while the read may update the file's access time
			// (c.atimeOK): that writes the inode (rawopen.go atimeStays).
			c.op.raw = c.atimeOK && rawcall.Resident(c.op.fd, c.op.off, c.op.len)
			if c.op.raw {
				c.op.n, c.op.err = rawcall.Sendfile(int(sock), c.op.fd, &c.op.off, c.op.len)
				c.s.rawSendfiles.Add(1)
			} else {
				c.op.n, c.op.err = unix.Sendfile(int(sock), c.op.fd, &c.op.off, c.op.len)
				c.s.plainSendfiles.Add(1)
				// On a relatime mount the access time is now fresh (the
				// rule holds it for a day or until the next change); on a
				// strictatime one every read updates it (atimeFreshens
				// false).
				c.atimeOK = c.atimeOK || c.atimeFreshens && c.op.n > 0
			}
		case opSendmsgv:
			c.op.n, c.op.err = c.sendmsgv(int(sock))
		case opSplice:
			c.op.n, c.op.err = rawcall.Splice(c.op.fd, int(sock), c.op.len, c.op.flags)
		}
		if c.op.err == unix.EINTR {
			continue
		}
		// Not armed: come back out to arm the deadline before waiting.
		return c.op.err != unix.EAGAIN || !c.op.armed
	}
}

// corkBody corks the socket (TCP_CORK) for a body of n bytes that takes
// more than one chunk, as nginx's tcp_nopush does for sendfile, and
// returns what uncorks it: the kernel then sends only full segments, and
// the receiver copies fewer, larger ones out of its socket. Uncorking at
// the end of the body pushes its last partial segment at once. A body of
// one chunk goes out in one call and gains nothing.
//
// Not where segments are loopback-sized (corkPays): there the cork makes
// the receivers measured slower (one 1 GiB stream, sendfile mode: curl
// 1.3 against 2.6 GB/s, zsink 2.4 against 3.1; through HAProxy on the same
// host the same speed for a sixth less of the worker's CPU; the splice
// mode likewise; bench/findings.md, tenth round), though curl on loopback
// was what the cork was first measured for (its CPU per GiB -4%, GB/s
// +6%). Over Ethernet-sized segments (a veth at MTU 1500) curl was faster
// corked in the eighth round and slower in the tenth: the cork stays
// there until a real NIC says otherwise.
func (c *conn) corkBody(n int64) (uncork func()) {
	if n <= c.s.opts.Chunk || !corkPays(c.fd) || unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_CORK, 1) != nil {
		return func() {}
	}
	return func() { unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_CORK, 0) }
}

// corkMinSeg is the segment size from which corking costs more than it
// saves. Loopback's are 32-64 KiB (its MTU is 64 KiB; the kernel bounds a
// segment by half the largest window the peer offered); Ethernet's are
// 1448 bytes, 8948 with jumbo frames.
const corkMinSeg = 16 << 10

// corkPays reports whether the connection's segments are small enough for
// the cork to pay (its maximum segment size, TCP_MAXSEG, is below
// corkMinSeg). A socket that cannot say is corked, as before.
func corkPays(fd int) bool {
	mss, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	return err != nil || mss < corkMinSeg
}

// sendmsg is one sendmsg of c.op.buf, through an iovec kept in c.op so
// that it allocates nothing. Raw (internal/rawcall) unless the buffer is a file
// mapping (mmap mode), whose pages may have to come from disk.
func (c *conn) sendmsg(sock int) (int, error) {
	o := &c.op
	if len(o.buf) == 0 {
		return 0, nil
	}
	o.iov[0].Base = &o.buf[0]
	o.iov[0].SetLen(len(o.buf))
	o.msg = unix.Msghdr{Iov: &o.iov[0]}
	o.msg.SetIovlen(1)
	if !o.raw {
		n, _, e := unix.Syscall(unix.SYS_SENDMSG, uintptr(sock), uintptr(unsafe.Pointer(&o.msg)), uintptr(o.flags))
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
	return rawcall.Sendmsg(sock, &o.msg, o.flags)
}

func (c *conn) armWrite() {
	c.wdl = time.Now().Add(c.s.opts.SendTimeout)
	c.f.SetWriteDeadline(c.wdl)
}

func (c *conn) disarmWrite() {
	if !c.wdl.IsZero() {
		c.wdl = time.Time{}
		c.f.SetWriteDeadline(time.Time{})
	}
}

// sendfileSender: file -> socket inside the kernel. Go's own sendfile path
// is not used because it hides the chunking and the short-file case.
type sendfileSender struct{}

func (sendfileSender) send(c *conn, fd int, off, n int64, t *transfer) error {
	defer c.corkBody(n)()
	for n > 0 {
		c.op = sockOp{kind: opSendfile, fd: fd, off: off, len: int(min(n, c.s.opts.Chunk))}
		w, err := c.send()
		off = c.op.off
		if err != nil {
			return err
		}
		if w == 0 {
			return errShort
		}
		n -= int64(w)
		t.progress(c.s, w)
	}
	return nil
}

// spliceSender: file -> pipe -> socket. The pipe is taken from the
// worker's pool for one response and given back empty: kept-alive
// connections hold none between requests (pipe memory is limited per user,
// and past the limit the kernel hands out small pipes).
type spliceSender struct{}

const pipeSize = 1 << 20

// pipePoolSize bounds the idle pipes a worker keeps.
const pipePoolSize = 16

type pipe struct {
	r, w     int
	capacity int
}

func (s *Server) getPipe() (*pipe, error) {
	select {
	case p := <-s.pipes:
		return p, nil
	default:
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	// A bigger pipe means fewer splice calls; the kernel may refuse, which is fine.
	unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, pipeSize)
	capacity, err := unix.FcntlInt(uintptr(fds[1]), unix.F_GETPIPE_SZ, 0)
	if err != nil || capacity <= 0 {
		capacity = 64 << 10
	}
	return &pipe{r: fds[0], w: fds[1], capacity: capacity}, nil
}

// putPipe returns p to the pool if it is empty (the response completed),
// else closes it: bytes left in it belong to a response that failed.
func (s *Server) putPipe(p *pipe, empty bool) {
	if empty {
		select {
		case s.pipes <- p:
			return
		default:
		}
	}
	unix.Close(p.r)
	unix.Close(p.w)
}

func (spliceSender) send(c *conn, fd int, off, n int64, t *transfer) (err error) {
	p, err := c.s.getPipe()
	if err != nil {
		return err
	}
	defer c.corkBody(n)()
	defer func() { c.s.putPipe(p, err == nil) }()
	capacity := p.capacity
	for n > 0 {
		chunk := min(n, int64(capacity), c.s.opts.Chunk)
		// The pipe is empty here, so filling it from a regular file never blocks.
		in, err := unix.Splice(fd, &off, p.w, nil, int(chunk), unix.SPLICE_F_MOVE)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("splice from file: %w", err)
		}
		if in == 0 {
			return errShort
		}
		n -= in
		flags := unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK
		if n > 0 {
			flags |= unix.SPLICE_F_MORE
		}
		for in > 0 {
			c.op = sockOp{kind: opSplice, fd: p.r, len: int(in), flags: flags}
			out, err := c.send()
			if err != nil {
				return err
			}
			in -= int64(out)
			t.progress(c.s, out)
		}
	}
	return nil
}

// mmapSender: map a window of the file and write(2) from it. The kernel
// reads the mapping, so a file truncated under us gives EFAULT (not SIGBUS).
type mmapSender struct{}

var pageSize = int64(os.Getpagesize())

func (mmapSender) send(c *conn, fd int, off, n int64, t *transfer) error {
	for n > 0 {
		chunk := min(n, c.s.opts.Chunk)
		base := off &^ (pageSize - 1)
		delta := off - base
		m, err := unix.Mmap(fd, base, int(delta+chunk), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("mmap: %w", err)
		}
		unix.Madvise(m, unix.MADV_SEQUENTIAL)
		w, err := c.writeBytes(m[delta:], n > chunk, false)
		unix.Munmap(m)
		t.progress(c.s, w)
		if errors.Is(err, unix.EFAULT) {
			return errShort
		}
		if err != nil {
			return err
		}
		off += chunk
		n -= chunk
	}
	return nil
}

// copySender: pread into a buffer and write it, the baseline the zero-copy
// modes are measured against.
type copySender struct{}

const copyBuf = 256 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBuf); return &b }}

func (copySender) send(c *conn, fd int, off, n int64, t *transfer) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := (*bp)[:min(int64(len(*bp)), c.s.opts.Chunk)]
	for n > 0 {
		r, err := unix.Pread(fd, buf[:min(n, int64(len(buf)))], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read file: %w", err)
		}
		if r == 0 {
			return errShort
		}
		if err := c.write(buf[:r], n > int64(r)); err != nil {
			return err
		}
		off += int64(r)
		n -= int64(r)
		t.progress(c.s, r)
	}
	return nil
}
