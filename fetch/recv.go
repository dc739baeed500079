package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// RecvMode is how a response body gets from the socket into the output.
type RecvMode string

// Receive modes, as in the C design. Every one writes at the body's offset
// in the output, so each serves ranged (-x) and resumed downloads.
const (
	// RecvCopy reads the socket into a buffer and writes it with pwrite.
	RecvCopy RecvMode = "copy"
	// RecvSplice moves the bytes socket -> pipe -> file with splice(2),
	// never through user memory.
	RecvSplice RecvMode = "splice"
	// RecvMmap sizes the output with ftruncate (after fallocate), maps it
	// and reads the socket straight into the mapping. Only for files:
	// streams (stdout), which cannot be mapped, use splice, or copy into
	// a character device (streamRecv).
	RecvMmap RecvMode = "mmap"
	// RecvAuto is zfetch's choice: splice into files (the fastest measured
	// into a file, docs/ZFETCH.md), and for streams what streamRecv picks.
	RecvAuto RecvMode = "auto"
)

// DefaultRecv is the mode used when none is asked for.
const DefaultRecv = RecvAuto

// ParseRecvMode checks a receive mode's name.
func ParseRecvMode(s string) (RecvMode, error) {
	switch m := RecvMode(s); m {
	case RecvCopy, RecvSplice, RecvMmap, RecvAuto:
		return m, nil
	}
	return "", fmt.Errorf("unknown receive mode %q (want auto, copy, splice or mmap)", s)
}

const (
	copyBuf    = 1 << 20  // copy mode's buffer
	pipeWant   = 1 << 20  // splice mode's pipe size, if the kernel allows
	mmapWindow = 64 << 20 // mmap mode maps the output this much at a time
)

// sink is where bodies go: a regular file written at offsets, or a stream
// (stdout) written in order.
type sink struct {
	f        *os.File
	fd       int
	stream   bool
	noSplice bool // splice into f failed with EINVAL: use read/write for the pipe's contents
}

func newSink(f *os.File, stream bool) *sink {
	return &sink{f: f, fd: int(f.Fd()), stream: stream}
}

