package serve

import (
	"errors"
	"fmt"
	"time"

	"github.com/zfs-serve/zfs-serve/internal/accesslog"
	"github.com/zfs-serve/zfs-serve/wire"
)

// The native protocol (docs/PROTOCOL.md): a connection's requests, each
// answered in order.

// serveNative serves native requests until the connection ends (false) or
// waits idle to be parked (true). first: the connection's first request
// comes next.
func (c *conn) serveNative(first bool) (park bool) {
	s := c.s
	for n := 0; ; n, first = n+1, false {
		q, err := c.readRequest(first)
		if err == errPark {
			return true
		}
		if err != nil {
			c.res.Outcome = c.readFailed(err)
			return false
		}
		if n > 0 {
			c.unlead() // one client's second request in the leader's turn (leader.go)
		}
		c.res.Requests++
		s.nativeRequests.Add(1)
		logged := s.opts.Access.Enabled()
		if logged {
			c.accessStart, c.accessBytes = time.Now(), c.res.Bytes
		}
		err = c.handle(&q)
		if logged {
			c.accessLogNative(&q)
		}
		if err != nil {
			c.res.Outcome = c.sendFailed(&q, err)
			return false
		}
		if s.draining.Load() {
			c.res.Outcome = OutcomeDrained
			return false
		}
	}
}

// accessLogNative writes q's access-log line.
func (c *conn) accessLogNative(q *wire.Request) {
	now := time.Now()
	c.s.opts.Access.Log(&accesslog.Entry{Time: now, Proto: ProtoNative, Client: c.client, Method: q.Op.String(), Path: q.Path,
		StatusName: c.lastStatus.String(), Bytes: c.res.Bytes - c.accessBytes, Duration: now.Sub(c.accessStart).Round(time.Microsecond)})
}

// handle answers one request. A refusal is a response, not an error: the
// returned error means the connection must close.
func (c *conn) handle(q *wire.Request) error {
	defer c.disarmWrite()
	var err error
	switch q.Op {
	case wire.OpGet:
		err = c.get(q)
	case wire.OpStat:
		c.unlead() // a walk, which may read a disk (leader.go)
		err = c.stat(q)
	case wire.OpList:
		c.unlead()
		err = c.list(q)
	}
	if err == nil {
		return nil
	}
	var re *reqError // escapes (errors.As): only on the error path
	if errors.As(err, &re) {
		if re.status == wire.StatusInternal {
			c.s.log.Error("request failed", "client", c.client, "op", q.Op, "path", q.Path, "err", re.msg)
		}
		return c.writeHeader(&wire.Response{Status: re.status, Kind: re.kind, Message: re.msg}, false)
	}
	return err
}

func (c *conn) get(q *wire.Request) error {
	fd, st, cached, err := c.s.files.open(c.s.root, q.Path, c.unlead)
	if err != nil {
		return err
	}
	defer c.s.files.release(fd, cached)
	size := st.Size
	if q.Offset > size {
		return refuse(wire.StatusRangeNotSatisfiable, "range not satisfiable: offset %d is past the end of %s (%d bytes)", q.Offset, q.Path, size)
	}
	n := size - q.Offset
	if q.Length > 0 && q.Length < n {
		n = q.Length
	}
	resp := wire.Response{Status: wire.StatusOK, Kind: wire.KindFile, Size: size, MTime: mtimeNanos(&st), BodyLen: n}
	if sum, ok := c.s.digestFor(fd, &st, q.Path); ok && q.Flags&wire.FlagDigest != 0 {
		resp.Flags, resp.Digest = wire.FlagDigest, sum
	}
	inline := c.s.files.inline(cached, &st)
	if inline == nil || n == 0 {
		if err := c.writeHeader(&resp, n > 0); err != nil {
			return err
		}
	}
	if n == 0 {
		return nil
	}
	if inline != nil {
		sent, err := c.writeInline(c.appendHeader(&resp), inline[q.Offset:q.Offset+n], &fileBody{proto: ProtoNative, path: q.Path, offset: q.Offset, total: n})
		c.res.Bytes += int64(sent)
		return err
	}
	t := &transfer{proto: ProtoNative, path: q.Path, offset: q.Offset, total: n, start: time.Now()}
	c.cur.Store(t)
	defer c.cur.Store(nil)
	err = c.sendBody(fd, &st, q.Offset, n, t)
	sent := t.sent.Load()
	c.res.Bytes += sent
	if err == errShort {
		err = &shrankError{path: q.Path, sent: sent, total: n}
	}
	c.s.files.staleAfter(cached, err)
	return err
}

func (c *conn) stat(q *wire.Request) error {
	st, err := statPath(c.s.root, q.Path)
	if err != nil {
		return err
	}
	k := kindOf(st)
	resp := wire.Response{Status: wire.StatusOK, Kind: k, Size: st.Size, MTime: mtimeNanos(st)}
	if k != wire.KindFile && k != wire.KindDir {
		resp = wire.Response{Status: wire.StatusNotRegular, Kind: k, Message: fmt.Sprintf("not a regular file: %s is %s", q.Path, describe(k))}
	}
	if k == wire.KindFile && q.Flags&wire.FlagDigest != 0 {
		if sum, ok := c.s.knownDigest(st); ok {
			resp.Flags, resp.Digest = wire.FlagDigest, sum
		}
	}
	return c.writeHeader(&resp, false)
}
