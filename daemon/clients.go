package daemon

import (
	"net"
	"sync"
)

// Per-client connection limit (max_connections_per_client). The
// supervisor counts each client address's connections from accept until
// the worker reports the connection done (or dies with it), and answers
// those past the limit busy itself, so one client cannot take all of
// max_connections. Connections are counted by clientKey alone: when the
// PROXY protocol supplies the client's address, it comes through here.

// clientKey is the address a connection is counted by: the peer's IP
// address without its port (so every connection of one host counts
// together), or the whole string if it has no port.
func clientKey(peer string) string {
	host, _, err := net.SplitHostPort(peer)
	if err != nil {
		return peer
	}
	return host
}

// clientCounts is the number of connections in flight of each client key.
type clientCounts struct {
	mu sync.Mutex
	m  map[string]int
}

// acquire counts one more connection of key, unless key has limit
// already; it reports whether it counted it.
func (c *clientCounts) acquire(key string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[key] >= limit {
		return false
	}
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[key]++
	return true
}

// release ends the count of one connection of key.
func (c *clientCounts) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.m[key]; n > 1 {
		c.m[key] = n - 1
	} else {
		delete(c.m, key)
	}
}

// count is key's connections in flight.
func (c *clientCounts) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}
