package fetch

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/httpx"
	"github.com/zfs-serve/zfs-serve/version"
	"github.com/zfs-serve/zfs-serve/wire"
)

// userAgent is sent with every HTTP request.
var userAgent = "zfetch/" + version.String()

// maxRedirects bounds the redirects followed for one file, as curl's -L
// default (50) is bounded; 10 is what browsers and Go's net/http allow.
const maxRedirects = 10

// endpoint is where a connection goes: a TCP address, with TLS (and the
// name the certificate must have) or without.
type endpoint struct {
	addr string
	tls  bool
	host string // TLS server name
}

func (e endpoint) key() string {
	if e.tls {
		return "tls " + e.addr + " " + e.host
	}
	return e.addr
}

func endpointOf(t Target) endpoint { return endpoint{addr: t.Addr, tls: t.TLS(), host: t.Host()} }

// CertError is a TLS certificate the client does not trust: unknown
// authority, wrong name, expired. It is never retried.
type CertError struct {
	Host string
	Err  error
}

func (e *CertError) Error() string {
	return fmt.Sprintf("TLS certificate of %s not trusted: %v (--cacert FILE trusts another authority, -k trusts any certificate)", e.Host, e.Err)
}
func (e *CertError) Unwrap() error { return e.Err }

// tlsHandshake wraps a connection in TLS and shakes hands. Certificate
// errors become CertError; other handshake failures that are not the
// network's (a server that does not speak TLS) are httpErrors.
func tlsHandshake(ctx context.Context, c *Conn, ep endpoint, base *tls.Config) (*Conn, error) {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = ep.host
	}
	cfg.NextProtos = []string{"http/1.1"}
	tc := tls.Client(c.c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.c.Close()
		var (
			cve *tls.CertificateVerificationError
			uae x509.UnknownAuthorityError
			he  x509.HostnameError
			cie x509.CertificateInvalidError
			rhe tls.RecordHeaderError
			ae  tls.AlertError
		)
		switch {
		case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &he), errors.As(err, &cie):
			return nil, &CertError{Host: ep.host, Err: err}
		case errors.As(err, &rhe):
			return nil, httpErrorf("TLS handshake with %s: the server does not speak TLS", ep.addr)
		case errors.As(err, &ae):
			return nil, httpErrorf("TLS handshake with %s: %v", ep.addr, err)
		}
		return nil, &connError{fmt.Errorf("TLS handshake with %s: %w", ep.addr, err)}
	}
	return &Conn{c: tc}, nil
}

// httpDo sends a request for t and reads the response head. A body is
// left on the connection (its first bytes perhaps already in c.pre) for
// the caller to read or to close the connection on.
func (c *Conn) httpDo(method string, t Target, fields ...string) (*httpResponse, error) {
	req := appendRequest(make([]byte, 0, 512), method, t, fields...)
	if _, err := c.c.Write(req); err != nil {
		return nil, &connError{fmt.Errorf("%s %s: sending the request: %w", method, t, err)}
	}
	resp, err := c.readHead()
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return nil, fmt.Errorf("%s %s: %w", method, t, err)
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, &connError{fmt.Errorf("%s %s: reading the response: %w", method, t, err)}
	}
	c.responses++
	if resp.Code < 200 {
		return nil, httpErrorf("%s %s: unexpected interim response %d", method, t, resp.Code)
	}
	if method == "HEAD" || resp.Code == 204 || resp.Code == 304 {
		resp.NoBody = true // whatever Content-Length says
	}
	if resp.Close {
		c.broken = true
	}
	return resp, nil
}

// readHead reads one response head, skipping 100 Continue and other
// interim responses; bytes read past it are kept in c.pre.
func (c *Conn) readHead() (*httpResponse, error) {
	buf := make([]byte, 0, 4096)
	buf = append(buf, c.pre...)
	c.pre = nil
	for {
		if len(buf) > 0 {
			resp, n, err := parseResponseHead(buf)
			if err == nil {
				rest := buf[n:]
				if resp.Code >= 100 && resp.Code < 200 && resp.Code != 101 {
					buf = append(buf[:0], rest...)
					continue
				}
				if len(rest) > 0 {
					c.pre = rest
				}
				return resp, nil
			}
			if err != errHeadIncomplete {
				return nil, err
			}
		}
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(2*cap(buf), maxRespHead+4096))
			copy(nb, buf)
			buf = nb
		}
		n, err := c.c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && n == 0 {
			if err == io.EOF && len(buf) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// Read reads the connection, bytes already buffered (c.pre) first.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		if len(c.pre) == 0 {
			c.pre = nil
		}
		return n, nil
	}
	return c.c.Read(p)
}

