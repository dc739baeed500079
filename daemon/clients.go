package daemon

import (
	"net"
	"sync"

	"github.com/zfs-serve/zfs-serve/config"
)

// Per-client connection limit (max_connections_per_client). The
// supervisor counts each client address's connections from accept until
// the worker reports the connection done (or dies with it), and answers
// those past the limit busy itself, so one client cannot take all of
// max_connections. Connections are counted by clientKey alone.
//
// On a proxy: listener the socket's peer is the balancer, and the client
// is known only once the worker has read the PROXY header. So there the
// supervisor counts nothing at accept; the worker asks it (msgAdmit) with
// the header's client, the supervisor counts that key as it would have
// at accept and answers (msgAdmitted), and the worker serves the
// connection or answers it busy. A connection is counted once either way,
// and its count ends the same way (reported done, or its worker gone).

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

// setTrusted puts cfg's proxy_trusted in force (validated with the rest
// of the configuration).
func (s *Supervisor) setTrusted(cfg *config.Config) {
	nets, _ := config.ParseTrusted(cfg.ProxyTrusted)
	s.trusted.Store(&nets)
}
