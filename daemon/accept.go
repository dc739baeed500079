package daemon

import (
	"errors"
	"net"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
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
		d.fds, d.peers = d.fds[:0], d.peers[:0]
		var aerr error
		err := rc.Read(func(fd uintptr) bool {
			for len(d.fds) < maxBatch {
				// syscall's Accept4, not x/sys/unix's: the latter asks every
				// accepted socket for SO_PROTOCOL to decode its address, one
				// more system call per connection on the thread that accepts
				// for everyone.
				nfd, sa, e := syscall.Accept4(int(fd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
				switch e {
				case nil:
					d.fds = append(d.fds, nfd)
					d.at = append(d.at, time.Now())
					d.peers = append(d.peers, sockaddrString(sa))
					continue
				case syscall.EINTR, syscall.ECONNABORTED:
					continue
				case syscall.EAGAIN:
					return len(d.fds) > 0 // wait in the poller if nothing was accepted
				}
				aerr = e
				return true
			}
			return true
		})
		if len(d.fds) > 0 {
			d.dispatch()
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

// dispatcher holds one accept loop's scratch space.
type dispatcher struct {
	s     *Supervisor
	fds   []int
	peers []string
	metas []connMeta
	msg   []byte
	load  []int64
	idx   []int // indices in fds of the batch sent to one worker
	rr    int
	// at is when each of fds was accepted (handoff latency, metrics.go).
	at []time.Time
}

// dispatch hands the accepted fds to workers, least loaded first, one
// message per worker, and closes the supervisor's copies: after this, only
// a worker holds each connection.
func (d *dispatcher) dispatch() {
	s := d.s
	ws := *s.dispatch.Load()
	defer func() {
		for _, fd := range d.fds {
			if fd >= 0 { // refused ones were closed by refuse
				unix.Close(fd)
			}
		}
		d.at = d.at[:0]
	}()
	s.metrics.accepted.Add(uint64(len(d.fds)))
	httpOn := s.httpOn.Load()
	if len(ws) == 0 {
		st := wire.StatusBusy
		msg := "busy: no worker is ready, retry shortly"
		if state, _ := s.stateA.Load().(string); state == ctl.StateDraining || state == ctl.StateStopping {
			st, msg = wire.StatusDraining, "draining: the server is shutting down, retry shortly"
		}
		s.metrics.refuse(noWorkerReason(st), len(d.fds))
		for i, fd := range d.fds {
			refuse(fd, st, msg, httpOn)
			d.fds[i] = -1
		}
		return
	}
	if s.inflight.Load()+int64(len(d.fds)) > s.maxConns.Load() {
		s.metrics.refuse(refusedMaxConns, len(d.fds))
		for i, fd := range d.fds {
			refuse(fd, wire.StatusBusy, "busy: max_connections reached, retry shortly", httpOn)
			d.fds[i] = -1
		}
		return
	}
	d.load = d.load[:0]
	for _, w := range ws {
		d.load = append(d.load, w.active.Load())
	}
	// Assign each connection to the least-loaded worker, counting the ones
	// assigned in this batch, then send one message per worker.
	// Ties go round-robin, so idle workers share short connections evenly.
	assign := make([]int, len(d.fds))
	for i := range d.fds {
		d.rr++
		best := d.rr % len(d.load)
		for k := range d.load {
			j := (d.rr + k) % len(d.load)
			if d.load[j] < d.load[best] {
				best = j
			}
		}
		assign[i] = best
		d.load[best]++
	}
	for j, w := range ws {
		var fds []int
		d.metas = d.metas[:0]
		d.idx = d.idx[:0]
		for i, a := range assign {
			if a == j {
				fds = append(fds, d.fds[i])
				d.idx = append(d.idx, i)
				d.metas = append(d.metas, connMeta{id: s.connSeq.Add(1), client: d.peers[i]})
			}
		}
		if len(fds) == 0 {
			continue
		}
		if !d.sendTo(ws, j, w, fds) && !d.sendToFresh(ws, fds) {
			s.metrics.refuse(refusedHandoff, len(fds))
			for k, fd := range fds {
				refuse(fd, wire.StatusBusy, "busy: no worker could take the connection, retry shortly", httpOn)
				d.fds[d.idx[k]] = -1
			}
		}
	}
}

// sendTo sends fds to w, or, if its channel is full or broken, to the
// other workers in turn. It never blocks.
func (d *dispatcher) sendTo(ws []*workerProc, first int, w *workerProc, fds []int) bool {
	s := d.s
	d.msg = appendConns(d.msg[:0], d.metas)
	n := int64(len(fds))
	for k := range ws {
		t := ws[(first+k)%len(ws)]
		// Count before sending (the worker may report them done before
		// TrySend returns), under sendMu so that the write-off of a dead
		// worker's count cannot interleave.
		t.sendMu.Lock()
		if t.isDead {
			t.sendMu.Unlock()
			continue
		}
		t.active.Add(n)
		s.inflight.Add(n)
		err := fdpass.TrySend(t.ch, d.msg, fds...)
		if err != nil {
			t.active.Add(-n)
			s.inflight.Add(-n)
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

// sendToFresh retries a handoff that every worker of ws refused, once,
// with the current dispatch list if it changed meanwhile: ws may be the
// previous generation's workers, which refuse after a reload's drain.
func (d *dispatcher) sendToFresh(ws []*workerProc, fds []int) bool {
	fresh := *d.s.dispatch.Load()
	if len(fresh) == 0 || (len(ws) > 0 && &fresh[0] == &ws[0]) {
		return false
	}
	return d.sendTo(fresh, 0, fresh[0], fds)
}

func sockaddrString(sa syscall.Sockaddr) string {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *syscall.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *syscall.SockaddrUnix:
		if a.Name == "" {
			return "unix"
		}
		return "unix:" + a.Name
	}
	return "unknown"
}