// readSmallBody reads a whole response body of at most max bytes
// (listings, error texts): Content-Length, chunked, or to the close.
func (c *Conn) readSmallBody(resp *httpResponse, max int64) ([]byte, error) {
	var r io.Reader
	var br *bufio.Reader
	switch {
	case resp.NoBody:
		return nil, nil
	case resp.Chunked:
		br = bufio.NewReaderSize(c, 16<<10)
		r = httputil.NewChunkedReader(br)
	case resp.ContentLength >= 0:
		if resp.ContentLength > max {
			return nil, httpErrorf("response body of %d bytes, more than the %d expected", resp.ContentLength, max)
		}
		r = &exactReader{r: c, n: resp.ContentLength}
	default:
		c.broken = true
		r = c
	}
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || isNetErr(err) {
			return nil, &connError{fmt.Errorf("reading the response body: %w", err)}
		}
		return nil, httpErrorf("reading the response body: %v", err)
	}
	if int64(len(b)) > max {
		return nil, httpErrorf("response body longer than %d bytes", max)
	}
	if br != nil {
		// The trailer section, up to its empty line, then what bufio read
		// beyond it goes back to the connection.
		for i := 0; ; i++ {
			l, err := br.ReadSlice('\n')
			if err != nil {
				return nil, &connError{fmt.Errorf("reading the chunked trailer: %w", err)}
			}
			if len(strings.TrimRight(string(l), "\r\n")) == 0 {
				break
			}
			if i > maxRespHeaders {
				return nil, httpErrorf("chunked trailer too long")
			}
		}
		if n := br.Buffered(); n > 0 {
			rest, _ := br.Peek(n)
			c.pre = append([]byte(nil), rest...)
		}
	}
	return b, nil
}

// httpStatusError turns a response that is not a success into a
// StatusError: 404 and 410 not found, 401, 403 and 407 forbidden, 416
// range not satisfiable, 408, 429 and 5xx retryable (with Retry-After),
// other codes refused.
func httpStatusError(t Target, resp *httpResponse, now time.Time) *StatusError {
	st := wire.StatusForbidden
	switch code := resp.Code; {
	case code == 404 || code == 410:
		st = wire.StatusNotFound
	case code == 416:
		st = wire.StatusRangeNotSatisfiable
	case code == 503:
		st = wire.StatusDraining
	case code == 408 || code == 429 || code >= 500:
		st = wire.StatusBusy
	case code == 400:
		st = wire.StatusBadRequest
	}
	e := &StatusError{Status: st, Path: t.Path, HTTP: resp.Code,
		Message: fmt.Sprintf("HTTP %d %s: %s", resp.Code, printableReason(resp), t)}
	if ra := resp.Header.get("retry-after"); ra != "" {
		e.RetryAfter = parseRetryAfter(ra, now)
	}
	return e
}

func printableReason(resp *httpResponse) string {
	r := resp.Reason
	if r == "" {
		return strings.ToLower(httpStatusText(resp.Code))
	}
	if len(r) > 60 {
		r = r[:60]
	}
	return r
}

func httpStatusText(code int) string {
	switch {
	case code == 404:
		return "Not Found"
	case code == 403:
		return "Forbidden"
	case code >= 500:
		return "Server Error"
	}
	return "Error"
}

// maxRetryAfter bounds how long a Retry-After can make zfetch wait at once
// (the retry budget, --retry-for, bounds it too).
const maxRetryAfter = 10 * time.Minute

// parseRetryAfter reads Retry-After (RFC 9110 section 10.2.3): delay
// seconds or an HTTP-date. Anything else, or a date in the past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if n, err := parseDigits(v); err == nil {
		if n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	if t, ok := httpx.ParseHTTPDate(v); ok {
		d := t.Sub(now)
		if d <= 0 {
			return 0
		}
		return min(d, maxRetryAfter)
	}
	return 0
}

// redirectTo checks a redirect from t to loc and returns its target.
// zfetch follows redirects within a scheme and from http to https, never
// from https to http (that would drop the TLS the user asked for).
func redirectTo(t Target, resp *httpResponse) (Target, error) {
	loc := resp.Header.get("location")
	if loc == "" {
		return Target{}, &StatusError{Status: wire.StatusForbidden, Path: t.Path, HTTP: resp.Code,
			Message: fmt.Sprintf("HTTP %d without a Location: %s", resp.Code, t)}
	}
	to, err := t.resolve(loc)
	if err != nil {
		return Target{}, &StatusError{Status: wire.StatusForbidden, Path: t.Path, HTTP: resp.Code,
			Message: fmt.Sprintf("HTTP %d from %s: %v", resp.Code, t, err)}
	}
	if t.Scheme == "https" && to.Scheme == "http" {
		return Target{}, &StatusError{Status: wire.StatusForbidden, Path: t.Path, HTTP: resp.Code,
			Message: fmt.Sprintf("not following the redirect from %s to %s: https to http", t, to)}
	}
	return to, nil
}

