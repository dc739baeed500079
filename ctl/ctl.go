// Package ctl is zfs-serve's control protocol: the messages zctl and the
// supervisor exchange over the unix control socket, the server side (which
// authorises peers and calls a Handler the daemon implements) and the
// client zctl uses. It does not import the daemon.
//
// Framing: one JSON object per line ("\n"-terminated) in each direction,
// a request at most MaxLine bytes, a response at most MaxResponse. A
// client sends a Request; the server answers with one Response, or, for a
// request with "wait", any number of Responses with "event":"progress"
// followed by one final Response (no event). Every message carries "v":Version. See docs/CONTROL.md.
package ctl

import (
	"context"
	"time"
)

// Version is the control protocol version.
const Version = 1

// MaxLine is the longest request line the server accepts.
const MaxLine = 64 << 10

// MaxResponse is the longest response line the client accepts. A status
// lists every worker and up to 400 transfers per worker, so it easily
// outgrows MaxLine; the client trusts its daemon that far, not further.
const MaxResponse = 64 << 20

// Commands.
const (
	CmdStatus = "status"
	CmdDrain  = "drain"
	CmdKill   = "kill"
	CmdReload = "reload"
	CmdDigest = "digest"
)

// Request is what zctl sends.
type Request struct {
	V       int    `json:"v"`
	Cmd     string `json:"cmd"`
	Wait    bool   `json:"wait,omitempty"`    // drain, reload: stream progress until done
	Timeout string `json:"timeout,omitempty"` // drain: replaces drain_timeout for this drain; digest: how long to wait
	// Paths are digest's files, as clients request them (relative to the
	// served root), at most MaxDigestPaths.
	Paths []string `json:"paths,omitempty"`
}

// Response is what the supervisor answers.
type Response struct {
	V       int     `json:"v"`
	OK      bool    `json:"ok"`
	Event   string  `json:"event,omitempty"` // "progress" on intermediate lines, empty on the final one
	Error   string  `json:"error,omitempty"`
	Message string  `json:"message,omitempty"`
	Status  *Status `json:"status,omitempty"`
	// Digests answer digest: one per path, in the request's order.
	Digests []Digest `json:"digests,omitempty"`
}

// Digest is the outcome for one path of a digest request.
type Digest struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256,omitempty"` // lower-case hex; empty on error
	Size   int64  `json:"size,omitempty"`   // of the version hashed
	Error  string `json:"error,omitempty"`
}

// MaxDigestPaths is the most paths one digest request may name (so that
// the worker's answer fits one channel message); zctl sends more in
// batches.
const MaxDigestPaths = 64

// DefaultDigestTimeout is how long a digest request without a timeout
// waits for the files to be hashed.
const DefaultDigestTimeout = 5 * time.Minute

// EventProgress marks an intermediate response of a waiting request.
const EventProgress = "progress"

// States of the supervisor.
const (
	StateStarting  = "starting"
	StateServing   = "serving"
	StateReloading = "reloading"
	StateDraining  = "draining"
	StateStopping  = "stopping"
)

// Status is the supervisor's answer to "status". Its JSON is a stable
// interface for scripts: fields are added, never renamed or removed.
type Status struct {
	Version    string     `json:"version"`
	State      string     `json:"state"`
	PID        int        `json:"pid"`
	Started    time.Time  `json:"started"`
	Uptime     float64    `json:"uptime_seconds"`
	Config     string     `json:"config"`
	Root       string     `json:"root"`
	ZeroCopy   string     `json:"zero_copy"`
	Generation int        `json:"generation"`
	Control    string     `json:"control"`
	Listeners  []Listener `json:"listeners"`
	Workers    []Worker   `json:"workers"`
	Transfers  []Transfer `json:"transfers"`
	// TransfersOmitted counts transfers left out of Transfers to keep the answer small.
	TransfersOmitted int    `json:"transfers_omitted,omitempty"`
	Totals           Totals `json:"totals"`
	// DrainDeadline is set while draining: when the remaining workers get killed.
	DrainDeadline *time.Time `json:"drain_deadline,omitempty"`
	// LastReload is the outcome of the last reload, "" if none.
	LastReload string `json:"last_reload,omitempty"`
}

