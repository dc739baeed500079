package daemon

import (
	"errors"
	"log/slog"
	"math"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/internal/rawcall"
	"github.com/zfs-serve/zfs-serve/wire"
)

// acceptLoop accepts connections on l and hands them to workers until l is
// closed. It uses accept4 directly: the supervisor never needs a Go
// net.Conn for a connection it only passes on, and the fd arrives
// non-blocking and close-on-exec.
func (s *Supervisor) acceptLoop(l *listener) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		s.log.Error("listener", "addr", l.addr, "err", err)
		return
	}
	d := &dispatcher{s: s}
	var delay time.Duration
	for {
		var aerr error
		leave := false
		// Each batch is accepted and handed over inside Read, which waits
		// in the poller when the batch ended at EAGAIN: its wait keeps a
		// readiness edge that came meanwhile (the poller is edge-triggered
		// and remembers one that came while nobody waited), so a
		// connection queued during the handoff ends the wait at once, and
		// no accept4 is spent finding an empty queue after every batch.
		// A new Read would forget that edge (prepareRead resets it) and
		// so must call accept4 before it waits: Read returns only for
		// what its wait cannot do, a back-off after an error, a batch
		// that maxBatch cut short, or leaving a SO_REUSEPORT group.
		err := rc.Read(func(fd uintptr) bool {
			d.from(l) // here: a reload may change it while Read waits
			aerr = d.accept(int(fd))
			if len(d.fds) > 0 {
				// Close waits for this to return: nothing here may wait
				// for the loop, which closes listeners (hence leave).
				d.distribute()
				if w := l.watch.Load(); w != nil && w.accepted(time.Now()) {
					leave = true
				}
			}
			if s.afterBatch != nil {
				s.afterBatch()
			}
			return aerr != nil || leave || !d.drained
		})
		if leave {
			s.post(evLeaveGroup{l})
		}
		if err != nil {
			if !l.closed.Load() {
				s.log.Error("accept loop ended", "addr", l.addr, "err", err)
			}
			return
		}
		if aerr != nil {
			// EMFILE, ENFILE, ENOBUFS: back off rather than spin on a
			// listener that stays readable.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Error("accept failed", "addr", l.addr, "err", aerr, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
	}
}

// accept accepts up to maxBatch connections on the listening socket fd
// into d.fds (replacing what was there), until EAGAIN. It returns the
// error that stopped it otherwise: EMFILE, ENFILE, ENOBUFS.
func (d *dispatcher) accept(fd int) error {
	d.fds, d.peers, d.at = d.fds[:0], d.peers[:0], d.at[:0]
	d.drained = false
	for len(d.fds) < maxBatch {
		// Raw (internal/rawcall), and not x/sys/unix's Accept4, which asks every
		// accepted socket for SO_PROTOCOL to decode its address: one
		// more system call per connection on the thread that accepts
		// for everyone.
		nfd, e := rawcall.Accept4(fd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, &d.rsa)
		switch e {
		case nil:
			ap, ip := rawcall.AddrPort(&d.rsa)
			if d.trusted != nil && !(ip && trustedAddr(ap.Addr(), d.trusted)) && !fromSelf(nfd, rawcall.Sockaddr(&d.rsa)) {
				syscall.Close(nfd)
				d.s.metrics.accepted.Add(1)
				d.s.metrics.refuse(refusedUntrusted, 1)
				d.s.untrustedLog.Log(d.s.log, time.Now(), slog.LevelWarn, "connection to a proxy listener from outside proxy_trusted; closed",
					"client", sockaddrString(rawcall.Sockaddr(&d.rsa)))
				continue
			}
			d.fds = append(d.fds, nfd)
			d.at = append(d.at, time.Now())
			if ip {
				d.peers = append(d.peers, addrPortString(ap))
			} else {
				d.peers = append(d.peers, sockaddrString(rawcall.Sockaddr(&d.rsa)))
			}
			continue
		case syscall.EINTR, syscall.ECONNABORTED:
			continue
		case syscall.EAGAIN:
			d.drained = true
			return nil
		}
		return e
	}
	return nil
}

