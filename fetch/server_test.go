package fetch

import (
	"crypto/sha256"
	"io"
	"net"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// fakeServer speaks the wire protocol from an in-memory tree, with hooks
// to inject the failures zfetch must survive.
type fakeServer struct {
	t    testing.TB
	ln   net.Listener
	addr string

	mu    sync.Mutex
	files map[string]*fakeFile // absolute path -> file
	dirs  map[string]int64     // absolute path -> mtime ("/" always exists)
	links map[string]string    // symlink path -> target path
	gets  []wire.Request       // every GET, in order
	// hook, if set, sees each request (n counts from 0) and decides.
	hook func(n int, q wire.Request) fault
	reqs int

	// digests: answer FlagDigest with the data's SHA-256 (wrongDigest:
	// with a wrong one, digestOnGet: only in GET responses); v1: refuse
	// flagged requests like a version 1 server.
	digests, wrongDigest, digestOnGet, v1 bool
	flagged                               atomic.Int64 // requests with flags seen

	sent     atomic.Int64 // body bytes written
	accepted atomic.Int64 // connections accepted
	conns    sync.WaitGroup
	open     map[net.Conn]struct{}
}

type fakeFile struct {
	data  []byte
	mtime int64
}

// fault is what a hook makes the server do with a request.
type fault struct {
	status   wire.Status // non-zero: refuse with this status
	cutAfter int64       // > 0: close the connection after this many body bytes
	hang     bool        // send the header, then nothing
	stallAt  int64       // > 0: send this many body bytes, then nothing
	stalled  func()      // with stallAt: called once those bytes are written
	before   func()      // run before answering (e.g. change the file)
	after    func()      // run after answering (or cutting)
	// tamper, if set, gives the body bytes to send instead of the file's
	// (same length): a file changed while it was being sent.
	tamper func(off int64, body []byte) []byte
	// trickle > 0: send the body a byte at a time, one per trickle.
	trickle time.Duration
}

func newFakeServer(t testing.TB) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, addr: ln.Addr().String(), files: map[string]*fakeFile{},
		dirs: map[string]int64{"/": 1}, links: map[string]string{}, open: map[net.Conn]struct{}{}}
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.conns.Wait()
}

// waitClosed waits until the server has no connection left (so its byte
// count is final).
func (s *fakeServer) waitClosed(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.open)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopListening closes the listener: new connections are refused.
func (s *fakeServer) stopListening() { s.ln.Close() }

func (s *fakeServer) target(p string) Target { return Target{Addr: s.addr, Path: p} }

func (s *fakeServer) put(p string, data []byte, mtime int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[p] = &fakeFile{data: data, mtime: mtime}
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if _, ok := s.dirs[d]; !ok {
			s.dirs[d] = mtime
		}
	}
}

func (s *fakeServer) mkdir(p string, mtime int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirs[p] = mtime
}

func (s *fakeServer) getLog() []wire.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wire.Request(nil), s.gets...)
}

func (s *fakeServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.open[c] = struct{}{}
		s.mu.Unlock()
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			defer func() {
				s.mu.Lock()
				delete(s.open, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serve(c)
		}()
	}
}

func (s *fakeServer) serve(c net.Conn) {
	var hdr [wire.RequestHeaderLen]byte
	for {
		q, err := wire.ReadRequest(c, &hdr)
		if err != nil {
			return
		}
		s.mu.Lock()
		n := s.reqs
		s.reqs++
		hook := s.hook
		if q.Op == wire.OpGet {
			s.gets = append(s.gets, q)
		}
		s.mu.Unlock()
		if q.Flags != 0 {
			s.flagged.Add(1)
			if s.v1 {
				c.Write(wire.AppendResponse(nil, &wire.Response{Status: wire.StatusUnsupportedVersion, Message: "protocol version 2 not supported"}))
				return
			}
		}
		var f fault
		if hook != nil {
			f = hook(n, q)
		}
		if f.before != nil {
			f.before()
		}
		if f.status != 0 {
			c.Write(wire.AppendResponse(nil, &wire.Response{Status: f.status, Message: f.status.String() + ": test"}))
			if f.status.Retryable() {
				return // like the daemon: refuse, then close
			}
			continue
		}
		ok := s.answer(c, q, f)
		if f.after != nil {
			f.after()
		}
		if !ok {
			return
		}
	}
}

