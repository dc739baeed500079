package daemon

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/digest"
	"github.com/zfs-serve/zfs-serve/serve"
)

// Channel messages. Each is one SOCK_SEQPACKET message: a type byte, then a
// payload. Connection fds travel in the same message as their metadata
// (SCM_RIGHTS), in order.
//
//	supervisor -> worker              worker -> supervisor
//	msgConfig  JSON workerConfig      msgReady   u32 capacity: connections its
//	msgConns   u16 n, n*(u64 id, u8       open-file limit has room for
//	           flags, u8 len, client  msgFatal   error text
//	           addr) + n fds          msgDone    u16 n, n*(u64 id, u64 bytes,
//	msgDrain   (no payload)                      u32 requests, u8 len, outcome)
//	msgStatusReq u64 req id           msgStatus  u64 req id, JSON workerStatus
//	msgPing    u64 seq                msgRetire  (no payload): SIGTERM'd, asks
//	msgAdmitted u64 id, u8 ok                    to be replaced and drained
//	                                  msgPong    u64 seq, from the channel reader
//	                                  msgFDShort u32 connections held when fds
//	                                             passed to it were lost
//	                                  msgAdmit   u64 id, u8 len, client key: may
//	                                             this proxied connection's client
//	                                             have one more (connAdmit)?
const (
	msgConfig    byte = 1
	msgConns     byte = 2
	msgDrain     byte = 3
	msgStatusReq byte = 4
	msgPing      byte = 5
	msgAdmitted  byte = 8

	msgReady   byte = 10
	msgFatal   byte = 11
	msgDone    byte = 12
	msgStatus  byte = 13
	msgRetire  byte = 14
	msgPong    byte = 15
	msgFDShort byte = 16
	msgAdmit   byte = 18
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
	flags  byte // connProxy, connAdmit, connLazy
	client string
}

// connMeta flags.
const (
	// connProxy: the connection came to a proxy: listener, so a PROXY
	// header starts it and names the client (serve/proxy.go).
	connProxy byte = 1 << iota
	// connAdmit: the supervisor did not count it per client (the socket's
	// peer is the proxy); the worker asks it with msgAdmit once the header
	// has named the client.
	connAdmit
	// connLazy: the supervisor's count of it does not matter soon (no
	// limit is near, none counts per client), so the worker may report it
	// done within lazyDoneDelay rather than doneDelay (worker.go outbox).
	// An unflagged connection is reported promptly, as every one was
	// before the flag: a supervisor from before it (a reload after a
	// package upgrade runs the new worker binary under the old one)
	// counts on that.
	connLazy
)

