package daemon

import (
	"encoding/binary"
	"fmt"
)

// Channel messages of the accept dispatch mode (acceptmode.go).
//
//	supervisor -> worker              worker -> supervisor
//	msgListen  u8 n, n*(u8 flags,     msgAccepted u32 n: connections it
//	           u8 len, address)                   accepted itself since its
//	           + n listening fds,                 last msgAccepted
//	           then a memfd (the shared
//	           count of its accepts)
//	msgLimit   u32 n: connections     msgAcceptStopped (empty): it closed
//	           it may hold from now               its sockets for good; its
//	                                              accepts are all reported
//
// msgListen gives a worker the listening sockets to accept on; it comes
// once, when the worker joins dispatch, after a first msgLimit
// (acceptbudget.go). msgAccepted is sent before any msgDone that reports
// one of the connections it counts, so the supervisor's counts never go
// below zero; msgAcceptStopped after the last msgAccepted.
const (
	msgListen        byte = 9
	msgLimit         byte = 20
	msgAccepted      byte = 19
	msgAcceptStopped byte = 21
)

// maxListeners bounds the sockets in one msgListen (SCM_RIGHTS carries
// at most 253 fds).
const maxListeners = 64

// listenMeta describes one listening socket of a msgListen.
type listenMeta struct {
	flags byte // listenProxy
	addr  string
}

// listenMeta flags.
const (
	// listenProxy: every connection starts with a PROXY header (a
	// proxy: listener).
	listenProxy byte = 1 << iota
)

func appendListen(b []byte, ls []listenMeta) []byte {
	b = append(b, msgListen, byte(len(ls)))
	for _, l := range ls {
		addr := l.addr
		if len(addr) > 255 {
			addr = addr[:255]
		}
		b = append(b, l.flags, byte(len(addr)))
		b = append(b, addr...)
	}
	return b
}

func parseListen(p []byte) ([]listenMeta, error) {
	if len(p) < 1 {
		return nil, errShortMsg
	}
	n := int(p[0])
	if n > maxListeners {
		return nil, fmt.Errorf("listen message with %d listeners, the limit is %d", n, maxListeners)
	}
	p = p[1:]
	out := make([]listenMeta, 0, n)
	for range n {
		if len(p) < 2 {
			return nil, errShortMsg
		}
		flags, l := p[0], int(p[1])
		p = p[2:]
		if len(p) < l {
			return nil, errShortMsg
		}
		out = append(out, listenMeta{flags: flags, addr: string(p[:l])})
		p = p[l:]
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("listen message has %d trailing bytes", len(p))
	}
	return out, nil
}

// appendAccepted is msgAccepted: n more connections accepted.
func appendAccepted(b []byte, n uint32) []byte {
	return binary.BigEndian.AppendUint32(append(b, msgAccepted), n)
}

// parseAccepted reads msgAccepted's payload.
func parseAccepted(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, errShortMsg
	}
	return binary.BigEndian.Uint32(p), nil
}
