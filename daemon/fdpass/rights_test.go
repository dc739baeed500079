package fdpass

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// parseRightsRef is the decoder parseRights replaced, on x/sys/unix's
// parsers: the reference FuzzParseRights holds it to.
func parseRightsRef(oob []byte) (fds []int, err error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	for i := range msgs {
		if len(msgs[i].Data)%4 != 0 {
			return nil, unix.EINVAL // ParseUnixRights would read past it
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			return nil, err
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// FuzzParseRights: on any control buffer, parseRights finds the
// descriptors x/sys/unix finds, fails where it fails, closes exactly
// what it decoded when it fails, and leaves what fds held before alone.
func FuzzParseRights(f *testing.F) {
	f.Add(unix.UnixRights(3, 4, 5))
	f.Add(append(unix.UnixRights(7), unix.UnixRights(8, 9)...))
	f.Add(unix.UnixRights())
	f.Add([]byte{})
	cred := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	h := (*unix.Cmsghdr)(unsafePointer(cred))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SCM_CREDENTIALS
	h.SetLen(unix.CmsgLen(unix.SizeofUcred))
	f.Add(append(unix.UnixRights(10), cred...))
	short := unix.UnixRights(1, 2)
	binary.NativeEndian.PutUint64(short, uint64(unix.CmsgLen(7))) // a length not a multiple of 4
	f.Add(short)
	var closed []int
	old := closeFD
	closeFD = func(fd int) error { closed = append(closed, fd); return nil }
	f.Cleanup(func() { closeFD = old })
	f.Fuzz(func(t *testing.T, in []byte) {
		// The kernel's buffers are aligned; so is this copy.
		words := make([]uint64, (len(in)+7)/8)
		oob := unsafeBytes(words)[:len(in)]
		copy(oob, in)
		want, werr := parseRightsRef(slices.Clone(oob))
		closed = closed[:0]
		prior := []int{-7, -8}
		got, err := parseRights(oob, slices.Clone(prior))
		if !slices.Equal(got[:min(len(got), 2)], prior) {
			t.Fatalf("the fds already held changed: %v", got)
		}
		decoded := got[2:]
		switch {
		case (err != nil) != (werr != nil):
			// x/sys accepts any level and type; parseRights refuses
			// what is not SCM_RIGHTS. That is the one allowed difference.
			if werr == nil && bytes.Contains([]byte(err.Error()), []byte("unexpected control message")) {
				break
			}
			t.Fatalf("error %v, x/sys's %v", err, werr)
		case err == nil && !slices.Equal(decoded, want) && !(len(decoded) == 0 && len(want) == 0):
			t.Fatalf("fds %v, x/sys's %v", decoded, want)
		}
		if err != nil && len(decoded) != 0 {
			t.Fatalf("after an error it still returns %v", decoded)
		}
		if err == nil && len(closed) != 0 {
			t.Fatalf("closed %v without an error", closed)
		}
	})
}

// TestAppendRights: the control message appendRights builds is the one
// x/sys/unix's UnixRights builds, for every count up to MaxFDs.
func TestAppendRights(t *testing.T) {
	var b []byte
	for n := 0; n <= MaxFDs; n++ {
		fds := make([]int, n)
		for i := range fds {
			fds[i] = 1000 + i*7
		}
		b = appendRights(b[:0], fds)
		if want := unix.UnixRights(fds...); !bytes.Equal(b, want) {
			t.Fatalf("%d fds: %x, x/sys's %x", n, b, want)
		}
	}
}

// TestSenderReceiverAllocs: a Sender and a Receiver pass a message with
// descriptors without allocating, once their buffers have grown.
func TestSenderReceiverAllocs(t *testing.T) {
	a, b := connPair(t)
	s := NewSender(a)
	r := NewReceiver(b, make([]byte, 64), make([]byte, OOBSpace))
	fds := []int{0, 1, 2}
	msg := []byte("batch")
	pass := func() {
		if err := s.TrySend(msg, fds...); err != nil {
			t.Fatal(err)
		}
		n, got, err := r.Recv()
		if err != nil || n != len(msg) || len(got) != len(fds) {
			t.Fatalf("Recv = %d, %v, %v", n, got, err)
		}
		closeAll(got)
	}
	pass()
	if n := testing.AllocsPerRun(100, pass); n != 0 {
		t.Errorf("%v allocations per message, want 0", n)
	}
}
