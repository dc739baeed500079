package fetch

import (
	"context"
	"sync"
	"time"
)

// pool keeps idle connections per server address, so that a tree of small
// files costs one connection, not one per file.
type pool struct {
	mu     sync.Mutex
	idle   map[string][]*Conn
	max    int // idle connections kept per address
	closed bool
	dial   func(ctx context.Context, addr string) (*Conn, error)
}

func newPool(max int, dial func(ctx context.Context, addr string) (*Conn, error)) *pool {
	return &pool{idle: map[string][]*Conn{}, max: max, dial: dial}
}

// get returns an idle connection to addr (marked reused) or a new one.
func (p *pool) get(ctx context.Context, addr string) (*Conn, error) {
	p.mu.Lock()
	if cs := p.idle[addr]; len(cs) > 0 {
		c := cs[len(cs)-1]
		p.idle[addr] = cs[:len(cs)-1]
		p.mu.Unlock()
		c.reused = true
		return c, nil
	}
	p.mu.Unlock()
	c, err := p.dial(ctx, addr)
	if err != nil {
		return nil, &connError{err}
	}
	return c, nil
}

// put returns a connection whose last response was read completely.
func (p *pool) put(c *Conn) {
	c.SetDeadline(time.Time{})
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || c.broken || len(p.idle[c.addr]) >= p.max {
		c.Close()
		return
	}
	p.idle[c.addr] = append(p.idle[c.addr], c)
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
