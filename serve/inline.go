package serve

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
)

// Small files from memory. A response costs a system call for its header
// and one for its body (sendmsg with MSG_MORE, then sendfile); for a file
// of a few KiB the second is a large share of the request's cost. So the
// open-file cache also keeps the bytes of a file of at most inlineMax
// bytes, read once when it is opened, and a response of such a file goes
// out in one sendmsg: header and body, two iovecs. That is a copy (from
// the worker's memory into the socket), not a zero-copy send, whatever
// zero_copy says: zero_copy governs the bodies of larger files.
//
// The bytes are used only while the file's stat (the fresh fstat of the
// request, or the one open_file_cache_valid lets it reuse) is the stat
// they were read under: same inode, size, mtime and ctime, which every
// write moves. A file is read into memory only once its ctime is
// inlineSettle in the past (file timestamps are coarse, so a write in the
// same tick as the one before may leave ctime as it was; the digest cache
// waits the same way), and is fstat'ed after the read: bytes read while
// the file changed are dropped. So a response's body is always the
// version its header describes, even within open_file_cache_valid.

const (
	inlineMax    = 16 << 10 // bytes; larger files go through the sender
	inlineBudget = 4 << 20  // bytes of file contents a worker keeps at most (the worker paces its collector so that they are not doubled: daemon/gcpace.go)
)

// inlineSettle is how old a file's ctime must be before its bytes are
// kept (shortened by tests).
var inlineSettle = 2 * time.Second

// readInline returns the bytes of the regular file fd of root, whose
// fstat is st, if it is small, settled, and read whole under that same
// stat; else nil. If fd's file is on the root's own local mount (own:
// ownMount), raw opens are not off (rootDir.rawOff: what hooks opens may
// hook reads) and the read leaves the file's access time as it is
// (atimeStays), what the page cache holds is read raw
// (rawcall.PreadNowait) and the rest the ordinary way, which may wait for
// the disk.
func (fc *fileCache) readInline(root *rootDir, fd int, st *unix.Stat_t, own bool, now time.Time) []byte {
	if fc.inlineMax <= 0 || st.Size <= 0 || st.Size > fc.inlineMax ||
		now.Sub(time.Unix(st.Ctim.Sec, st.Ctim.Nsec)) < inlineSettle {
		return nil
	}
	fc.mu.Lock()
	ok := fc.inlineUsed+st.Size <= inlineBudget
	fc.mu.Unlock()
	if !ok {
		return nil
	}
	local := own && !root.rawOff.Load() && atimeStays(root.fs(), st, time.Now())
	b := make([]byte, st.Size)
	off := 0
	if local {
		for off < len(b) {
			n, err := rawcall.PreadNowait(fd, b[off:], int64(off))
			if err != nil || n == 0 {
				break // EAGAIN: not cached; anything else: the ordinary read says
			}
			fc.rawReads.Add(1)
			off += n
		}
	}
	for off < len(b) {
		n, err := unix.Pread(fd, b[off:], int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return nil
		}
		off += n
	}
	var after unix.Stat_t
	fstat := unix.Fstat
	if local {
		fstat = rawcall.Fstat
	}
	if fstat(fd, &after) != nil || !sameVersion(st, &after) {
		return nil
	}
	return b
}

// rereadInline is readInline for e, a cached file whose path was just
// looked up again (revalidate) with stat st: its bytes, if it has none
// kept (it was opened, or changed in place, less than inlineSettle before
// its last read) and would have them now; else nil. A file served without
// pause is never closed by the sweep, so without this it would go on
// costing a sendfile per response for as long as it stays in demand. At
// most once per open_file_cache_valid per file, and only for a small one.
func (fc *fileCache) rereadInline(root *rootDir, e *cachedFile, st *unix.Stat_t, now time.Time) []byte {
	fc.mu.Lock()
	has := e.body != nil && sameVersion(&e.bodySt, st) // another version's bytes count as none
	fc.mu.Unlock()
	if has {
		return nil
	}
	return fc.readInline(root, e.fd, st, e.ownMount, now)
}

