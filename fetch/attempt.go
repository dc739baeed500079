package fetch

import (
	"context"
	"errors"
	"fmt"

	"github.com/zfs-serve/zfs-serve/wire"
)

// attempt fetches what is left of g from w's source over one connection.
// It reports whether it received data that counts as progress.
func (d *download) attempt(ctx context.Context, w *worker, g *segment, r *receiver) (bool, error) {
	start := g.pos.Load()
	if start >= g.end.Load() {
		return false, nil
	}
	r.seg, r.hash = g, d.hash.Load()
	r.add = func(n int64) {
		g.pos.Add(n)
		d.done.Add(n)
		d.received.Add(n)
		w.add(n)
		d.hash.Load().wake(n)
	}
	id, _ := w.src.ident()
	w.begin(d.c.opts.Now())
	err := d.c.withConn(ctx, endpointOf(id.Loc), func(conn *Conn) error {
		pos, end := g.pos.Load(), g.end.Load()
		var bodyOff, bodyLen int64
		var err error
		if id.Loc.IsHTTP() {
			bodyOff, bodyLen, err = d.openHTTP(conn, w.src, id, pos, end)
		} else {
			bodyOff, bodyLen, err = d.openNative(conn, w.src, id, pos, end)
		}
		if err != nil {
			return err
		}
		r.conn = conn
		g.setAbort(func() { conn.Close() })
		defer g.setAbort(nil)
		if skip := pos - bodyOff; skip > 0 {
			if err := r.skip(skip); err != nil {
				return err
			}
		}
		return r.receive(d.mode, pos, bodyOff+bodyLen-pos)
	})
	if err != nil && (errors.Is(err, errSegEnd) || g.pos.Load() >= g.end.Load()) && ctx.Err() == nil {
		// Taken over by another worker (perhaps stopped for being slow):
		// not a failure.
		err = nil
	}
	// An attempt ended for being too slow is no progress, whatever it
	// received: a server that trickles must use up the retries.
	return g.pos.Load() > start && !isSlow(err), err
}

// openNative asks a zfs-serve server for [pos, end) with GET and checks
// that the answer is of the same version of the file. It returns where
// the body starts in the file and its length.
func (d *download) openNative(conn *Conn, s *source, id ident, pos, end int64) (int64, int64, error) {
	ep := endpointOf(id.Loc)
	flags := d.c.digestFlags(ep)
	resp, err := conn.GetFlags(id.Loc.Path, pos, end-pos, flags)
	if err != nil {
		var se *StatusError
		if errors.As(err, &se) && se.Status == wire.StatusRangeNotSatisfiable {
			return 0, 0, &changedError{msg: "the file on the server is now shorter than the bytes already received"}
		}
		if flags != 0 && d.c.olderServer(ep, err) {
			return 0, 0, &connError{fmt.Errorf("GET %s: a version 1 server; asking again without the digest flag", id.Loc)}
		}
		return 0, 0, err
	}
	now := ident{Size: resp.Size, MTime: resp.MTime, SHA256: respSHA256(resp)}
	if why := now.changedFrom(ident{Size: id.Size, MTime: id.MTime, SHA256: id.SHA256}); why != "" {
		return 0, 0, &changedError{msg: fmt.Sprintf("the file changed on the server (%s)", why)}
	}
	d.adoptDigest(s, now.SHA256)
	return pos, resp.BodyLen, nil
}

// openHTTP asks an HTTP server for [pos, end): the whole file with a plain
// GET, else a Range with If-Range (the ETag if strong, else the
// Last-Modified date), so that a changed file comes back whole (200) and
// is seen as changed rather than joined. A 200 to a Range request of the
// same file means the server ignores ranges: the body is used if it
// starts where wanted, else errNoRanges. It returns where the body starts
// in the file and its length.
func (d *download) openHTTP(conn *Conn, s *source, id ident, pos, end int64) (int64, int64, error) {
	loc := id.Loc
	whole := pos == 0 && end == id.Size
	if !whole && !s.ranges() && !d.noRanges {
		// The source said it does not do ranges (Accept-Ranges: none):
		// a part of the file would cost a GET of all of it from the
		// first byte. Ask for nothing: errNoRanges makes the download
		// one stream (run), or drops this source if others are left.
		return 0, 0, errNoRanges
	}
	ranged := !whole && s.ranges() && !d.noRanges
	var fields []string
	if ranged {
		fields = []string{"Range", rangeField(pos, end), "If-Range", id.ifRange()}
	}
	resp, err := conn.httpDo("GET", loc, fields...)
	if err != nil {
		return 0, 0, err
	}
	switch {
	case resp.Code == 206 && ranged:
		first, last, total, err := contentRange(resp.Header.get("content-range"))
		if err != nil {
			conn.broken = true
			return 0, 0, httpErrorf("GET %s: %v", loc, err)
		}
		if total < 0 {
			total = id.Size
		}
		if err := sameHTTPVersion(loc, resp, id, total); err != nil {
			conn.broken = true
			return 0, 0, err
		}
		if first != pos || resp.Chunked || resp.ContentLength != last-first+1 {
			conn.broken = true
			return 0, 0, httpErrorf("GET %s: asked for bytes %d-%d, the server sent %q with Content-Length %d", loc, pos, end-1, resp.Header.get("content-range"), resp.ContentLength)
		}
		d.adoptDigest(s, headerSHA256(resp.Header))
		return first, last - first + 1, nil
	case resp.Code == 200:
		if resp.ContentLength < 0 {
			conn.broken = true
			return 0, 0, httpErrorf("GET %s: the server does not say the file's size (no Content-Length)", loc)
		}
		if err := sameHTTPVersion(loc, resp, id, resp.ContentLength); err != nil {
			conn.broken = true
			return 0, 0, err
		}
		if ranged {
			s.mu.Lock()
			s.noRanges = true
			s.mu.Unlock()
			if pos != 0 {
				conn.broken = true
				return 0, 0, errNoRanges
			}
		}
		d.adoptDigest(s, headerSHA256(resp.Header))
		return 0, resp.ContentLength, nil
	case resp.Code == 416:
		conn.broken = true
		return 0, 0, &changedError{msg: "the file on the server is now shorter than the bytes already received"}
	case isRedirect(resp.Code):
		conn.broken = true
		return 0, 0, &changedError{msg: fmt.Sprintf("%s now redirects to %q", loc, resp.Header.get("location"))}
	case resp.Code == 206:
		conn.broken = true
		return 0, 0, httpErrorf("GET %s: 206 Partial Content to a request without Range", loc)
	}
	conn.broken = true
	return 0, 0, httpStatusError(loc, resp, d.c.opts.Now())
}

// sameHTTPVersion checks a GET response against the file's identity: the
// size, and each validator both have (ETag, Last-Modified, digest).
func sameHTTPVersion(loc Target, resp *httpResponse, was ident, size int64) error {
	now, err := identFromHTTP(loc, resp, size)
	if err != nil {
		return err
	}
	if now.ETag == "" {
		now.ETag = was.ETag
	}
	if now.MTime == 0 {
		now.MTime = was.MTime
	}
	if now.SHA256 == "" {
		now.SHA256 = was.SHA256
	}
	if was.ETag == "" {
		now.ETag = ""
	}
	if was.MTime == 0 {
		now.MTime = 0
	}
	if why := now.changedFrom(was); why != "" {
		return &changedError{msg: fmt.Sprintf("the file changed on the server (%s)", why)}
	}
	return nil
}
