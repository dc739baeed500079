package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zfs-serve/zfs-serve/wire"
)

// inPlaceAtEnd is a hook that plays a file written in place twice, as with
// dd conv=notrunc, while the first GET is being sent: once near the start
// of its body (already sent: the client has the old bytes there) and once
// in its last 4 KiB (sent new, during the final chunk, which the server
// cannot cut short). The response header and the bytes before say the old
// version; afterwards the file has a new mtime. The client holds a mix of
// the two versions, unless it looks again.
func inPlaceAtEnd(s *fakeServer, v1 []byte, mtime int64) func(int, wire.Request) fault {
	var v2 []byte
	return onFirstGet(fault{
		tamper: func(off int64, body []byte) []byte {
			end := off + int64(len(body))
			v2 = slices.Clone(v1)
			clear(v2[off+4096 : off+8192])
			clear(v2[end-4096 : end])
			mix := slices.Clone(body)
			clear(mix[len(mix)-4096:])
			return mix
		},
		after: func() { s.put("/f", v2, mtime) },
	})
}

func (s *fakeServer) data(p string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.files[p].data
}

// TestChangedDuringLastChunk: a body that arrived whole but whose file
// changed meanwhile is not renamed into place: zfetch asks the server for
// the file's identity before the rename, sees the new one, and starts over;
// the result is the new version, whole, in every mode, with ranges too.
func TestChangedDuringLastChunk(t *testing.T) {
	for _, mode := range []RecvMode{RecvCopy, RecvSplice, RecvMmap} {
		for _, conns := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s-x%d", mode, conns), func(t *testing.T) {
				v1 := randBytes(2*MinSplit, 1)
				s := newFakeServer(t)
				s.put("/f", v1, mtime1)
				s.hook = inPlaceAtEnd(s, v1, mtime1+1)
				c, rec := testClient(t, Options{Recv: mode, Conns: conns})
				// The first body must arrive whole: no other connection
				// takes over part of it.
				c.noSteal = true
				dst := filepath.Join(t.TempDir(), "f")
				if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err != nil {
					t.Fatal(err)
				}
				checkFile(t, dst, s.data("/f"), mtime1+1)
				r := rec.kinds(EventRestart)
				if len(r) > 1 || (len(r) == 1 && !strings.Contains(r[0].Err.Error(), "changed on the server")) {
					t.Fatalf("restart events: %+v", r)
				}
			})
		}
	}
}

// TestStreamChangedDuringLastChunk: to stdout the mix cannot be taken
// back: a verification error, never success.
func TestStreamChangedDuringLastChunk(t *testing.T) {
	v1 := randBytes(1<<20, 1)
	s := newFakeServer(t)
	s.put("/f", v1, mtime1)
	s.hook = inPlaceAtEnd(s, v1, mtime1+1)
	c, _ := testClient(t, Options{})
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	_, err = c.Fetch(context.Background(), Job{Src: s.target("/f"), Out: out, Name: "-"})
	var ve *VerifyError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "changed on the server") {
		t.Fatalf("err %v", err)
	}
}

// TestGoneBeforeRename: a file deleted on the server once its bytes are in
// is not renamed into place on the strength of an identity that no longer
// exists; the .part is kept.
func TestGoneBeforeRename(t *testing.T) {
	s := newFakeServer(t)
	s.put("/f", randBytes(1<<20, 1), mtime1)
	s.hook = onFirstGet(fault{after: func() {
		s.mu.Lock()
		delete(s.files, "/f")
		s.mu.Unlock()
	}})
	c, _ := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "f")
	res, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != wire.StatusNotFound {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists: %v", dst, err)
	}
	if res.Part != dst+".part" {
		t.Fatalf("part %q", res.Part)
	}
}

// TestMirrorChangedDuringLastChunk: with mirrors, the look before the
// rename asks again every source that supplied bytes, not only the
// first: a mirror whose file changed in place while its range was being
// sent (its last chunk new, the rest old) is seen, and the download
// starts over instead of renaming a mix into place. The mirror, now a
// different version from the reference, is left out then.
func TestMirrorChangedDuringLastChunk(t *testing.T) {
	v1, a, b := mirrorPair(t, 2*MinSplit)
	// A second later: mirrors' mtimes are compared to the second.
	b.hook = inPlaceAtEnd(b, v1, mtime1+1e9)
	c, rec := testClient(t, Options{})
	dst := filepath.Join(t.TempDir(), "f")
	if _, err := fetchPair(context.Background(), c, a, b, dst, false); err != nil {
		t.Fatal(err)
	}
	if b.sent.Load() == 0 {
		t.Fatalf("the mirror supplied no bytes: the test proves nothing")
	}
	checkFile(t, dst, v1, mtime1)
	if r := rec.kinds(EventRestart); len(r) != 1 || !strings.Contains(r[0].Err.Error(), "changed on the server") {
		t.Fatalf("restart events: %+v", r)
	}
}