func (s *sink) writeAt(b []byte, off int64) error {
	var err error
	if s.stream {
		_, err = s.f.Write(b)
	} else {
		_, err = s.f.WriteAt(b, off)
	}
	if err != nil {
		return &LocalError{Op: "write", Path: s.f.Name(), Err: unwrapPathErr(err)}
	}
	return nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// receiver moves one response body of n bytes from a connection into the
// sink at off, calling add after every piece that is in place. Errors from
// the connection are connErrors; errors from the sink LocalErrors. With a
// segment (seg), it receives no further than the segment's end, which may
// shrink meanwhile (sched.go), and ends with errSegEnd if the body goes on.
type receiver struct {
	seg      *segment // nil: no bound but n
	hash     *hasher  // bytes that pass through memory are offered to it
	ctx      context.Context
	conn     *Conn
	sink     *sink
	lim      *limiter
	stall    time.Duration
	add      func(n int64)
	buf      []byte      // copy mode's buffer, kept across attempts
	blockMin int64       // bodies this long or longer are received on a blocking socket (0: never)
	blk      *blockIO    // set while the socket is in blocking mode
	speed    *speedMeter // the speed floor, if any (speed.go)
}

func (r *receiver) deadline() {
	r.conn.c.SetReadDeadline(time.Now().Add(r.stall))
}

func (r *receiver) receive(mode RecvMode, off, n int64) error {
	if n == 0 {
		return nil
	}
	if r.speed != nil {
		r.speed.start(time.Now())
	}
	if len(r.conn.pre) > 0 {
		// Body bytes that arrived with the response head.
		if err := r.drainPre(&off, &n); err != nil || n == 0 {
			return err
		}
	}
	if r.lim == nil && r.speed == nil && r.blockMin > 0 && n >= r.blockMin {
		// No rate limit to pace the reads, no speed floor to check
		// between them: receive on a blocking socket (block.go), falling
		// back to the poller if it cannot be had.
		err := r.conn.blocking(r.stall, func(b *blockIO) error {
			r.blk = b
			defer func() { r.blk = nil }()
			return r.body(mode, off, n)
		})
		if err != errNoBlocking {
			return err
		}
	}
	return r.body(mode, off, n)
}

func (r *receiver) body(mode RecvMode, off, n int64) error {
	switch {
	case mode == RecvSplice, mode == RecvMmap && r.sink.stream:
		return r.splice(off, n)
	case mode == RecvMmap:
		return r.mmap(off, n)
	}
	return r.copy(off, n)
}

// read receives into p from the socket: through Go (with a deadline) or,
// in blocking mode, with read(2).
func (r *receiver) read(p []byte) (int, error) {
	if r.blk == nil {
		n, err := r.recv(func() (int64, error) {
			n, err := r.conn.c.Read(p)
			return int64(n), err
		})
		return int(n), err
	}
	n, err := r.blk.read(p)
	if err == nil && n == 0 {
		err = io.EOF
	}
	return n, err
}

func netErr(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &connError{fmt.Errorf("receiving: %w", err)}
}

func (r *receiver) copy(off, n int64) error {
	if r.buf == nil {
		r.buf = make([]byte, copyBuf)
	}
	for n > 0 {
		k := r.claim(off, r.lim.chunk(min(int64(len(r.buf)), n)))
		if k == 0 {
			return errSegEnd
		}
		got, err := r.read(r.buf[:k])
		if got > 0 {
			c := r.commit(off, int64(got))
			if werr := r.sink.writeAt(r.buf[:c], off); werr != nil {
				return werr
			}
			r.hash.inline(off, r.buf[:c])
			off += c
			n -= c
			r.add(c)
			if c < int64(got) {
				return errSegEnd
			}
			if lerr := r.lim.take(r.ctx, got); lerr != nil {
				return lerr
			}
		}
		if err != nil && n > 0 {
			return netErr(err)
		}
	}
	return nil
}

// splice: socket -> pipe, then pipe -> output at the offset. The socket's
// readiness comes from Go's poller or, in blocking mode, the socket waits
// itself. The pipe is empty whenever bytes are moved into it, so a
// would-block answer always means the socket has nothing.
func (r *receiver) splice(off, n int64) error {
	var raw syscall.RawConn
	if r.blk == nil {
		var err error
		if raw, err = r.conn.rawConn(); err != nil {
			return r.copy(off, n)
		}
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return &LocalError{Op: "pipe", Path: "for splice", Err: err}
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	capacity, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, pipeWant)
	if err != nil {
		if capacity, err = unix.FcntlInt(uintptr(p[1]), unix.F_GETPIPE_SZ, 0); err != nil {
			capacity = 64 << 10
		}
	}
	for n > 0 {
		k := r.claim(off, r.lim.chunk(min(int64(capacity), n)))
		if k == 0 {
			return errSegEnd
		}
		var in int64
		var err error
		if r.blk != nil {
			in, err = r.blk.splice(p[1], int(k))
		} else {
			in, err = r.recv(func() (int64, error) {
				var in int64
				var serr error
				err := raw.Read(func(fd uintptr) bool {
					for {
						in, serr = unix.Splice(int(fd), nil, p[1], nil, int(k), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
						if serr != unix.EINTR {
							return serr != unix.EAGAIN
						}
					}
				})
				if err == nil {
					err = serr
				}
				return in, err
			})
		}
		if err != nil {
			return netErr(err)
		}
		if in == 0 {
			return netErr(io.EOF)
		}
		c := r.commit(off, in)
		if err := r.drainPipe(p[0], &off, c); err != nil {
			return err
		}
		if c < in {
			return errSegEnd // the rest stays in the pipe, closed with it
		}
		n -= in
		if err := r.lim.take(r.ctx, int(in)); err != nil {
			return err
		}
	}
	return nil
}

// drainPipe moves n bytes from the pipe into the sink at *off.
func (r *receiver) drainPipe(pr int, off *int64, n int64) error {
	s := r.sink
	for n > 0 {
		if s.noSplice {
			if r.buf == nil {
				r.buf = make([]byte, copyBuf)
			}
			buf := r.buf[:min(n, int64(len(r.buf)))]
			got, err := unix.Read(pr, buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil || got == 0 {
				return &LocalError{Op: "read", Path: "splice pipe", Err: err}
			}
			if err := s.writeAt(buf[:got], *off); err != nil {
				return err
			}
			r.hash.inline(*off, buf[:got])
			*off += int64(got)
			n -= int64(got)
			r.add(int64(got))
			continue
		}
		var w int64
		var err error
		if s.stream {
			w, err = unix.Splice(pr, nil, s.fd, nil, int(n), unix.SPLICE_F_MOVE)
		} else {
			o := *off
			w, err = unix.Splice(pr, nil, s.fd, &o, int(n), unix.SPLICE_F_MOVE)
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			// A non-blocking output (a pipe someone made non-blocking):
			// wait until it takes more.
			pfd := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLOUT}}
			if _, perr := unix.Poll(pfd, 1000); perr != nil && perr != unix.EINTR {
				return &LocalError{Op: "poll", Path: s.f.Name(), Err: perr}
			}
			continue
		case err == unix.EINVAL:
			s.noSplice = true // this output cannot take splice; read the pipe instead
			continue
		case err != nil:
			return &LocalError{Op: "write", Path: s.f.Name(), Err: err}
		case w == 0:
			return &LocalError{Op: "write", Path: s.f.Name(), Err: io.ErrShortWrite}
		}
		*off += w
		n -= w
		r.add(w)
	}
	return nil
}

// mmap: the output is already sized (download.prepare); map a window of it
// at a time and read the socket straight into the mapping.
func (r *receiver) mmap(off, n int64) error {
	page := int64(os.Getpagesize())
	for n > 0 {
		base := off &^ (page - 1)
		end := min(base+mmapWindow, off+n)
		mem, err := unix.Mmap(r.sink.fd, base, int(end-base), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return &LocalError{Op: "mmap", Path: r.sink.f.Name(), Err: err}
		}
		err = r.fill(mem[off-base:], &off, &n)
		if uerr := unix.Munmap(mem); err == nil && uerr != nil {
			err = &LocalError{Op: "munmap", Path: r.sink.f.Name(), Err: uerr}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *receiver) fill(p []byte, off, n *int64) error {
	for len(p) > 0 {
		k := r.claim(*off, r.lim.chunk(min(int64(len(p)), copyBuf)))
		if k == 0 {
			return errSegEnd
		}
		got, err := r.read(p[:k])
		if got > 0 {
			if c := r.commit(*off, int64(got)); c < int64(got) {
				return errSegEnd // cannot happen: no takeover in mmap mode
			}
			r.hash.inline(*off, p[:got])
			p = p[got:]
			*off += int64(got)
			*n -= int64(got)
			r.add(int64(got))
			if lerr := r.lim.take(r.ctx, got); lerr != nil {
				return lerr
			}
		}
		if err != nil && len(p) > 0 {
			if errors.Is(err, syscall.EFAULT) {
				// The kernel could not fault in a page of the mapping:
				// out of space, or the file was truncated under us.
				return &LocalError{Op: "receive into mapping of", Path: r.sink.f.Name(), Err: err}
			}
			return netErr(err)
		}
	}
	return nil
}

// rawConn gives the receive modes the socket's descriptor.
func (c *Conn) rawConn() (syscall.RawConn, error) {
	sc, ok := c.c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no descriptor", c.c)
	}
	return sc.SyscallConn()
}

// claim bounds a read of want bytes at off by the segment's end.
func (r *receiver) claim(off, want int64) int64 {
	if r.seg == nil {
		return want
	}
	return r.seg.claim(off, want)
}

// commit bounds got bytes just received at off by the segment's end,
// which a takeover may have moved.
func (r *receiver) commit(off, got int64) int64 {
	if r.seg == nil {
		return got
	}
	return r.seg.commit(off, got)
}

// drainPre writes the body bytes already read with the response head.
func (r *receiver) drainPre(off, n *int64) error {
	for len(r.conn.pre) > 0 && *n > 0 {
		k := r.claim(*off, min(int64(len(r.conn.pre)), *n))
		if k == 0 {
			return errSegEnd
		}
		k = r.commit(*off, k)
		b := r.conn.pre[:k]
		if err := r.sink.writeAt(b, *off); err != nil {
			return err
		}
		r.hash.inline(*off, b)
		r.conn.pre = r.conn.pre[k:]
		*off += k
		*n -= k
		r.add(k)
	}
	if len(r.conn.pre) == 0 {
		r.conn.pre = nil
	}
	return nil
}

// skip reads and drops n bytes of a body: the start of a whole file sent
// by a server that ignores ranges, up to the first byte wanted.
func (r *receiver) skip(n int64) error {
	if r.buf == nil {
		r.buf = make([]byte, copyBuf)
	}
	for n > 0 && len(r.conn.pre) > 0 {
		k := min(int64(len(r.conn.pre)), n)
		r.conn.pre = r.conn.pre[k:]
		n -= k
	}
	for n > 0 {
		got, err := r.read(r.buf[:min(int64(len(r.buf)), n)])
		n -= int64(got)
		if err != nil && n > 0 {
			return netErr(err)
		}
	}
	return nil
}
