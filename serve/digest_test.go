package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/digest"
	"github.com/zfs-serve/zfs-serve/wire"
	"github.com/zfs-serve/zfs-serve/wire/wiretest"
)

func withDigests(t *testing.T) func(*Options) {
	old := digestSettle
	digestSettle = 50 * time.Millisecond // above any timestamp granularity here
	t.Cleanup(func() { digestSettle = old })
	return func(o *Options) {
		o.Digests = true
		withHTTP(o)
	}
}

// warm computes the digests of paths as zctl digest does.
func (ts *testServer) warm(t *testing.T, paths ...string) []digest.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs, err := ts.srv.ComputeDigests(ctx, paths)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestNativeDigest: on one connection, requests of both versions; the
// digest is sent only to a request that asked for it, when known, and
// answers to version 1 requests are version 1 frames an old client reads.
func TestNativeDigest(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, withDigests(t))
	data := random(700 << 10)
	ts.write(t, "f", data)
	ts.write(t, "cold", []byte("never hashed"))
	os.Mkdir(filepath.Join(ts.root, "d"), 0o755)
	sum := sha256.Sum256(data)
	if r := ts.warm(t, "/f")[0]; r.Err != nil || r.Sum != sum {
		t.Fatalf("warm: %v, %v", r.Sum, r.Err)
	}
	v2 := func(q wire.Request) []byte { b := wire.AppendRequest(nil, &q); b[2] = 2; return b }
	for _, tc := range []struct {
		name   string
		raw    []byte
		old    bool   // read with the frozen version 1 decoder
		digest bool   // the response carries the digest
		body   []byte // expected body
	}{
		{"v1 GET", wiretest.AppendRequestV1(nil, &wiretest.Request{Op: 1, Path: "/f"}), true, false, data},
		{"v1 GET range", wiretest.AppendRequestV1(nil, &wiretest.Request{Op: 1, Path: "/f", Offset: 10, Length: 5}), true, false, data[10:15]},
		{"v1 STAT", wiretest.AppendRequestV1(nil, &wiretest.Request{Op: 2, Path: "/f"}), true, false, nil},
		{"v2 GET", wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/f", Flags: wire.FlagDigest}), false, true, data},
		{"v2 GET range", wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/f", Offset: 100, Length: 1, Flags: wire.FlagDigest}), false, true, data[100:101]},
		{"v2 STAT", wire.AppendRequest(nil, &wire.Request{Op: wire.OpStat, Path: "f", Flags: wire.FlagDigest}), false, true, nil},
		{"v2 no flags", v2(wire.Request{Op: wire.OpGet, Path: "/f"}), false, false, data},
		{"v2 GET unknown digest", wire.AppendRequest(nil, &wire.Request{Op: wire.OpGet, Path: "/cold", Flags: wire.FlagDigest}), false, false, []byte("never hashed")},
		{"v2 STAT dir", wire.AppendRequest(nil, &wire.Request{Op: wire.OpStat, Path: "/d", Flags: wire.FlagDigest}), false, false, nil},
		{"v1 GET after", wiretest.AppendRequestV1(nil, &wiretest.Request{Op: 1, Path: "/f"}), true, false, data},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.client.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := ts.client.Write(tc.raw); err != nil {
				t.Fatal(err)
			}
			var bodyLen int64
			if tc.old {
				r, err := wiretest.ReadResponseV1(ts.br)
				if err != nil || r.Status != 0 {
					t.Fatalf("old client: %+v, %v", r, err)
				}
				bodyLen = r.BodyLen
			} else {
				r, err := wire.ReadResponse(ts.br)
				if err != nil || r.Status != wire.StatusOK {
					t.Fatalf("%+v, %v", r, err)
				}
				if got := r.Flags&wire.FlagDigest != 0; got != tc.digest || (got && r.Digest != sum) {
					t.Fatalf("digest flag %v (%x), want %v (%x)", got, r.Digest, tc.digest, sum)
				}
				bodyLen = r.BodyLen
			}
			body := make([]byte, bodyLen)
			if _, err := io.ReadFull(ts.br, body); err != nil || !bytes.Equal(body, tc.body) {
				t.Fatalf("body: %d bytes, %v", len(body), err)
			}
		})
	}
}