// dispatcher holds one accept loop's scratch space.
type dispatcher struct {
	s      *Supervisor
	fds    []int
	peers  []string
	keys   []string // per fd: its client key if counted per client, else ""
	assign []int    // per fd: index in ws of its worker, -1 if refused
	metas  []connMeta
	mkeys  []string // client keys of metas
	msg    []byte
	load   []int64
	room   []int64 // per worker: connections its descriptors still have room for
	idx    []int   // indices in fds of the batch sent to one worker
	rr     int
	httpOn bool
	// rsa: the last accepted connection's peer, raw
	rsa syscall.RawSockaddrAny
	// drained: the last accept stopped at EAGAIN, so the queue was empty
	drained bool
	// at is when each of fds was accepted (handoff latency, metrics.go).
	at []time.Time
	// of the listener accepted from: every connection starts with a PROXY
	// header (proxy), and comes from one of these networks (trusted, nil:
	// any; only on proxy listeners)
	proxy   bool
	trusted []netip.Prefix
}

// from sets what d needs to know of l, which a reload may change.
func (d *dispatcher) from(l *listener) {
	d.proxy, d.trusted = l.proxy.Load(), nil
	if d.proxy {
		if t := d.s.trusted.Load(); t != nil && len(*t) > 0 {
			d.trusted = *t
		}
	}
}

// fromSelf reports whether the connection fd, from sa, comes from this
// machine itself: its source is the address it connected to. Such a
// connection is trusted on every proxy listener: a new instance's
// takeover probe (takeover.go) comes so, and nothing from elsewhere can
// (a TCP handshake from a forged source address cannot complete).
func fromSelf(fd int, sa syscall.Sockaddr) bool {
	local, err := syscall.Getsockname(fd)
	if err != nil {
		return false
	}
	switch l := local.(type) {
	case *syscall.SockaddrInet4:
		p, ok := sa.(*syscall.SockaddrInet4)
		return ok && p.Addr == l.Addr
	case *syscall.SockaddrInet6:
		p, ok := sa.(*syscall.SockaddrInet6)
		return ok && p.Addr == l.Addr
	}
	return false
}

// trusted reports whether sa is in one of the networks (an IPv4-mapped
// IPv6 address is matched as IPv4).
func trusted(sa syscall.Sockaddr, nets []netip.Prefix) bool {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return trustedAddr(netip.AddrFrom4(sa.Addr), nets)
	case *syscall.SockaddrInet6:
		return trustedAddr(netip.AddrFrom16(sa.Addr), nets)
	}
	return false
}

