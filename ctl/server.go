package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/internal/ratelog"
)

// Peer is who is on the other end of a control connection, from the kernel
// (SO_PEERCRED, SO_PEERGROUPS), not from anything the peer says.
type Peer struct {
	PID, UID, GID int
	Groups        []int
}

// PeerOf returns the credentials of c's peer.
func PeerOf(c *net.UnixConn) (Peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var p Peer
	var cerr error
	err = rc.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if cerr != nil {
			return
		}
		p.PID, p.UID, p.GID = int(cred.Pid), int(cred.Uid), int(cred.Gid)
		p.Groups = peerGroups(int(fd))
	})
	if err == nil {
		err = cerr
	}
	return p, err
}

// peerGroups reads SO_PEERGROUPS (the peer's supplementary groups).
func peerGroups(fd int) []int {
	buf := make([]uint32, 64)
	for range 4 {
		n := uint32(len(buf) * 4)
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e == unix.ERANGE {
			buf = make([]uint32, n/4+1)
			continue
		}
		if e != 0 {
			return nil
		}
		out := make([]int, n/4)
		for i := range out {
			out[i] = int(buf[i])
		}
		return out
	}
	return nil
}

// Authorizer decides whether a peer may use the control socket.
type Authorizer func(Peer) error

// Allow returns the standard policy: root, the daemon's own uid, or a
// member (primary or supplementary) of group gid (-1 = no group).
func Allow(selfUID, gid int) Authorizer {
	return func(p Peer) error {
		if p.UID == 0 || p.UID == selfUID {
			return nil
		}
		if gid >= 0 && (p.GID == gid || slices.Contains(p.Groups, gid)) {
			return nil
		}
		if gid >= 0 {
			return fmt.Errorf("permission denied: uid %d is not root, the daemon's uid %d, or in group %d", p.UID, selfUID, gid)
		}
		return fmt.Errorf("permission denied: uid %d is not root or the daemon's uid %d", p.UID, selfUID)
	}
}

// Server answers control requests on a unix listener.
type Server struct {
	Handler   Handler
	Authorize Authorizer
	Log       *slog.Logger
	// ReadTimeout bounds how long a client may take to send a request line.
	ReadTimeout time.Duration
	// MaxConns bounds the connections open at once (0: DefaultMaxConns).
	// One more is answered with an error and closed at once.
	MaxConns int

	refusedLog ratelog.Limiter // refused peers: at most a line a second
	rejectLog  ratelog.Limiter // connections over MaxConns, likewise
	now        func() time.Time

	mu     sync.Mutex
	ln     Acceptor
	conns  map[*net.UnixConn]bool // true while a request is being answered
	wg     sync.WaitGroup
	closed bool
	// ctx is the parent of the handlers' contexts; Shutdown cancels it
	// when its own context ends.
	ctx    context.Context
	cancel context.CancelFunc
}

// init sets up what the zero Server lacks. Call with s.mu held.
func (s *Server) init() {
	if s.conns == nil {
		s.conns = make(map[*net.UnixConn]bool)
	}
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
	}
}

// Serve accepts connections until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve(ln Acceptor) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.init()
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and friends: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.Log.Warn("control accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		if max := s.maxConns(); len(s.conns) >= max {
			s.mu.Unlock()
			s.reject(c, max)
			continue
		}
		s.conns[c] = false
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *Server) maxConns() int {
	if s.MaxConns > 0 {
		return s.MaxConns
	}
	return DefaultMaxConns
}

// Shutdown stops accepting, closes the idle connections, and waits (until
// ctx ends) for the requests being answered; then it cancels the handlers
// still running and closes their connections.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closed = true
	s.init()
	ln := s.ln
	for c, busy := range s.conns {
		if !busy {
			c.Close()
		}
	}
	s.mu.Unlock()
	if ln != nil {
		ln.Close() // outside mu: a Socket's Close may wait for its directory's lock
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
	}
}

// setBusy records whether c is answering a request. It returns false once
// Shutdown has begun: an idle connection then ends instead of reading
// another request.
func (s *Server) setBusy(c *net.UnixConn, busy bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns != nil {
		s.conns[c] = busy
	}
	return true
}