// keepInlineLocked keeps body, read under st, as e's bytes if e has none
// of that version (another version's, stale, are dropped), is still in
// the cache and the budget allows.
func (fc *fileCache) keepInlineLocked(e *cachedFile, body []byte, st *unix.Stat_t) {
	if body == nil || e.evicted {
		return
	}
	if e.body != nil {
		if sameVersion(&e.bodySt, st) {
			return
		}
		fc.dropInlineLocked(e)
	}
	if fc.inlineUsed+int64(len(body)) > inlineBudget {
		return
	}
	e.body, e.bodySt = body, *st
	fc.inlineUsed += int64(len(body))
}

// sameVersion reports whether two fstats describe the same bytes.
func sameVersion(a, b *unix.Stat_t) bool {
	return a.Dev == b.Dev && a.Ino == b.Ino && a.Size == b.Size && a.Mtim == b.Mtim && a.Ctim == b.Ctim
}

// inline returns the cached bytes of e's file if st, the stat a response
// announces, is the version they were read under; else nil.
func (fc *fileCache) inline(e *cachedFile, st *unix.Stat_t) []byte {
	if e == nil {
		return nil
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if e.body == nil {
		return nil
	}
	if !sameVersion(&e.bodySt, st) {
		fc.dropInlineLocked(e)
		return nil
	}
	return e.body
}

func (fc *fileCache) dropInlineLocked(e *cachedFile) {
	fc.inlineUsed -= int64(len(e.body))
	e.body = nil
}

// fileBody names a response body that is a file's bytes: the transfer
// status shows while it is being sent.
type fileBody struct {
	proto, path   string
	offset, total int64
}

// writeInline sends head and body (not empty), a response and its whole
// body, in one sendmsg if the socket takes them, and the rest as it does.
// It returns how many of the body's bytes were sent, all of them unless
// err. fb says whose bytes body is, for the byte counters and status; it
// is nil for a response that is not a file's (an error's text).
//
// A body sent whole by the first sendmsg, as nearly all are, never shows
// in status (it was in flight for one system call) and costs no transfer
// of its own; one the socket cannot take at once is published as a
// transfer (c.cur) while it waits.
func (c *conn) writeInline(head, body []byte, fb *fileBody) (int, error) {
	c.op = sockOp{kind: opSendmsgv, buf: head, buf2: body, flags: unix.MSG_NOSIGNAL | unix.MSG_DONTWAIT}
	n, err := c.sendNow() // never waits: what waits is published first
	var t *transfer
	switch {
	case err != nil:
	case n == len(head)+len(body):
		c.op.buf, c.op.buf2 = nil, nil
		c.s.countSent(fb, n-len(head))
		return n - len(head), nil
	default:
		if fb != nil {
			t = &transfer{proto: fb.proto, path: fb.path, offset: fb.offset, total: fb.total, start: time.Now()}
			c.cur.Store(t)
			defer c.cur.Store(nil)
		}
		if n == 0 {
			n, err = c.send() // the socket was full: the same sendmsg, waiting
		}
	}
	c.op.buf, c.op.buf2 = nil, nil
	if err != nil {
		return 0, err
	}
	if n < len(head) {
		if err := c.write(head[n:], true); err != nil {
			return 0, err
		}
		n = len(head)
	}
	n -= len(head)
	t.progress(c.s, n)
	w, err := c.writeCounted(body[n:], false)
	t.progress(c.s, w)
	return n + w, err
}

// sendmsgv is one sendmsg of c.op.buf and c.op.buf2, through iovecs kept
// in c.op so that it allocates nothing. Both are the worker's own memory,
// so the call cannot sleep (internal/rawcall).
func (c *conn) sendmsgv(sock int) (int, error) {
	o := &c.op
	o.iov[0].Base, o.iov[1].Base = &o.buf[0], &o.buf2[0]
	o.iov[0].SetLen(len(o.buf))
	o.iov[1].SetLen(len(o.buf2))
	o.msg = unix.Msghdr{Iov: &o.iov[0]}
	o.msg.SetIovlen(len(o.iov))
	return rawcall.Sendmsg(sock, &o.msg, o.flags)
}