func appendConns(b []byte, cs []connMeta) []byte {
	b = append(b, msgConns)
	b = binary.BigEndian.AppendUint16(b, uint16(len(cs)))
	for _, c := range cs {
		b = binary.BigEndian.AppendUint64(b, c.id)
		b = append(b, c.flags)
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
		if len(p) < 10 {
			return nil, errShortMsg
		}
		id, flags, l := binary.BigEndian.Uint64(p), p[8], int(p[9])
		p = p[10:]
		if len(p) < l {
			return nil, errShortMsg
		}
		out = append(out, connMeta{id: id, flags: flags, client: string(p[:l])})
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
	prompt   bool // report within doneDelay (not sent: the worker's own)
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

// parseDone decodes a msgDone's entries.
func parseDone(p []byte) ([]doneMeta, error) {
	return appendDoneMetas(nil, p)
}

// appendDoneMetas is parseDone appending to out (the supervisor's reader
// reuses one slice); the outcomes a worker reports are strings of their
// own, not copies.
func appendDoneMetas(out []doneMeta, p []byte) ([]doneMeta, error) {
	if len(p) < 2 {
		return nil, errShortMsg
	}
	n := int(binary.BigEndian.Uint16(p))
	if n > 4*maxBatch {
		return nil, fmt.Errorf("done message with %d entries, the limit is %d", n, 4*maxBatch)
	}
	p = p[2:]
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
		d.outcome = outcomeString(p[:l])
		p = p[l:]
		out = append(out, d)
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("done message has %d trailing bytes", len(p))
	}
	return out, nil
}

// idMessage starts a message of type typ that carries an id: a request
// id (msgStatusReq, msgStatus, msgDigestReq, msgDigest) or a ping's
// sequence number (msgPing, msgPong).
func idMessage(typ byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{typ}, id)
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

// appendAdmit is msgAdmit: may connection id's client, key, have one more
// connection?
func appendAdmit(b []byte, id uint64, key string) []byte {
	b = binary.BigEndian.AppendUint64(append(b, msgAdmit), id)
	if len(key) > 255 {
		key = key[:255]
	}
	return append(append(b, byte(len(key))), key...)
}

func parseAdmit(p []byte) (id uint64, key string, err error) {
	if len(p) < 9 || len(p) != 9+int(p[8]) {
		return 0, "", errShortMsg
	}
	return binary.BigEndian.Uint64(p), string(p[9:]), nil
}

// appendAdmitted is msgAdmitted, the answer to msgAdmit.
func appendAdmitted(b []byte, id uint64, ok bool) []byte {
	b = binary.BigEndian.AppendUint64(append(b, msgAdmitted), id)
	if ok {
		return append(b, 1)
	}
	return append(b, 0)
}

func parseAdmitted(p []byte) (id uint64, ok bool, err error) {
	if len(p) != 9 {
		return 0, false, errShortMsg
	}
	return binary.BigEndian.Uint64(p), p[8] == 1, nil
}

// workerConfig is the first message down a worker's channel: everything it
// needs, so it reads no file but what it serves.
type workerConfig struct {
	Version    int            `json:"version"`
	Generation int            `json:"generation"`
	Slot       int            `json:"slot"`
	Config     *config.Config `json:"config"`
}

// appendConfig is msgConfig.
func appendConfig(b []byte, wc workerConfig) []byte {
	j, _ := json.Marshal(wc)
	return append(append(b, msgConfig), j...)
}

func parseConfig(p []byte) (workerConfig, error) {
	var wc workerConfig
	if err := json.Unmarshal(p, &wc); err != nil {
		return wc, err
	}
	if wc.Config == nil {
		return wc, errors.New("no configuration in it")
	}
	return wc, nil
}

// workerStatus answers msgStatusReq.
type workerStatus struct {
	Active      int              `json:"active"`
	Connections uint64           `json:"connections"`
	BytesSent   uint64           `json:"bytes_sent"`
	Native      uint64           `json:"native_requests"`
	HTTP        uint64           `json:"http_requests"`
	HTTPBytes   uint64           `json:"http_bytes_sent"`
	NativeResp  serve.Classes    `json:"native_responses"` // by status class
	HTTPResp    serve.Classes    `json:"http_responses"`
	Digests     digest.Stats     `json:"digests"`
	Transfers   []serve.Transfer `json:"transfers"`
	Omitted     int              `json:"omitted"`
}

// maxStatusBytes bounds a status answer so it always fits one channel
// message (maxMsg, with room for the type and id). Paths may be up to 4 KiB
// each and JSON may escape them further, so the bound is on the encoded
// size, not on the count: transfers beyond it are counted in Omitted.
const maxStatusBytes = maxMsg - 1024

// maxStatusTransfers is the most transfers one worker lists in a status.
const maxStatusTransfers = 1000

// outcomeDropped is the outcome of a connection whose descriptor the
// worker lost, or whose handoff message it could not read.
const outcomeDropped serve.Outcome = "dropped"

// knownOutcomes are the outcomes a worker reports: serve's, and the
// worker's own for connections that never reached the server.
var knownOutcomes = []serve.Outcome{serve.OutcomeClosed, serve.OutcomeIdle, serve.OutcomeDrained,
	serve.OutcomeBadRequest, serve.OutcomeClientGone, serve.OutcomeShrank, serve.OutcomeChanged,
	serve.OutcomeError, serve.OutcomeBusy, serve.OutcomeBadProxy, outcomeDropped}

// outcomeString is b as a string: a known outcome's own, else a copy.
func outcomeString(b []byte) string {
	for _, o := range knownOutcomes {
		if string(o) == string(b) {
			return string(o)
		}
	}
	return string(b)
}