func (s *Server) serveConn(c *net.UnixConn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
		s.wg.Done()
	}()
	enc := json.NewEncoder(c)
	reply := func(r *Response) error {
		r.V = Version
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return enc.Encode(r)
	}
	peer, err := PeerOf(c)
	if err == nil && s.Authorize != nil {
		err = s.Authorize(peer)
	}
	if err != nil {
		s.refusedLog.Log(s.Log, s.clock(), slog.LevelWarn, "control connection refused", "uid", peer.UID, "pid", peer.PID, "err", err)
		// Take the request line first (briefly), so the client is not
		// writing into a closed socket when the refusal arrives.
		c.SetReadDeadline(time.Now().Add(time.Second))
		readLine(bufio.NewReaderSize(c, 512), MaxLine, "request")
		reply(&Response{Error: err.Error()})
		return
	}
	// A buffer one byte larger than the longest line: ReadSlice then
	// reports an over-long line as soon as that many bytes have arrived,
	// rather than when the next (maybe never sent) buffer's worth does.
	br := bufio.NewReaderSize(c, MaxLine+1)
	timeout := s.ReadTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	for {
		if !s.setBusy(c, false) {
			return
		}
		c.SetReadDeadline(time.Now().Add(timeout))
		line, err := readLine(br, MaxLine, "request")
		if err == io.EOF {
			return
		}
		if err != nil {
			reply(&Response{Error: err.Error()})
			return
		}
		if !s.setBusy(c, true) {
			reply(&Response{Error: errShuttingDown})
			return
		}
		c.SetReadDeadline(time.Time{})
		if err := duplicateKey(line); err != nil {
			reply(&Response{Error: "malformed request: " + err.Error()})
			return
		}
		var req Request
		if err := json.Unmarshal(line, &req); err != nil {
			reply(&Response{Error: "malformed request: " + err.Error()})
			return
		}
		if req.V != Version {
			reply(&Response{Error: fmt.Sprintf("unsupported control protocol version %d (this daemon speaks %d)", req.V, Version)})
			return
		}
		if !knownCommand(req.Cmd) {
			// Like any other malformed request: one error, then hang up.
			reply(unknownCommand(req.Cmd))
			return
		}
		// Asked again for every request, not only at connect: a reload
		// that takes a peer's group out of control_group must end its
		// rights on a connection it keeps open too.
		if s.Authorize != nil {
			if err := s.Authorize(peer); err != nil {
				s.refusedLog.Log(s.Log, s.clock(), slog.LevelWarn, "control request refused", "cmd", req.Cmd, "uid", peer.UID, "pid", peer.PID, "err", err)
				reply(&Response{Error: err.Error()})
				return
			}
		}
		s.Log.Debug("control request", "cmd", req.Cmd, "uid", peer.UID, "pid", peer.PID)
		if req.Cmd != CmdStatus {
			s.Log.Info("control request", "cmd", req.Cmd, "wait", req.Wait, "uid", peer.UID, "pid", peer.PID)
		}
		if err := reply(s.handle(&req, reply)); err != nil {
			return
		}
	}
}

// readLine reads one "\n"-terminated line of at most max bytes; what
// ("request", "response") names the line in errors.
func readLine(br *bufio.Reader, max int, what string) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			return nil, fmt.Errorf("%s longer than %d bytes", what, max)
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(line) > 0:
			return nil, fmt.Errorf("truncated %s: no newline before end of stream", what)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, lineTimeout("timed out waiting for a complete " + what + " line")
		}
		return nil, err
	}
}

// lineTimeout is readLine's error at the read deadline: a message for
// people that still is os.ErrDeadlineExceeded to errors.Is.
type lineTimeout string

func (e lineTimeout) Error() string { return string(e) }
func (e lineTimeout) Unwrap() error { return os.ErrDeadlineExceeded }

func (s *Server) handle(req *Request, reply func(*Response) error) *Response {
	s.mu.Lock()
	parent := s.ctx
	s.mu.Unlock()
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	progress := func(st *Status) {
		if reply(&Response{OK: true, Event: EventProgress, Status: st}) != nil {
			cancel() // the client went away; stop waiting for it
		}
	}
	switch req.Cmd {
	case CmdStatus:
		st, err := s.Handler.Status(ctx)
		if err != nil {
			return &Response{Error: err.Error()}
		}
		return &Response{OK: true, Status: st}
	case CmdDrain:
		var d time.Duration
		if req.Timeout != "" {
			var err error
			if d, err = time.ParseDuration(req.Timeout); err != nil || d <= 0 {
				return &Response{Error: fmt.Sprintf("bad timeout %q: want a positive duration like 30s", req.Timeout)}
			}
		}
		var p func(*Status)
		if req.Wait {
			p = progress
		}
		if err := s.Handler.Drain(ctx, d, p); err != nil {
			return &Response{Error: err.Error()}
		}
		if req.Wait {
			return &Response{OK: true, Message: "drained"}
		}
		return &Response{OK: true, Message: "draining"}
	case CmdKill:
		if err := s.Handler.Kill(ctx); err != nil {
			return &Response{Error: err.Error()}
		}
		return &Response{OK: true, Message: "killed"}
	case CmdReload:
		var p func(*Status)
		if req.Wait {
			p = progress
		}
		msg, err := s.Handler.Reload(ctx, req.Wait, p)
		if err != nil {
			return &Response{Error: err.Error()}
		}
		return &Response{OK: true, Message: msg}
	case CmdDigest:
		return s.digest(ctx, req)
	}
	return unknownCommand(req.Cmd)
}

func knownCommand(cmd string) bool {
	switch cmd {
	case CmdStatus, CmdDrain, CmdKill, CmdReload, CmdDigest:
		return true
	}
	return false
}

func unknownCommand(cmd string) *Response {
	return &Response{Error: fmt.Sprintf("unknown command %q (want status, drain, kill, reload or digest)", cmd)}
}
