package fdpass

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The SCM_RIGHTS control messages of a channel message, decoded and
// encoded by hand so that neither allocates (x/sys/unix's
// ParseSocketControlMessage, ParseUnixRights and UnixRights each return a
// new slice). FuzzParseRights and TestAppendRights hold them to x/sys.

// parseRights appends to fds the descriptors of every SCM_RIGHTS message
// in oob, as the kernel wrote it after a recvmsg. Descriptors from
// messages it cannot parse are impossible to know, which is why callers
// size oob for the worst case; on an error it closes those it decoded
// and returns fds as it was.
func parseRights(oob []byte, fds []int) ([]int, error) {
	start := len(fds)
	var perr error
	for len(oob) >= unix.CmsgLen(0) {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			closeAll(fds[start:])
			return fds[:start], fmt.Errorf("fdpass: parse control message: %w", err)
		}
		oob = rest
		switch {
		case h.Level != unix.SOL_SOCKET || h.Type != unix.SCM_RIGHTS:
			perr = fmt.Errorf("fdpass: unexpected control message level %d type %d", h.Level, h.Type)
		case len(data)%4 != 0:
			perr = fmt.Errorf("fdpass: parse rights: %d bytes of descriptors", len(data))
		default:
			for i := 0; i < len(data); i += 4 {
				fds = append(fds, int(int32(binary.NativeEndian.Uint32(data[i:]))))
			}
		}
	}
	if perr != nil {
		closeAll(fds[start:])
		return fds[:start], perr
	}
	return fds, nil
}

// appendRights appends to b one SCM_RIGHTS control message carrying fds,
// as unix.UnixRights encodes it.
func appendRights(b []byte, fds []int) []byte {
	n := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(4*len(fds)))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[n]))
	h.Level = unix.SOL_SOCKET
	h.Type = unix.SCM_RIGHTS
	h.SetLen(unix.CmsgLen(4 * len(fds)))
	data := b[n+unix.CmsgLen(0):]
	for i, fd := range fds {
		binary.NativeEndian.PutUint32(data[4*i:], uint32(int32(fd)))
	}
	return b
}
