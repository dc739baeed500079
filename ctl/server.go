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
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
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

	mu     sync.Mutex
	ln     *net.UnixListener
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
func (s *Server) Serve(ln *net.UnixListener) error {
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
		s.conns[c] = false
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Shutdown stops accepting, closes the idle connections, and waits (until
// ctx ends) for the requests being answered; then it cancels the handlers
// still running and closes their connections.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closed = true
	s.init()
	if s.ln != nil {
		s.ln.Close()
	}
	for c, busy := range s.conns {
		if !busy {
			c.Close()
		}
	}
	s.mu.Unlock()
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
		s.Log.Warn("control connection refused", "uid", peer.UID, "pid", peer.PID, "err", err)
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
			reply(&Response{Error: "zfs-serve is shutting down"})
			return
		}
		c.SetReadDeadline(time.Time{})
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
				s.Log.Warn("control request refused", "cmd", req.Cmd, "uid", peer.UID, "pid", peer.PID, "err", err)
				reply(&Response{Error: err.Error()})
				return
			}
		}
		s.Log.Debug("control request", "cmd", req.Cmd, "uid", peer.UID, "pid", peer.PID)
		if req.Cmd != CmdStatus {
			s.Log.Info("control request", "cmd", req.Cmd, "wait", req.Wait, "uid", peer.UID, "pid", peer.PID)
		}
		if err := reply(s.handle(c, &req, reply)); err != nil {
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

func (s *Server) handle(c *net.UnixConn, req *Request, reply func(*Response) error) *Response {
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

// Listen creates the control socket at path: the directory if missing, a
// stale socket file replaced (only after a dial proves nobody answers; a
// file that is not a socket is never removed), mode 0660 and, if gid >= 0,
// group gid.
//
// The socket's directory must be safe (see checkSocketDir): the default
// for an unprivileged user is /tmp/zfs-serve-UID/control.sock, and any
// local user could have created /tmp/zfs-serve-UID first to swap the
// socket for their own or to remove it.
func Listen(path string, gid int) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	// The last component is 0755, not 0700: a control_group member who is
	// not the daemon's user must be able to traverse it to reach the 0660
	// socket. Nobody but its owner can add, remove or rename entries in it.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := checkSocketDir(dir); err != nil {
		return nil, err
	}
	if st, err := os.Lstat(path); err == nil {
		// connect(2) to a file that is not a socket fails with
		// ECONNREFUSED too: without this check a regular file (or a
		// directory, a symlink...) at the configured path would be
		// taken for a stale socket and removed.
		if st.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s exists and is not a socket (%s); refusing to replace it", path, fileKind(st.Mode()))
		}
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another zfs-serve is answering on it", path)
		}
		if !errors.Is(derr, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("control socket %s exists and is not a stale socket: %w", path, derr)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale control socket: %w", err)
		}
	}
	// Create it with 0660 from the start: no window where others could
	// connect, and no chmod afterwards (chmod follows symlinks: between
	// bind and chmod the name could point elsewhere).
	old := syscall.Umask(0o117)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if gid >= 0 {
		// Lchown: never follow a symlink put in the socket's place.
		if err := os.Lchown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("control socket: chown to group %d: %w", gid, err)
		}
	}
	return ln, nil
}

// checkSocketDir refuses a socket directory that someone else could use to
// replace or remove the socket: it must be a real directory (not a
// symlink), owned by the effective uid or root, and if group- or
// other-writable it must be sticky (like /tmp, where others cannot remove
// or rename what is ours).
func checkSocketDir(dir string) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("control socket directory %s: cannot read its owner", dir)
	}
	m, uid, euid := st.Mode(), int(sys.Uid), os.Geteuid()
	var why string
	switch {
	case m.Type() != os.ModeDir:
		why = "is " + fileKind(m) + ", not a directory"
	case uid != euid && uid != 0:
		why = fmt.Sprintf("is owned by uid %d, not by uid %d or root", uid, euid)
		if euid == 0 {
			why = fmt.Sprintf("is owned by uid %d, not by root", uid)
		}
	case m.Perm()&0o022 != 0 && m&os.ModeSticky == 0:
		why = "is writable by group or others and not sticky"
	default:
		return nil
	}
	return fmt.Errorf("control socket directory %s (owner uid %d, mode %v) %s: someone else could replace or remove the socket; remove it or choose another path with --control", dir, uid, m, why)
}

// fileKind names the type of a file mode for error messages.
func fileKind(m os.FileMode) string {
	switch t := m.Type(); {
	case t == 0:
		return "a regular file"
	case t&os.ModeDir != 0:
		return "a directory"
	case t&os.ModeSymlink != 0:
		return "a symbolic link"
	case t&os.ModeNamedPipe != 0:
		return "a FIFO"
	case t&os.ModeDevice != 0:
		return "a device"
	}
	return "mode " + m.String()
}
