// Package httphead parses just enough of an HTTP/1.1 response head for the
// benchmark's clients: the status code, Content-Length and whether the
// server will close the connection. Anything it does not understand (a
// chunked body, no length) is an error: the benchmark's servers all send a
// Content-Length for a static file.
package httphead

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// End is the blank line that ends a head.
var End = []byte("\r\n\r\n")

// Head is a parsed response head.
type Head struct {
	Status        int
	ContentLength int64
	Close         bool // "Connection: close": the server closes after this response
}

// Parse parses a complete head, b up to and including the blank line.
func Parse(b []byte) (Head, error) {
	var h Head
	line, rest, _ := bytes.Cut(b, []byte("\r\n"))
	// "HTTP/1.1 200 OK"
	if !bytes.HasPrefix(line, []byte("HTTP/1.")) || len(line) < 12 || line[8] != ' ' {
		return h, fmt.Errorf("not an HTTP/1.x status line: %.40q", line)
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return h, fmt.Errorf("bad status code in %.40q", line)
	}
	h.Status = code
	h.ContentLength = -1
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return h, fmt.Errorf("bad header line %.40q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 {
				return h, fmt.Errorf("bad Content-Length %q", value)
			}
			h.ContentLength = n
		case bytes.EqualFold(name, []byte("Connection")):
			h.Close = bytes.EqualFold(value, []byte("close"))
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return h, fmt.Errorf("transfer-encoding %q is not supported", value)
		}
	}
	if h.ContentLength < 0 {
		return h, errors.New("response has no Content-Length")
	}
	return h, nil
}

// Request returns a keep-alive GET request for path.
func Request(host, path string) []byte {
	return []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
}
