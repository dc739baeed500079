package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

const (
	maxFile = 64 << 10 // larger files are not loaded
	maxHead = 8 << 10  // a longer request head is answered 400
)

// file is one loaded file with its two ready-made heads.
type file struct {
	head      []byte // 200 OK, keep-alive
	headClose []byte // 200 OK, Connection: close
	body      []byte
}

// load reads every regular file of at most maxFile bytes under root, keyed
// by "/" + its slash-separated path relative to root.
func load(root string) (map[string]*file, error) {
	files := make(map[string]*file)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if info, err := d.Info(); err != nil || info.Size() > maxFile {
			return err
		}
		body, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		head := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\nContent-Type: application/octet-stream\r\n"
		files["/"+filepath.ToSlash(rel)] = &file{
			head:      []byte(head + "\r\n"),
			headClose: []byte(head + "Connection: close\r\n\r\n"),
			body:      body,
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", root, err)
	}
	return files, nil
}

var (
	notFound      = []byte("HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\nnot found\n")
	notFoundClose = []byte("HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nnot found\n")
	badRequest    = []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nbad request\n")
)

// request is what parse makes of one request head.
type request struct {
	path  []byte // without the query
	head  bool   // HEAD rather than GET
	close bool   // the connection closes after the response
}

// parse parses the first request head in b. It returns the head's length
// (0: incomplete, more bytes needed) and ok == false for a head that is
// malformed, too long, unsupported (a method other than GET and HEAD, a
// request body) or incomplete at maxHead bytes.
func parse(b []byte) (req request, n int, ok bool) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return req, 0, len(b) < maxHead
	}
	if end+4 > maxHead {
		return req, 0, false
	}
	n = end + 4
	line, rest, _ := bytes.Cut(b[:end+2], []byte("\r\n"))
	method, line, ok1 := bytes.Cut(line, []byte(" "))
	target, version, ok2 := bytes.Cut(line, []byte(" "))
	if !ok1 || !ok2 || len(target) == 0 || target[0] != '/' {
		return req, n, false
	}
	switch string(method) {
	case "GET":
	case "HEAD":
		req.head = true
	default:
		return req, n, false
	}
	switch string(version) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		req.close = true // no keep-alive for HTTP/1.0: a probe for wrk and curl
	default:
		return req, n, false
	}
	req.path, _, _ = bytes.Cut(target, []byte("?"))
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, found := bytes.Cut(h, []byte(":"))
		if !found || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			return req, n, false
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Connection")):
			for tok := range bytes.SplitSeq(value, []byte(",")) {
				if bytes.EqualFold(bytes.TrimSpace(tok), []byte("close")) {
					req.close = true
				}
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")),
			bytes.EqualFold(name, []byte("Content-Length")) && string(value) != "0":
			return req, n, false
		}
	}
	return req, n, true
}

// respond returns the head and body answering req.
func respond(files map[string]*file, req request) (head, body []byte) {
	f := files[string(req.path)]
	switch {
	case f == nil && req.close:
		head = notFoundClose
	case f == nil:
		head = notFound
	case req.close:
		head, body = f.headClose, f.body
	default:
		head, body = f.head, f.body
	}
	if req.head {
		if f == nil {
			head = head[:len(head)-len("not found\n")]
		}
		body = nil
	}
	return head, body
}
