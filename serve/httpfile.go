package serve

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/httpx"
	"github.com/zfs-serve/zfs-serve/wire"
)

// handleHTTP answers one parsed request. A refusal is a response; the
// returned error means the connection must close.
func (c *conn) handleHTTP() error {
	h := c.http
	r := &h.req
	h.status, h.bytes = 0, 0
	if r.Method != "GET" && r.Method != "HEAD" {
		c.startHead(405)
		c.header("Allow", "GET, HEAD")
		return c.finishError("method " + r.Method + " is not allowed: this server answers GET and HEAD")
	}
	if strings.HasSuffix(r.Path, "/") && !(c.s.opts.Listing && httpx.FormatJSON(r.Query)) {
		// A folder's index file first: a fresh hit of the open-file
		// cache answers "/" and "/docs/" with no lookup of the folder
		// and nothing that waits, as nginx's open_file_cache does. A
		// name under it opens only if the folder is one. Not for
		// "?format=json", a request for the folder's JSON listing
		// (zfetch -r over HTTP), while listings are on.
		if served, err := c.httpIndex(r.Path); served {
			return err
		}
	}
	fd, st, cached, err := c.openHTTP(r.Path, true)
	if err != nil {
		var re *reqError
		if errors.As(err, &re) && re.kind == wire.KindDir {
			return c.httpDir(r.Path)
		}
		return c.httpRefused(err)
	}
	defer c.s.files.release(fd, cached)
	if wantsDir(r.Path) {
		// "file/" and "file/." name a directory that does not exist.
		return c.httpError(404, "not found: "+r.Path+" is a file, not a directory")
	}
	return c.httpCached(fd, &st, cached, r.Path)
}

// httpIndex serves the first of the index files (Options.Index) that is
// a regular file in the folder p, which ends in "/", and reports whether
// one was there.
func (c *conn) httpIndex(p string) (served bool, err error) {
	for _, name := range c.s.opts.Index {
		fd, st, cached, err := c.openHTTP(p+name, false)
		if err != nil {
			continue // not there, or not a regular file: the next one
		}
		defer c.s.files.release(fd, cached)
		return true, c.httpCached(fd, &st, cached, name)
	}
	return false, nil
}

// openHTTP opens the regular file p for an HTTP request, through the
// open-file cache (dirs: openOrDir, a folder remembered as one is refused
// as a directory at once). A HEAD is looked up afresh, never answered
// from the cache: within open_file_cache_valid the cache announces a
// small file's last-seen size and validators (docs/ARCHITECTURE.md), and
// HEAD is how an HTTP client checks a file again after its body (zfetch
// does, as it does with STAT, which is never cached either), which must
// see a change the GET's header did not.
func (c *conn) openHTTP(p string, dirs bool) (int, unix.Stat_t, *cachedFile, error) {
	if c.http.req.Method == "HEAD" {
		fd, st, _, err := openNew(c.s.root, p, c.unlead)
		if err != nil {
			return -1, unix.Stat_t{}, nil, err
		}
		return fd, *st, nil, nil
	}
	if dirs {
		return c.s.files.openOrDir(c.s.root, p, c.unlead)
	}
	return c.s.files.open(c.s.root, p, c.unlead)
}

// httpCached answers a request with the regular file fd, whose stat is st
// and cache entry cached (nil if none), named name (for its media type).
func (c *conn) httpCached(fd int, st *unix.Stat_t, cached *cachedFile, name string) error {
	err := c.httpFile(fd, st, fileType(cached, name), c.s.files.inline(cached, st))
	c.s.files.staleAfter(cached, err)
	return err
}

// fileType is the media type of the file name, from its cache entry when
// it has one.
func fileType(e *cachedFile, name string) string {
	if e != nil {
		return e.ctype
	}
	return httpx.ContentType(name)
}

// wantsDir reports whether p can only name a directory: it ends in "/"
// or in a "." segment.
func wantsDir(p string) bool {
	return strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.")
}

