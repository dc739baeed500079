package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Channel messages. Each is one SOCK_SEQPACKET message: a type byte, then a
// payload. Connection fds travel in the same message as their metadata
// (SCM_RIGHTS), in order.
//
//	supervisor -> worker              worker -> supervisor
//	msgConfig  JSON workerConfig      msgReady   u32 capacity: connections its
//	msgConns   u16 n, n*(u64 id,                 open-file limit has room for
//	           u8 len, client addr)   msgFatal   error text
//	           + n fds                msgDone    u16 n, n*(u64 id, u64 bytes,
//	msgDrain   (no payload)                      u32 requests, u8 len, outcome)
//	msgStatusReq u64 req id           msgStatus  u64 req id, JSON workerStatus
//	msgPing    u64 seq                msgRetire  (no payload): SIGTERM'd, asks
//	                                             to be replaced and drained
//	                                  msgPong    u64 seq, from the channel reader
//	                                  msgFDShort u32 connections held when fds
//	                                             passed to it were lost
const (
	msgConfig    byte = 1
	msgConns     byte = 2
	msgDrain     byte = 3
	msgStatusReq byte = 4
	msgPing      byte = 5

	msgReady   byte = 10
	msgFatal   byte = 11
	msgDone    byte = 12
	msgStatus  byte = 13
	msgRetire  byte = 14
	msgPong    byte = 15
	msgFDShort byte = 16
)

// Channel messages for zctl digest (daemon/digest.go).
//
//	supervisor -> worker              worker -> supervisor
//	msgDigestReq   u64 req id,        msgDigest  u64 req id, JSON digestAnswer
//	               JSON digestRequest
//	msgDigestLearn JSON []digestLearned
const (
	msgDigestReq   byte = 6
	msgDigestLearn byte = 7

	msgDigest byte = 17
)

// maxMsg is the receive buffer for one channel message, comfortably below
// the kernel's default SOCK_SEQPACKET send buffer.
const maxMsg = 160 << 10

// maxBatch bounds the connections (and fds) in one msgConns or msgDone.
const maxBatch = 64

var errShortMsg = errors.New("channel message too short")

type connMeta struct {
	id     uint64
	client string
}

func appendConns(b []byte, cs []connMeta) []byte {
	b = append(b, msgConns)
	b = binary.BigEndian.AppendUint16(b, uint16(len(cs)))
	for _, c := range cs {
		b = binary.BigEndian.AppendUint64(b, c.id)
		client := c.client
		if len(client) > 255 {
			client = client[:255]
		}
		b = append(b, byte(len(client)))
		b = append(b, client...)
	}
	return b
}

func parseConns(p []byte) ([]connMeta, error) {
	if len(p) < 2 {
		return nil, errShortMsg
	}
	n := int(binary.BigEndian.Uint16(p))
	if n > maxBatch {
		return nil, fmt.Errorf("conns message with %d entries, the limit is %d", n, maxBatch)
	}
	p = p[2:]
	out := make([]connMeta, 0, n)
	for range n {
		if len(p) < 9 {
			return nil, errShortMsg
		}
		id, l := binary.BigEndian.Uint64(p), int(p[8])
		p = p[9:]
		if len(p) < l {
			return nil, errShortMsg
		}
		out = append(out, connMeta{id: id, client: string(p[:l])})
		p = p[l:]
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("conns message has %d trailing bytes", len(p))
	}
	return out, nil
}

type doneMeta struct {
	id       uint64
	bytes    uint64
	requests uint32
	outcome  string
}

func appendDone(b []byte, ds []doneMeta) []byte {
	b = append(b, msgDone)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ds)))
	for _, d := range ds {
		b = binary.BigEndian.AppendUint64(b, d.id)
		b = binary.BigEndian.AppendUint64(b, d.bytes)
		b = binary.BigEndian.AppendUint32(b, d.requests)
		o := d.outcome
		if len(o) > 255 {
			o = o[:255]
		}
		b = append(b, byte(len(o)))
		b = append(b, o...)
	}
	return b
}

func parseDone(p []byte) ([]doneMeta, error) {
	if len(p) < 2 {
		return nil, errShortMsg
	}
	n := int(binary.BigEndian.Uint16(p))
	if n > 4*maxBatch {
		return nil, fmt.Errorf("done message with %d entries, the limit is %d", n, 4*maxBatch)
	}
	p = p[2:]
	out := make([]doneMeta, 0, n)
	for range n {
		if len(p) < 21 {
			return nil, errShortMsg
		}
		d := doneMeta{id: binary.BigEndian.Uint64(p), bytes: binary.BigEndian.Uint64(p[8:]), requests: binary.BigEndian.Uint32(p[16:])}
		l := int(p[20])
		p = p[21:]
		if len(p) < l {
			return nil, errShortMsg
		}
		d.outcome = string(p[:l])
		p = p[l:]
		out = append(out, d)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("done message has %d trailing bytes", len(p))
	}
	return out, nil
}

// appendID starts a msgStatusReq or msgStatus with its request id.
func appendID(b []byte, typ byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, typ), id)
}

// parseID reads the u64 request id that starts msgStatusReq and msgStatus.
func parseID(p []byte) (uint64, []byte, error) {
	if len(p) < 8 {
		return 0, nil, errShortMsg
	}
	return binary.BigEndian.Uint64(p), p[8:], nil
}

// appendU32 is a message of type typ with a u32 payload (msgReady,
// msgFDShort).
func appendU32(b []byte, typ byte, v uint32) []byte {
	return binary.BigEndian.AppendUint32(append(b, typ), v)
}

// parseU32 reads the payload of msgReady and msgFDShort.
func parseU32(p []byte) (uint32, error) {
	if len(p) < 4 {
		return 0, errShortMsg
	}
	return binary.BigEndian.Uint32(p), nil
}
