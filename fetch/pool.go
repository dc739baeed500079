package fetch

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/zfs-serve/zfs-serve/internal/rawcall"
)

// pool keeps idle connections per server address, so that a tree of small
// files costs one connection, not one per file.
type pool struct {
	mu     sync.Mutex
	idle   map[string][]*Conn // by endpoint key
	max    int                // idle connections kept per endpoint
	closed bool
	dial   func(ctx context.Context, ep endpoint) (*Conn, error)
}

func newPool(max int, dial func(ctx context.Context, ep endpoint) (*Conn, error)) *pool {
	return &pool{idle: map[string][]*Conn{}, max: max, dial: dial}
}

// get returns an idle connection to ep (marked reused) or a new one. An
// idle connection with bytes waiting, or closed by the server, is closed
// and passed over: the server sent something after the last response's
// body, which would be read as the answer to the next request (a head,
// even: "HTTP/1.1 200 OK" and an empty line), as Go's net/http drops a
// connection with an "unsolicited response".
func (p *pool) get(ctx context.Context, ep endpoint) (*Conn, error) {
	key := ep.key()
	for {
		p.mu.Lock()
		cs := p.idle[key]
		if len(cs) == 0 {
			p.mu.Unlock()
			return p.dialNew(ctx, ep)
		}
		c := cs[len(cs)-1]
		p.idle[key] = cs[:len(cs)-1]
		p.mu.Unlock()
		if c.spoilt() {
			c.Close()
			continue
		}
		c.reused = true
		return c, nil
	}
}

// spoilt says whether an idle connection has bytes waiting to be read, or
// its end (the server closed it), or an error. Only plain TCP is looked
// at: under TLS, records the server may send at any time (session
// tickets) are not a response.
func (c *Conn) spoilt() bool {
	tc, ok := c.c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return true
	}
	waiting := false
	err = rc.Control(func(fd uintptr) { waiting = rawcall.Waiting(int(fd)) })
	return err != nil || waiting
}

// dialNew returns a new connection to ep, never an idle one.
func (p *pool) dialNew(ctx context.Context, ep endpoint) (*Conn, error) {
	c, err := p.dial(ctx, ep)
	if err != nil {
		var ce *CertError
		var he *httpError
		if errors.As(err, &ce) || errors.As(err, &he) {
			return nil, err
		}
		var cerr *connError
		if errors.As(err, &cerr) {
			return nil, err
		}
		return nil, &connError{err}
	}
	c.key = ep.key()
	return c, nil
}

// put returns a connection whose last response was read completely.
func (p *pool) put(c *Conn) {
	c.SetDeadline(time.Time{})
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || c.broken || len(p.idle[c.key]) >= p.max || len(c.pre) > 0 {
		c.Close()
		return
	}
	p.idle[c.key] = append(p.idle[c.key], c)
}

// close closes every idle connection; later puts close theirs.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, cs := range p.idle {
		for _, c := range cs {
			c.Close()
		}
	}
	p.idle = nil
}