// trustedAddr reports whether a is in one of the networks (an IPv4-mapped
// IPv6 address is matched as IPv4).
func trustedAddr(a netip.Addr, nets []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Refusals by the supervisor, each naming what it ran out of.
const (
	busyNoWorker  = "busy: no worker is ready, retry shortly"
	busyMaxConns  = "busy: max_connections reached, retry shortly"
	busyPerClient = "busy: too many connections from your address, retry shortly"
	busyNoFDs     = "busy: every worker is at its open-file limit, retry shortly"
	busyHandoff   = "busy: no worker could take the connection, retry shortly"
)

// distribute hands the accepted fds to workers, least loaded first, one
// message per worker, and closes the supervisor's copies: after this, only
// a worker holds each connection.
func (d *dispatcher) distribute() {
	s := d.s
	ws := *s.dispatch.Load()
	// Refused ones were closed by refuse, and are -1 here. Consecutive
	// descriptors, as accept4 usually gives a batch, close in one call.
	defer rawcall.CloseAll(d.fds)
	d.httpOn = s.httpOn.Load()
	s.metrics.accepted.Add(uint64(len(d.fds)))
	if len(ws) == 0 {
		st, msg := wire.StatusBusy, busyNoWorker
		if s.loadState().exiting() {
			st, msg = wire.StatusDraining, "draining: the server is shutting down, retry shortly"
		}
		s.metrics.refuse(noWorkerReason(st), len(d.fds))
		for i, fd := range d.fds {
			refuse(fd, st, msg, d.httpOn, d.proxy)
			d.fds[i] = -1
		}
		return
	}
	// max_connections, then the client's own limit: the first refusals
	// say which was hit.
	room := s.maxConns.Load() - s.inflight.Load()
	limit := int(s.perClient.Load())
	d.keys = d.keys[:0]
	for i, fd := range d.fds {
		key := ""
		switch {
		case room <= 0:
			s.metrics.refuse(refusedMaxConns, 1)
			refuse(fd, wire.StatusBusy, busyMaxConns, d.httpOn, d.proxy)
			d.fds[i] = -1
		case limit > 0 && !d.proxy:
			// On a proxy listener the peer is the balancer: the worker asks
			// once the header has named the client (connAdmit).
			key = clientKey(d.peers[i])
			if !s.clients.acquire(key, limit) {
				s.metrics.refuse(refusedPerClient, 1)
				refuse(fd, wire.StatusBusy, busyPerClient, d.httpOn, d.proxy)
				d.fds[i], key = -1, ""
			}
		}
		if d.fds[i] >= 0 {
			room--
		}
		d.keys = append(d.keys, key)
	}
	d.load, d.room = d.load[:0], d.room[:0]
	for _, w := range ws {
		d.load = append(d.load, w.active.Load())
		d.room = append(d.room, w.room())
	}
	// Assign each connection to the least-loaded worker with room for it,
	// counting the ones assigned in this batch, then send one message per
	// worker. Ties go round-robin, so idle workers share short connections
	// evenly.
	d.assign = d.assign[:0]
	for i := range d.fds {
		d.assign = append(d.assign, -1)
		if d.fds[i] < 0 {
			continue
		}
		d.rr++
		best := -1
		for k := range d.load {
			j := (d.rr + k) % len(d.load)
			if d.room[j] > 0 && (best < 0 || d.load[j] < d.load[best]) {
				best = j
			}
		}
		if best < 0 {
			s.metrics.refuse(refusedNoFDs, 1)
			d.refuse(i, busyNoFDs)
			continue
		}
		d.assign[i] = best
		d.load[best]++
		d.room[best]--
	}
	var flags byte
	if d.proxy {
		flags = connProxy
		if limit > 0 {
			flags |= connAdmit
		}
	}
	// The worker may report a connection done lazily (worker.go outbox)
	// unless the count of it matters soon: per-client limits are on, or
	// max_connections or its worker's descriptors are half used.
	if limit == 0 && 2*(s.inflight.Load()+int64(len(d.fds))) < s.maxConns.Load() {
		flags |= connLazy
	}
	for j := range ws {
		var fds []int
		d.metas, d.mkeys, d.idx = d.metas[:0], d.mkeys[:0], d.idx[:0]
		f := flags
		if c := ws[j].capacity.Load(); c > 0 && 2*(c-d.room[j]) >= c {
			f &^= connLazy
		}
		for i, a := range d.assign {
			if a == j {
				fds = append(fds, d.fds[i])
				d.idx = append(d.idx, i)
				d.metas = append(d.metas, connMeta{id: s.connSeq.Add(1), flags: f, client: d.peers[i]})
				d.mkeys = append(d.mkeys, d.keys[i])
			}
		}
		if len(fds) == 0 {
			continue
		}
		if !d.sendTo(ws, j, fds) && !d.sendToFresh(ws, fds) {
			s.metrics.refuse(refusedHandoff, len(fds))
			for _, i := range d.idx {
				d.refuse(i, busyHandoff)
			}
		}
	}
}

// refuse answers the connection d.fds[i] busy with msg and ends its count
// against its client.
func (d *dispatcher) refuse(i int, msg string) {
	refuse(d.fds[i], wire.StatusBusy, msg, d.httpOn, d.proxy)
	d.fds[i] = -1
	if d.keys[i] != "" {
		d.s.clients.release(d.keys[i])
		d.keys[i] = ""
	}
}

// room is how many more connections w's descriptors have room for.
func (w *workerProc) room() int64 {
	c := w.capacity.Load()
	if c == 0 {
		return math.MaxInt64
	}
	return c - w.active.Load()
}

// sendTo sends fds to w, or, if its channel is full or broken or it has
// no room for them, to the other workers in turn. It never blocks.
func (d *dispatcher) sendTo(ws []*workerProc, first int, fds []int) bool {
	s := d.s
	d.msg = appendConns(d.msg[:0], d.metas)
	n := int64(len(fds))
	for k := range ws {
		t := ws[(first+k)%len(ws)]
		// Count before sending (the worker may report them done before
		// TrySend returns), under sendMu so that the write-off of a dead
		// worker's count cannot interleave, nor another accept loop's
		// handoff overfill it.
		t.sendMu.Lock()
		if t.isGone() || t.room() < n {
			t.sendMu.Unlock()
			continue
		}
		if t.handoff == nil {
			t.handoff = fdpass.NewSender(t.ch)
		}
		t.active.Add(n)
		s.inflight.Add(n)
		t.addClients(d.metas, d.mkeys)
		err := t.handoff.TrySend(d.msg, fds...)
		if err != nil {
			t.active.Add(-n)
			s.inflight.Add(-n)
			t.removeClients(d.metas, d.mkeys)
		}
		t.sendMu.Unlock()
		if err == nil {
			d.handedOff(len(fds))
			return true
		}
		if !errors.Is(err, unix.EAGAIN) {
			s.log.Debug("handoff failed; trying another worker", "pid", t.pid, "err", err)
		}
	}
	return false
}

// addClients records (under sendMu) the connections of ms counted per
// client (keys[i] != ""), so that their counts end with them.
func (w *workerProc) addClients(ms []connMeta, keys []string) {
	for i, m := range ms {
		if keys[i] != "" {
			if w.clients == nil {
				w.clients = map[uint64]string{}
			}
			w.clients[m.id] = keys[i]
		}
	}
}

// removeClients undoes addClients after a failed handoff.
func (w *workerProc) removeClients(ms []connMeta, keys []string) {
	for i, m := range ms {
		if keys[i] != "" {
			delete(w.clients, m.id)
		}
	}
}

// sendToFresh retries a handoff that every worker of ws refused, once,
// with the current dispatch list if it changed meanwhile: ws may be the
// previous generation's workers, which refuse after a reload's drain.
func (d *dispatcher) sendToFresh(ws []*workerProc, fds []int) bool {
	fresh := *d.s.dispatch.Load()
	if len(fresh) == 0 || (len(ws) > 0 && &fresh[0] == &ws[0]) {
		return false
	}
	return d.sendTo(fresh, 0, fds)
}

// addrPortString is the IP peer ap as sockaddrString shows it, in one
// allocation: "a.b.c.d:port" for IPv4 and IPv4-mapped IPv6 (as net.IP
// prints those), "[v6]:port" for the others; a zone is left out.
func addrPortString(ap netip.AddrPort) string {
	var buf [64]byte
	b := buf[:0]
	if a := ap.Addr().Unmap(); a.Is4() {
		b = a.AppendTo(b)
	} else {
		b = append(b, '[')
		b = a.WithZone("").AppendTo(b)
		b = append(b, ']')
	}
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(ap.Port()), 10)
	return string(b)
}

// sockaddrString is the address of a connection's peer as the workers and
// the logs show it: host:port, or a unix socket's name.
func sockaddrString(sa syscall.Sockaddr) string {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return addrPortString(netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)))
	case *syscall.SockaddrInet6:
		return addrPortString(netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)))
	case *syscall.SockaddrUnix:
		if a.Name == "" {
			return "unix"
		}
		return "unix:" + a.Name
	}
	return "unknown"
}