func isRedirect(code int) bool {
	return code == 301 || code == 302 || code == 303 || code == 307 || code == 308
}

// identFromHTTP reads a file's identity from a 200 (or 206) response head.
// size is the whole file's size (Content-Length of a 200, the complete
// length of a 206's Content-Range).
func identFromHTTP(loc Target, resp *httpResponse, size int64) (ident, error) {
	if ce := resp.Header.get("content-encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return ident{}, httpErrorf("%s is sent with Content-Encoding %q; zfetch asks for and needs the bytes as they are", loc, ce)
	}
	id := ident{Size: size, ETag: resp.Header.get("etag"), Loc: loc, SHA256: headerSHA256(resp.Header)}
	if lm := resp.Header.get("last-modified"); lm != "" {
		if t, ok := httpx.ParseHTTPDate(lm); ok {
			id.MTime = t.UnixNano()
			id.LastModified = lm
		}
	}
	if strings.EqualFold(strings.TrimSpace(resp.Header.get("accept-ranges")), "none") {
		id.NoRanges = true
	}
	return id, nil
}

// completeLength is the size of the whole file a response describes.
func completeLength(resp *httpResponse) (int64, error) {
	if resp.Code == 206 {
		_, _, total, err := contentRange(resp.Header.get("content-range"))
		if err != nil {
			return 0, httpErrorf("%v", err)
		}
		if total < 0 {
			return 0, httpErrorf("the server does not say the file's size (Content-Range %q)", resp.Header.get("content-range"))
		}
		return total, nil
	}
	if resp.ContentLength < 0 {
		return 0, httpErrorf("the server does not say the file's size (no Content-Length)")
	}
	return resp.ContentLength, nil
}

// httpStatOnce asks for t's identity with HEAD on conn (a GET of its
// first byte when the server does not take HEAD). It returns redirect
// set to the next location when the answer is a redirect.
func (c *Conn) httpStatOnce(t Target, now time.Time) (id ident, redirect *Target, err error) {
	resp, err := c.httpDo("HEAD", t)
	if err != nil {
		return ident{}, nil, err
	}
	if resp.Code == 405 || resp.Code == 501 || (resp.Code == 200 && resp.ContentLength < 0) {
		// No HEAD here: ask for the first byte.
		resp, err = c.httpDo("GET", t, "Range", "bytes=0-0")
		if err != nil {
			return ident{}, nil, err
		}
		if resp.Code == 206 && resp.ContentLength >= 0 && resp.ContentLength <= 1 {
			if _, err := io.ReadFull(&exactReader{r: c, n: resp.ContentLength}, make([]byte, resp.ContentLength)); err != nil {
				return ident{}, nil, &connError{fmt.Errorf("GET %s: %w", t, err)}
			}
		} else {
			c.broken = true // its body is not read
		}
	}
	switch {
	case isRedirect(resp.Code):
		to, err := redirectTo(t, resp)
		if err != nil {
			return ident{}, nil, err
		}
		return ident{}, &to, nil
	case resp.Code == 200 || resp.Code == 206:
		size, err := completeLength(resp)
		if err != nil {
			return ident{}, nil, fmt.Errorf("%s: %w", t, err)
		}
		id, err := identFromHTTP(t, resp, size)
		return id, nil, err
	case resp.Code >= 300 && resp.Code < 400:
		return ident{}, nil, &StatusError{Status: wire.StatusForbidden, Path: t.Path, HTTP: resp.Code,
			Message: fmt.Sprintf("HTTP %d %s: %s", resp.Code, printableReason(resp), t)}
	}
	c.broken = true
	return ident{}, nil, httpStatusError(t, resp, now)
}

// rangeField is the Range value for [off, end).
func rangeField(off, end int64) string {
	return "bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(end-1, 10)
}

// dialEndpoint connects to ep, with TLS if it says so.
func (c *Client) dialEndpoint(ctx context.Context, ep endpoint) (*Conn, error) {
	conn, err := c.opts.Dial(ctx, ep.addr)
	if err != nil {
		return nil, err
	}
	if !ep.tls {
		return conn, nil
	}
	return tlsHandshake(ctx, conn, ep, c.opts.TLS)
}

var _ net.Conn = (*tls.Conn)(nil)
