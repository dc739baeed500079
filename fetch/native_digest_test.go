package fetch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// zfs-serve's native digest (wire version 2): asked for with FlagDigest,
// checked while the bytes are written, taken from a GET when the STAT had
// none; a version 1 server is asked again without flags.
func TestNativeDigest(t *testing.T) {
	data := randBytes(3*MinSplit+11, 31)
	for _, tc := range []struct {
		name                      string
		digests, onGet, wrong, v1 bool
		wantSHA                   bool
		wantErr                   bool
	}{
		{name: "stat", digests: true, wantSHA: true},
		{name: "get only", digests: true, onGet: true, wantSHA: true},
		{name: "wrong", digests: true, wrong: true, wantErr: true},
		{name: "none", wantSHA: false},
		{name: "version 1 server", v1: true, wantSHA: false},
	} {
		for _, conns := range []int{1, 3} {
			t.Run(tc.name+"-x"+string(rune('0'+conns)), func(t *testing.T) {
				s := newFakeServer(t)
				s.put("/f", data, mtime1)
				s.digests, s.digestOnGet, s.wrongDigest, s.v1 = tc.digests, tc.onGet, tc.wrong, tc.v1
				c, rec := testClient(t, Options{Conns: conns})
				dst := filepath.Join(t.TempDir(), "out")
				_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst, Name: "out"})
				if tc.wantErr {
					var ve *VerifyError
					if !errors.As(err, &ve) {
						t.Fatalf("%v, want a VerifyError", err)
					}
					if _, err := os.Stat(dst); err == nil {
						t.Fatal("a file with the wrong digest was put in place")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				checkFile(t, dst, data, mtime1)
				d := rec.kinds(EventDone)
				if got := len(d) == 1 && d[0].SHA256 == sumHex(data); got != tc.wantSHA {
					t.Errorf("done %+v: digest checked %v, want %v", d, !got, tc.wantSHA)
				}
				if tc.v1 && s.flagged.Load() != 1 {
					t.Errorf("%d flagged requests to a version 1 server, want 1", s.flagged.Load())
				}
			})
		}
	}
	// --no-verify sends no flags.
	s := newFakeServer(t)
	s.put("/f", data, mtime1)
	s.digests = true
	c, _ := testClient(t, Options{NoVerify: true})
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: filepath.Join(t.TempDir(), "o"), Name: "o"}); err != nil {
		t.Fatal(err)
	}
	if n := s.flagged.Load(); n != 0 {
		t.Errorf("--no-verify: %d flagged requests", n)
	}
}
