package serve

import (
	"time"
)

// Drain stops the server taking more requests: connections between
// requests close now (parked ones from a goroutine of their own, so Drain
// does not wait for them), the others after their current response. A
// connection whose next request had arrived is not between requests: it
// is answered first, parked or not.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connKicked) {
			c.f.SetReadDeadline(time.Unix(1, 0))
		}
	}
	if cs := s.claimParked(); len(cs) > 0 {
		go drainParked(cs) // done callbacks may take the caller's locks
	}
}

// Wait blocks until every connection passed to Run has ended.
func (s *Server) Wait() { s.wg.Wait() }

// Stats are a worker's running totals.
type Stats struct {
	Active         int
	Connections    uint64
	BytesSent      uint64 // body bytes the kernel accepted, both protocols
	HTTPBytesSent  uint64 // of which in HTTP responses
	NativeRequests uint64
	HTTPRequests   uint64
	// Responses by status class (native statuses as NativeStatusCode
	// maps them), refusals of malformed requests included.
	NativeResponses, HTTPResponses Classes
}

// Stats returns the running totals.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	return Stats{Active: n, Connections: s.totalConns.Load(), BytesSent: s.bytesSent.Load(), HTTPBytesSent: s.httpBytes.Load(),
		NativeRequests: s.nativeRequests.Load(), HTTPRequests: s.httpRequests.Load(),
		NativeResponses: s.nativeResp.load(), HTTPResponses: s.httpResp.load()}
}

// Transfers lists the response bodies being sent right now, at most max.
func (s *Server) Transfers(max int) (ts []Transfer, more int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		t := c.cur.Load()
		if t == nil {
			continue
		}
		if len(ts) >= max {
			more++
			continue
		}
		ts = append(ts, Transfer{Protocol: t.proto, Client: c.client, Path: t.path, Offset: t.offset, Total: t.total, Sent: t.sent.Load(), Start: t.start})
	}
	return ts, more
}

// InlineBytes is how many bytes of small files the server keeps in
// memory (inline.go), for the worker's pacing of its collector.
func (s *Server) InlineBytes() int64 {
	s.files.mu.Lock()
	defer s.files.mu.Unlock()
	return s.files.inlineUsed
}
