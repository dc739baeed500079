package main

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in          string
		n           int // -1: the whole input
		ok          bool
		path        string
		head, close bool
	}{
		{in: "GET /a HTTP/1.1\r\n\r\n", n: -1, ok: true, path: "/a"},
		{in: "GET /a?q=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /b", n: 32, ok: true, path: "/a"},
		{in: "HEAD /a HTTP/1.1\r\n\r\n", n: -1, ok: true, path: "/a", head: true},
		{in: "GET /a HTTP/1.1\r\nconnection: Keep-Alive, Close\r\n\r\n", n: -1, ok: true, path: "/a", close: true},
		{in: "GET /a HTTP/1.0\r\n\r\n", n: -1, ok: true, path: "/a", close: true},
		{in: "GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n", n: -1, ok: true, path: "/a"},
		{in: "GET /a HTTP/1.1\r\nHost: x\r\n", n: 0, ok: true},               // incomplete
		{in: "GET /a HTTP/1.1\r\nContent-Length: 3\r\n\r\n", n: -1},          // a body
		{in: "GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", n: -1}, // a body
		{in: "POST /a HTTP/1.1\r\n\r\n", n: -1},
		{in: "GET a HTTP/1.1\r\n\r\n", n: -1},
		{in: "GET /a HTTP/2\r\n\r\n", n: -1},
		{in: "GET /a\r\n\r\n", n: -1},
		{in: "GET /a HTTP/1.1\r\nno colon\r\n\r\n", n: -1},
		{in: "GET /a HTTP/1.1\r\nBad Name: x\r\n\r\n", n: -1},
		{in: "GET /a HTTP/1.1\r\nX: " + strings.Repeat("x", maxHead) + "\r\n\r\n", n: 0},
		{in: "GET /a HTTP/1.1\r\nX: " + strings.Repeat("x", maxHead), n: 0},
	} {
		req, n, ok := parse([]byte(tt.in))
		wantN := tt.n
		if wantN < 0 {
			wantN = len(tt.in)
		}
		if n != wantN || ok != tt.ok || (ok && n > 0 && (string(req.path) != tt.path || req.head != tt.head || req.close != tt.close)) {
			t.Errorf("parse(%.40q) = %+v, %d, %v; want path %q head %v close %v, %d, %v",
				tt.in, req, n, ok, tt.path, tt.head, tt.close, wantN, tt.ok)
		}
	}
}
