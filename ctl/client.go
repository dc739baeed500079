package ctl

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
)

// SocketPath returns the control socket zctl talks to: explicit if set,
// else $ZFS_SERVE_CONTROL, else the first default location that exists
// (the daemon's rule: /run for root or systemd, the user's runtime dir,
// /tmp), else the rule's answer for this user.
func SocketPath(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if p := os.Getenv("ZFS_SERVE_CONTROL"); p != "" {
		return p
	}
	candidates := []string{config.DefaultControlPath(), config.UserControlPath(), config.SystemControlPath}
	for _, p := range candidates {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return candidates[0]
}

// Client is one control connection.
type Client struct {
	c  net.Conn
	br *bufio.Reader
}

// Dial connects to the control socket at path.
func Dial(path string) (*Client, error) {
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
	return &Client{c: c, br: bufio.NewReaderSize(c, 64<<10)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// ErrClosed means the daemon closed the connection before a final answer.
var ErrClosed = errors.New("the daemon closed the control connection before answering")

// Do sends req and returns the final response. onProgress (may be nil)
// sees every intermediate "progress" response. A response with ok=false
// is returned as an error carrying the daemon's message.
func (c *Client) Do(req Request, onProgress func(*Response)) (*Response, error) {
	req.V = Version
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, werr := c.c.Write(append(b, '\n'))
	for {
		// Even if the write failed, the daemon may have answered before
		// closing (a refused peer): its reason beats "broken pipe".
		if werr != nil {
			c.c.SetReadDeadline(time.Now().Add(time.Second))
		}
		line, err := readLine(c.br, MaxResponse, "response")
		if err != nil && werr != nil {
			return nil, fmt.Errorf("send request: %w", werr)
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
			continue
		}
		if !r.OK {
			return &r, errors.New(r.Error)
		}
		return &r, nil
	}
}
