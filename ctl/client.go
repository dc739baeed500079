package ctl

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"
)

// SocketPath returns the control socket zctl talks to: explicit if set,
// else $ZFS_SERVE_CONTROL, else the first of the default locations that
// exists (ControlPaths: /run, the user's runtime dir, /tmp), else
// the daemon's rule's answer for this user (for the error message).
func SocketPath(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if p := os.Getenv("ZFS_SERVE_CONTROL"); p != "" {
		return p
	}
	return firstExisting(ControlPaths(), DefaultControlPath(), tmpControlPath())
}

// firstExisting returns the first of paths that exists, else fallback.
// A socket at tmp (the /tmp fallback) that cannot be a zfs-serve's
// (notZfsServe) is passed over.
func firstExisting(paths []string, fallback, tmp string) string {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil && notZfsServe(p, tmp) == nil {
			return p
		}
	}
	return fallback
}

// tmpControlPath is this user's control socket in /tmp, the last of the
// user's default places; a variable for tests.
var tmpControlPath = func() string { return controlPath(-1, os.Getuid(), false, "") }

// notZfsServe says why the socket at path, if it is tmp (the /tmp
// fallback, /tmp/zfs-serve-UID/control.sock), cannot be a zfs-serve's:
// its directory is not one zfs-serve makes its socket in (Listen: owned
// by the daemon's user, this user, or root, and writable by nobody
// else). Anyone can make /tmp/zfs-serve-UID first and answer zctl there,
// as a daemon that serves (or drains) while none does, or ahead of the
// system's daemon, which a control_group member's zctl finds after its
// own places. nil for any other path: those are in directories only
// root (/run) or the user (the runtime directory) can write, or chosen
// with -s.
func notZfsServe(path, tmp string) error {
	if path != tmp {
		return nil
	}
	why, err := socketDirProblem(filepath.Dir(path))
	if err != nil || why == "" {
		return nil // no directory: the dial says so
	}
	return fmt.Errorf("control socket %s is not a zfs-serve's: its %s (zfs-serve would not have made it there); remove it, or use -s PATH", path, why)
}

// Timeouts bound how long Client.Do waits for the daemon, so that zctl
// does not hang on one that accepts but never answers (stopped with
// SIGSTOP, or wedged). A zero field means its DefaultTimeouts value.
type Timeouts struct {
	// Answer is the wait for the answer to status, kill and drain, and,
	// with Wait, for each line (progress comes about every 0.5 s).
	Answer time.Duration
	// Reload is the wait for the answer (or first line) of a reload,
	// which comes once the configuration is read (up to 10 s) and the new
	// workers are ready (they have 30 s), and for a reload asked for
	// during another, once both are: twice that, and a margin.
	Reload time.Duration
}

// DefaultTimeouts are what Dial sets.
var DefaultTimeouts = Timeouts{Answer: 10 * time.Second, Reload: 95 * time.Second}

// NoAnswerError means the daemon said nothing for After.
type NoAnswerError struct{ After time.Duration }

func (e *NoAnswerError) Error() string {
	return fmt.Sprintf("no answer from the daemon in %s: is it stopped?", e.After)
}

// Client is one control connection.
type Client struct {
	Timeouts Timeouts

	c  net.Conn
	br *bufio.Reader
}

// Dial connects to the control socket at path.
func Dial(path string) (*Client, error) {
	if len(path) > MaxSocketPath {
		return nil, fmt.Errorf("control socket %s: path is %d bytes long; a unix socket path can have at most %d", path, len(path), MaxSocketPath)
	}
	if err := notZfsServe(path, tmpControlPath()); err != nil {
		return nil, err
	}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		var hint string
		switch {
		case errors.Is(err, os.ErrNotExist):
			hint = " (is zfs-serve running? use -s PATH or ZFS_SERVE_CONTROL to pick another socket)"
		case errors.Is(err, os.ErrPermission):
			hint = " (run as root, as the daemon's user, or as a member of its control_group)"
		}
		return nil, fmt.Errorf("control socket %s: %w%s", path, err, hint)
	}
	return &Client{Timeouts: DefaultTimeouts, c: c, br: bufio.NewReaderSize(c, 64<<10)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// ErrClosed means the daemon closed the connection before a final answer.
var ErrClosed = errors.New("the daemon closed the control connection before answering")

// Do sends req and returns the final response. onProgress (may be nil)
// sees every intermediate "progress" response. A response with ok=false
// is returned as an error carrying the daemon's message. A daemon that
// says nothing for c.Timeouts gets a *NoAnswerError.
func (c *Client) Do(req Request, onProgress func(*Response)) (*Response, error) {
	req.V = Version
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, werr := c.c.Write(append(b, '\n'))
	to := c.Timeouts
	if to.Answer <= 0 {
		to.Answer = DefaultTimeouts.Answer
	}
	if to.Reload <= 0 {
		to.Reload = DefaultTimeouts.Reload
	}
	wait := to.Answer // for the answer, or between lines
	switch req.Cmd {
	case CmdReload:
		wait = to.Reload
	case CmdDigest:
		// The daemon answers when the files are hashed, or at the timeout.
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 {
			d = DefaultDigestTimeout
		}
		wait = d + to.Answer
	}
	for {
		// Even if the write failed, the daemon may have answered before
		// closing (a refused peer): its reason beats "broken pipe".
		if werr != nil {
			wait = time.Second
		}
		c.c.SetReadDeadline(time.Now().Add(wait))
		line, err := readLine(c.br, MaxResponse, "response")
		if err != nil && werr != nil {
			return nil, fmt.Errorf("send request: %w", werr)
		}
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, &NoAnswerError{After: wait}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("read response: %w", err)
		}
		var r Response
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("malformed response: %w", err)
		}
		if r.V != Version {
			return nil, fmt.Errorf("daemon speaks control protocol version %d, zctl %d", r.V, Version)
		}
		if r.Event == EventProgress {
			if onProgress != nil {
				onProgress(&r)
			}
			// The progress of a reload comes every 0.5 s like the
			// others', once the new generation has been started.
			wait = to.Answer
			continue
		}
		if !r.OK {
			return &r, errors.New(r.Error)
		}
		return &r, nil
	}
}