// Listener is one listening socket.
type Listener struct {
	Name      string `json:"name"` // "zfs" for file listeners; the FileDescriptorName= of a socket-activated one
	Addr      string `json:"addr"` // the actual address, with the kernel-chosen port
	Activated bool   `json:"activated"`
	// Proxy: every connection must start with a PROXY protocol header
	// (proxy:ADDR, or a socket named proxy*).
	Proxy bool `json:"proxy"`
}

// Worker is one worker process, or a slot waiting for its replacement.
type Worker struct {
	PID         int    `json:"pid"` // 0 while a replacement is pending
	Generation  int    `json:"generation"`
	Slot        int    `json:"slot"`
	State       string `json:"state"` // starting, ready, unresponsive, retiring, draining, killed, restarting
	Active      int    `json:"active"`
	Connections uint64 `json:"connections"` // served: finished and in flight (active)
	BytesSent   uint64 `json:"bytes_sent"`  // body bytes the kernel accepted, not bytes clients received
	// By protocol: requests served, and HTTP's share of bytes_sent.
	NativeRequests uint64     `json:"native_requests"`
	HTTPRequests   uint64     `json:"http_requests"`
	HTTPBytesSent  uint64     `json:"http_bytes_sent"`
	DigestsHashed  uint64     `json:"digests_hashed"` // digests computed by hashing a file
	DigestsLoaded  uint64     `json:"digests_loaded"` // digests loaded from the on-disk cache
	Restarts       int        `json:"restarts"`
	Started        time.Time  `json:"started"`
	LastExit       string     `json:"last_exit,omitempty"` // how the previous worker in this slot ended
	NextStart      *time.Time `json:"next_start,omitempty"`
}

// Transfer is one response body in flight.
type Transfer struct {
	WorkerPID int     `json:"worker_pid"`
	Protocol  string  `json:"protocol"` // "native" or "http"
	Client    string  `json:"client"`
	Path      string  `json:"path"`
	Offset    int64   `json:"offset"`
	Sent      int64   `json:"sent"` // accepted by the kernel so far
	Total     int64   `json:"total"`
	Age       float64 `json:"age_seconds"`
}

// Totals sum the workers.
type Totals struct {
	Workers        int    `json:"workers"`
	Active         int    `json:"active"`
	Connections    uint64 `json:"connections"`
	BytesSent      uint64 `json:"bytes_sent"`
	NativeRequests uint64 `json:"native_requests"`
	HTTPRequests   uint64 `json:"http_requests"`
	HTTPBytesSent  uint64 `json:"http_bytes_sent"`
	DigestsHashed  uint64 `json:"digests_hashed"`
	DigestsLoaded  uint64 `json:"digests_loaded"`
	Restarts       int    `json:"restarts"`
}

// Handler is implemented by the daemon. Each method is called on the
// control connection's goroutine.
type Handler interface {
	Status(ctx context.Context) (*Status, error)
	// Drain starts a graceful exit (timeout 0 = the configured
	// drain_timeout). With progress nil it returns once the drain has
	// started; otherwise it calls progress now and then and returns when
	// the drain is over.
	Drain(ctx context.Context, timeout time.Duration, progress func(*Status)) error
	// Kill ends the daemon now.
	Kill(ctx context.Context) error
	// Reload re-reads the configuration and returns a one-line summary once
	// the new generation serves; with wait, only once the old one is gone.
	Reload(ctx context.Context, wait bool, progress func(*Status)) (string, error)
}

// DigestHandler is implemented by a Handler that answers digest: it
// returns the SHA-256 of each file at paths (request paths), computing
// those not known yet, within timeout; a path that could not be hashed
// in time, or at all, has its Error set. The server answers digest with
// an error if the Handler does not implement it.
type DigestHandler interface {
	Digest(ctx context.Context, paths []string, timeout time.Duration) ([]Digest, error)
}