// TestNativeDigestFrames checks the bytes on the wire: a response to a
// version 1 request is version 1 (reserved byte 0), one with a digest is
// version 2 with the digest right after the message.
func TestNativeDigestFrames(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, withDigests(t))
	ts.write(t, "f", []byte("abc"))
	ts.warm(t, "/f")
	want := sha256.Sum256([]byte("abc"))
	for _, tc := range []struct {
		q       []byte
		version byte
		flags   byte
	}{
		{wiretest.AppendRequestV1(nil, &wiretest.Request{Op: 2, Path: "/f"}), 1, 0},
		{wire.AppendRequest(nil, &wire.Request{Op: wire.OpStat, Path: "/f", Flags: wire.FlagDigest}), 2, 1},
	} {
		ts.client.Write(tc.q)
		hdr := make([]byte, wire.ResponseHeaderLen)
		if _, err := io.ReadFull(ts.br, hdr); err != nil {
			t.Fatal(err)
		}
		if hdr[2] != tc.version || hdr[5] != tc.flags || binary.BigEndian.Uint16(hdr[6:]) != 0 {
			t.Fatalf("header %x: version %d flags %d", hdr, hdr[2], hdr[5])
		}
		if tc.flags != 0 {
			d := make([]byte, wire.DigestLen)
			io.ReadFull(ts.br, d)
			if !bytes.Equal(d, want[:]) {
				t.Fatalf("digest %x, want %x", d, want)
			}
		}
	}
}

// TestHTTPReprDigest: Repr-Digest on 200, 206 (single and multipart) and
// HEAD once the digest is known, never before, and the same (the whole
// file's) on all of them.
func TestHTTPReprDigest(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, withDigests(t))
	data := random(100 << 10)
	ts.write(t, "f.bin", data)
	sum := sha256.Sum256(data)
	want := "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
	resp, _ := ts.httpDo(t, "HEAD", "HEAD /f.bin HTTP/1.1\r\nHost: h\r\n\r\n")
	if v := resp.Header.Get("Repr-Digest"); v != "" {
		t.Fatalf("Repr-Digest %q before the file was hashed", v)
	}
	// The first request queued it: poll with HEAD, as a client would.
	deadline := time.Now().Add(30 * time.Second)
	for resp.Header.Get("Repr-Digest") == "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		resp, _ = ts.httpDo(t, "HEAD", "HEAD /f.bin HTTP/1.1\r\nHost: h\r\n\r\n")
	}
	if st := ts.srv.DigestStats(); st.Hashed != 1 {
		t.Fatalf("digest stats %+v, want one hash", st)
	}
	for _, tc := range []struct {
		raw, method string
		status      int
	}{
		{"HEAD /f.bin HTTP/1.1\r\nHost: h\r\n\r\n", "HEAD", 200},
		{"GET /f.bin HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 200},
		{"GET /f.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=5-9\r\n\r\n", "GET", 206},
		{"GET /f.bin HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1,5-9\r\n\r\n", "GET", 206},
	} {
		resp, _ := ts.httpDo(t, tc.method, tc.raw)
		if resp.StatusCode != tc.status || resp.Header.Get("Repr-Digest") != want {
			t.Errorf("%q: %d, Repr-Digest %q; want %d, %q", tc.raw, resp.StatusCode, resp.Header.Get("Repr-Digest"), tc.status, want)
		}
	}
}

func TestDigestsOff(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, withHTTP)
	ts.write(t, "f", []byte("x"))
	if _, err := ts.srv.ComputeDigests(context.Background(), []string{"/f"}); err != ErrDigestsOff {
		t.Fatalf("ComputeDigests = %v, want ErrDigestsOff", err)
	}
	r, _ := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f", Flags: wire.FlagDigest})
	if r.Status != wire.StatusOK || r.Flags != 0 {
		t.Fatalf("%+v", r)
	}
}

// TestComputeDigestsConfined: zctl digest's paths are confined like
// requests.
func TestComputeDigestsConfined(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, withDigests(t))
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("s"), 0o644)
	os.Symlink(outside, filepath.Join(ts.root, "out"))
	os.Mkdir(filepath.Join(ts.root, "d"), 0o755)
	for i, r := range ts.warm(t, "/../etc/passwd", "/out", "/d", "/missing") {
		if r.Err == nil {
			t.Errorf("path %d: digest %v, want a refusal", i, r.Sum)
		}
	}
}