// httpFile answers a request for the regular file fd: conditionals,
// ranges, then the head and the body through the configured sender, or,
// for a body of one range whose bytes are in memory (inline, nil if not:
// inline.go), head and body in one sendmsg. ctype is the file's media type.
func (c *conn) httpFile(fd int, st *unix.Stat_t, ctype string, inline []byte) error {
	h := c.http
	r := &h.req
	size := st.Size
	etag := httpx.ETag(st.Ino, mtimeNanos(st), size)
	mod := time.Unix(st.Mtim.Sec, 0)
	switch httpx.Preconditions(r.IfMatch, r.IfUnmodifiedSince, r.IfNoneMatch, r.IfModifiedSince, etag, mod) {
	case 304:
		c.startHead(304)
		c.validators(etag, mod)
		return c.finishHead(false)
	case 412:
		return c.httpError(412, "precondition failed: "+r.Path+" does not match If-Match or If-Unmodified-Since")
	}
	var ranges []httpx.Range
	if c.s.opts.MaxRanges > 0 && r.Range != "" && httpx.RangeApplies(r.IfRange, etag, mod) {
		rs, err := httpx.ParseRange(r.Range, size, c.s.opts.MaxRanges)
		if errors.Is(err, httpx.ErrUnsatisfiable) {
			c.startHead(416)
			c.header("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			return c.finishError("range not satisfiable: " + r.Path + " has " + strconv.FormatInt(size, 10) + " bytes")
		}
		ranges = rs
	}
	sum, hasSum := c.s.digestFor(fd, st, r.Path)
	head := r.Method == "HEAD"
	switch len(ranges) {
	case 0, 1:
		off, n := int64(0), size
		if len(ranges) == 1 {
			off, n = ranges[0].Start, ranges[0].Length
			c.startHead(206)
			c.header("Content-Range", httpx.ContentRange(ranges[0], size))
		} else {
			c.startHead(200)
		}
		c.header("Content-Type", ctype)
		c.contentLength(n)
		c.fileHeaders(etag, mod)
		c.reprDigest(sum, hasSum)
		if head || n == 0 {
			return c.finishHead(false)
		}
		if inline != nil {
			sent, err := c.writeInline(c.endHead(), inline[off:off+n], &fileBody{proto: ProtoHTTP, path: r.Path, offset: off, total: n})
			c.res.Bytes += int64(sent)
			c.http.bytes += int64(sent)
			return err
		}
		if err := c.finishHead(true); err != nil {
			return err
		}
		t := c.startTransfer(r.Path, off, n)
		defer c.cur.Store(nil)
		return c.sendRange(fd, st, off, n, t)
	}
	mp := httpx.NewMultipart(ranges, size, ctype, httpx.NewBoundary())
	c.startHead(206)
	c.header("Content-Type", mp.ContentType())
	c.contentLength(mp.Length())
	c.fileHeaders(etag, mod)
	c.reprDigest(sum, hasSum)
	if head {
		return c.finishHead(false)
	}
	if err := c.finishHead(true); err != nil {
		return err
	}
	var total int64
	for _, rg := range ranges {
		total += rg.Length
	}
	t := c.startTransfer(r.Path, ranges[0].Start, total)
	defer c.cur.Store(nil)
	for i, rg := range ranges {
		if err := c.write(mp.PartHead(i), true); err != nil {
			return err
		}
		if err := c.sendRange(fd, st, rg.Start, rg.Length, t); err != nil {
			return err
		}
	}
	return c.write(mp.Tail(), false)
}

// startTransfer makes the response body visible to status.
func (c *conn) startTransfer(path string, off, n int64) *transfer {
	t := &transfer{path: path, offset: off, total: n, start: c.http.now(), proto: ProtoHTTP}
	c.cur.Store(t)
	return t
}

// sendRange sends n bytes of fd from off as part of t's body.
func (c *conn) sendRange(fd int, st *unix.Stat_t, off, n int64, t *transfer) error {
	before := t.sent.Load()
	err := c.sendBody(fd, st, off, n, t)
	sent := t.sent.Load() - before
	c.res.Bytes += sent
	c.http.bytes += sent
	if err == errShort {
		return &shrankError{path: t.path, sent: t.sent.Load(), total: t.total}
	}
	return err
}

// fileHeaders adds the headers every file response carries. With
// max_ranges = 0 a Range is ignored, and there is no Accept-Ranges: bytes
// (RFC 9110 section 14.3), which would claim otherwise; nor "none", as
// nginx sends neither (zfetch -x, told "none", fetches the whole file on
// each connection, where a 200 to its first Range makes it fall back to
// one).
func (c *conn) fileHeaders(etag string, mod time.Time) {
	c.validators(etag, mod)
	if c.s.opts.MaxRanges > 0 {
		c.header("Accept-Ranges", "bytes")
	}
	c.header("X-Content-Type-Options", "nosniff")
}

// validators adds Last-Modified and ETag. Last-Modified is never later
// than Date (RFC 9110 section 8.8.2.1): a modification time ahead of the
// clock (a clock skew, an archive's timestamps, or a change made since
// the request started, which Date reports) is sent as Date.
func (c *conn) validators(etag string, mod time.Time) {
	h := c.http
	if now := h.now(); mod.After(now) {
		mod = now
	}
	h.head = append(h.head, "Last-Modified: "...)
	h.head = httpx.AppendHTTPDate(h.head, mod)
	h.head = append(h.head, "\r\nETag: "...)
	h.head = append(h.head, etag...)
	h.head = append(h.head, "\r\n"...)
}

// httpRefused answers a request the file lookup refused.
func (c *conn) httpRefused(err error) error {
	var re *reqError
	if !errors.As(err, &re) {
		return err
	}
	switch re.status {
	case wire.StatusNotFound, wire.StatusNotDirectory:
		return c.httpError(404, re.msg)
	case wire.StatusForbidden, wire.StatusNotRegular:
		return c.httpError(403, re.msg)
	case wire.StatusBusy:
		c.startHead(503)
		c.header("Retry-After", "1")
		return c.finishError(re.msg)
	case wire.StatusBadRequest:
		return c.httpError(400, re.msg)
	}
	c.s.log.Error("request failed", "client", c.client, "method", c.http.req.Method, "path", c.http.req.Path, "err", re.msg)
	return c.httpError(500, re.msg)
}

// startHead begins a response head with its status line, Server and Date.
func (c *conn) startHead(status int) {
	h := c.http
	h.status = status
	b := append(h.head[:0], "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, statusText(status)...)
	b = append(b, "\r\nServer: zfs-serve\r\nDate: "...)
	b = append(b, c.s.date.get(h.now())...)
	h.head = append(b, "\r\n"...)
}

func (c *conn) header(k, v string) {
	h := c.http
	h.head = append(h.head, k...)
	h.head = append(h.head, ": "...)
	h.head = append(h.head, v...)
	h.head = append(h.head, "\r\n"...)
}

func (c *conn) contentLength(n int64) {
	h := c.http
	h.head = append(h.head, "Content-Length: "...)
	h.head = strconv.AppendInt(h.head, n, 10)
	h.head = append(h.head, "\r\n"...)
}

// finishHead ends the head with the Connection header and sends it; more
// says a body follows (MSG_MORE: head and body leave together).
func (c *conn) finishHead(more bool) error {
	return c.write(c.endHead(), more)
}

// endHead ends the head with the Connection header and returns it.
func (c *conn) endHead() []byte {
	h := c.http
	if h.close {
		h.head = append(h.head, "Connection: close\r\n"...)
	} else if h.req.Minor == 0 {
		h.head = append(h.head, "Connection: keep-alive\r\n"...)
	}
	h.head = append(h.head, "\r\n"...)
	return h.head
}

// httpError sends a short text/plain error response.
func (c *conn) httpError(status int, msg string) error {
	c.startHead(status)
	return c.finishError(msg)
}

// finishError ends a head begun by startHead with a text/plain body
// (none for HEAD) saying msg.
func (c *conn) finishError(msg string) error {
	h := c.http
	body := strconv.Itoa(h.status) + " " + statusText(h.status) + ": " + msg + "\n"
	c.header("Content-Type", "text/plain; charset=utf-8")
	c.header("X-Content-Type-Options", "nosniff")
	c.contentLength(int64(len(body)))
	if h.status >= 400 && h.status != 404 && h.status != 403 && h.status != 412 && h.status != 416 && h.status != 405 {
		h.close = true // 400, 431, 5xx...: the connection may be out of step or the server busy
	}
	if h.req.Method == "HEAD" {
		return c.finishHead(false)
	}
	n, err := c.writeInline(c.endHead(), []byte(body), nil) // one sendmsg
	h.bytes += int64(n)                                     // what was sent, if not all
	return err
}
