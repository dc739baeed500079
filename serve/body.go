package serve

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A response body must be the file its header announced. The header gives
// the file's size and mtime as fstat saw them; if the file is written in
// place while the body is being sent (dd conv=notrunc, a cp over it, an
// rsync --inplace), the bytes sent before and after the write belong to two
// versions, and a client that received them all would hold a mix that is
// neither. sendBody looks again before the last chunk: if the file changed,
// the final bytes are not sent and the connection closes, so the client
// sees a short body, never a complete one.
//
// What it cannot see: a change that keeps size, mtime and ctime (only a
// digest of the content could); a change made while the final chunk is
// being sent (it is logged, but the bytes are out); and two changes within
// the file system's timestamp granularity, which leave mtime and ctime
// equal to what the header announced only if the file was last changed in
// that same tick.

// changedError means the file changed (size, mtime or ctime) after its
// response header was sent. The body was cut short before its last chunk.
type changedError struct {
	path        string
	sent, total int64
	what        string // what differs, for the log
}

func (e *changedError) Error() string {
	return fmt.Sprintf("file changed while being sent (%s): %s: sent %d of %d bytes", e.what, e.path, e.sent, e.total)
}

// sendBody sends n bytes of fd from off, the body of a response whose header
// described the file as st, with the configured sender. It sends all but the
// final chunk (at most Options.Chunk bytes), then fstats fd again: if size,
// mtime or ctime differ from st it returns a *changedError without sending
// the rest, and the caller must close the connection. Otherwise it sends the
// rest, and checks once more after, only to log a change (the bytes are
// out). A body of at most one chunk is sent without either check: the
// fstat its header came from was taken just before (two more per small
// response would be most of a 4 KiB request's system calls), and a change
// between the two is no more visible here than one during a last chunk;
// a client that must know checks again after the body (zfetch does).
//
// Its other errors are the sender's: errShort if the file ended early,
// socket errors.
func (c *conn) sendBody(fd int, st *unix.Stat_t, off, n int64, t *transfer) error {
	if n <= 0 {
		return nil
	}
	c.unlead() // the sender may read a disk (leader.go)
	// A file on another file system under the root goes by a mount rule
	// that is not known (a strictatime one updates at every read): none
	// of its sendfile is raw. Nor is any of a body on a strictatime root.
	// On a relatime one, one read makes the access time fresh (doOp),
	// later than the mtime, unless that is in this second or later (a
	// file dated in the future by an archive or another machine's clock:
	// every read updates it then; or one written just now).
	rfs := c.s.root.fs()
	own := st.Dev == rfs.dev
	now := time.Now()
	c.atimeOK = own && atimeStays(rfs, st, now)
	c.atimeFreshens = own && rfs.atime == atimeRelative &&
		st.Mtim.Sec < now.Unix() && st.Ctim.Sec <= now.Unix()
	if n <= c.s.opts.Chunk {
		return c.s.sender.send(c, fd, off, n, t)
	}
	last := c.s.opts.Chunk
	if head := n - last; head > 0 {
		if err := c.s.sender.send(c, fd, off, head, t); err != nil {
			return err
		}
	}
	if what, err := changed(fd, st); err != nil {
		return err
	} else if what != "" {
		return &changedError{path: t.path, sent: t.sent.Load(), total: t.total, what: what}
	}
	if err := c.s.sender.send(c, fd, off+n-last, last, t); err != nil {
		return err
	}
	if what, err := changed(fd, st); err == nil && what != "" {
		c.s.log.Warn("file changed while the last chunk of a response was being sent; the client may hold a mix of two versions",
			"client", c.client, "path", t.path, "sent", t.sent.Load(), "expected", t.total, "changed", what)
	}
	return nil
}

// changed fstats fd and says what differs from st ("" for nothing): the
// size, mtime or ctime, which every write, truncation, chmod, link or
// unlink of the inode moves.
func changed(fd int, st *unix.Stat_t) (string, error) {
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return "", fmt.Errorf("fstat: %w", err)
	}
	var what []string
	if now.Size != st.Size {
		what = append(what, fmt.Sprintf("size %d -> %d", st.Size, now.Size))
	}
	if now.Mtim != st.Mtim {
		what = append(what, "mtime")
	}
	if now.Ctim != st.Ctim {
		what = append(what, "ctime")
	}
	return strings.Join(what, ", "), nil
}