func (s *fakeServer) resolve(p string) string {
	if t, ok := s.links[p]; ok {
		return t
	}
	return p
}

func (s *fakeServer) answer(c net.Conn, q wire.Request, f fault) bool {
	s.mu.Lock()
	p := s.resolve(q.Path)
	file, isFile := s.files[p]
	dmt, isDir := s.dirs[p]
	var data []byte
	var mtime int64
	if isFile {
		data, mtime = file.data, file.mtime
	}
	s.mu.Unlock()
	write := func(r wire.Response) bool {
		if r.Status == wire.StatusOK && r.Kind == wire.KindFile && q.Flags&wire.FlagDigest != 0 && s.digests &&
			(q.Op == wire.OpGet || !s.digestOnGet) {
			r.Flags, r.Digest = wire.FlagDigest, sha256.Sum256(data)
			if s.wrongDigest {
				r.Digest[0] ^= 1
			}
		}
		_, err := c.Write(wire.AppendResponse(nil, &r))
		return err == nil
	}
	notFound := wire.Response{Status: wire.StatusNotFound, Message: "not found: " + q.Path}
	switch q.Op {
	case wire.OpStat:
		switch {
		case isFile:
			return write(wire.Response{Kind: wire.KindFile, Size: int64(len(data)), MTime: mtime})
		case isDir:
			return write(wire.Response{Kind: wire.KindDir, MTime: dmt})
		}
		return write(notFound)
	case wire.OpList:
		if !isDir {
			return write(wire.Response{Status: wire.StatusNotDirectory, Message: "not a directory: " + q.Path})
		}
		body := s.list(p)
		if !write(wire.Response{Kind: wire.KindDir, BodyLen: int64(len(body))}) {
			return false
		}
		_, err := c.Write(body)
		return err == nil
	}
	if !isFile {
		return write(notFound)
	}
	size := int64(len(data))
	if q.Offset > size {
		return write(wire.Response{Status: wire.StatusRangeNotSatisfiable, Message: "range not satisfiable"})
	}
	n := size - q.Offset
	if q.Length > 0 && q.Length < n {
		n = q.Length
	}
	if !write(wire.Response{Kind: wire.KindFile, Size: size, MTime: mtime, BodyLen: n}) {
		return false
	}
	if f.hang {
		io.Copy(io.Discard, c) // until the client gives up
		return false
	}
	body := data[q.Offset : q.Offset+n]
	if f.tamper != nil {
		body = f.tamper(q.Offset, body)
	}
	if f.trickle > 0 {
		for i := range body {
			if _, err := c.Write(body[i : i+1]); err != nil {
				return false
			}
			s.sent.Add(1)
			time.Sleep(f.trickle) // the server's pace
		}
		return true
	}
	if f.stallAt > 0 && f.stallAt < n {
		w, _ := c.Write(body[:f.stallAt])
		s.sent.Add(int64(w))
		if f.stalled != nil {
			f.stalled()
		}
		io.Copy(io.Discard, c) // until the client gives up
		return false
	}
	if f.cutAfter > 0 && f.cutAfter < n {
		w, _ := c.Write(body[:f.cutAfter])
		s.sent.Add(int64(w))
		return false
	}
	w, err := c.Write(body)
	s.sent.Add(int64(w))
	return err == nil
}

func (s *fakeServer) list(dir string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	prefix := strings.TrimSuffix(dir, "/") + "/"
	seen := map[string]wire.Entry{}
	add := func(p string, e wire.Entry) {
		rest, ok := strings.CutPrefix(p, prefix)
		if !ok || rest == "" || strings.Contains(rest, "/") {
			return
		}
		e.Name = rest
		seen[rest] = e
	}
	for p, f := range s.files {
		add(p, wire.Entry{Kind: wire.KindFile, Size: int64(len(f.data)), MTime: f.mtime})
	}
	for p, mt := range s.dirs {
		add(p, wire.Entry{Kind: wire.KindDir, MTime: mt})
	}
	for p := range s.links {
		add(p, wire.Entry{Kind: wire.KindSymlink})
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	var b []byte
	for _, n := range names {
		e := seen[n]
		b = wire.AppendEntry(b, &e)
	}
	return b
}
