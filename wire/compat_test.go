package wire

import (
	"bytes"
	"testing"

	"github.com/zfs-serve/zfs-serve/wire/wiretest"
)

// Version 2 must not change what version 1 peers see: the frozen version
// 1 codec (package wiretest) plays the old side.

// TestCompatOldClient: an old client's requests decode as before, and the
// answers a server gives them (no flags: the client asked for none) are
// version 1 frames the old decoder reads; a response with a digest is not,
// which is why a server sends one only to a request with FlagDigest.
func TestCompatOldClient(t *testing.T) {
	for _, tc := range []struct {
		req  wiretest.Request
		want Request
		resp Response
	}{
		{wiretest.Request{Op: 1, Path: "/a/b", Offset: 5, Length: 7}, Request{Op: OpGet, Path: "/a/b", Offset: 5, Length: 7},
			Response{Status: StatusOK, Kind: KindFile, Size: 12, MTime: 99, BodyLen: 7}},
		{wiretest.Request{Op: 2, Path: "x"}, Request{Op: OpStat, Path: "x"},
			Response{Status: StatusOK, Kind: KindFile, Size: 3, MTime: -1}},
		{wiretest.Request{Op: 3, Path: "/"}, Request{Op: OpList, Path: "/"},
			Response{Status: StatusOK, Kind: KindDir, Size: 2, BodyLen: 40}},
		{wiretest.Request{Op: 1, Path: "nope"}, Request{Op: OpGet, Path: "nope"},
			Response{Status: StatusNotFound, Message: "not found: nope"}},
	} {
		t.Run(tc.want.Op.String()+" "+tc.want.Path, func(t *testing.T) {
			b := wiretest.AppendRequestV1(nil, &tc.req)
			var hdr [RequestHeaderLen]byte
			q, err := ReadRequest(bytes.NewReader(b), &hdr)
			if err != nil || q != tc.want {
				t.Fatalf("new server decodes the old request as %+v, %v; want %+v", q, err, tc.want)
			}
			if !bytes.Equal(AppendRequest(nil, &q), b) {
				t.Fatal("a request without flags is not byte for byte a version 1 request")
			}
			old, err := wiretest.ReadResponseV1(bytes.NewReader(AppendResponse(nil, &tc.resp)))
			if err != nil {
				t.Fatalf("old client refuses the answer: %v", err)
			}
			if Status(old.Status) != tc.resp.Status || Kind(old.Kind) != tc.resp.Kind || old.Size != tc.resp.Size ||
				old.MTime != tc.resp.MTime || old.BodyLen != tc.resp.BodyLen || old.Message != tc.resp.Message {
				t.Fatalf("old client reads %+v, want %+v", old, tc.resp)
			}
			withDigest := tc.resp
			withDigest.Flags = FlagDigest
			if tc.resp.Status == StatusOK {
				if _, err := wiretest.ReadResponseV1(bytes.NewReader(AppendResponse(nil, &withDigest))); err == nil {
					t.Fatal("an old client accepted a version 2 response")
				}
			}
		})
	}
}

// TestCompatOldServer: a request with FlagDigest is a version 2 frame,
// which an old server refuses with "unsupported version" (then closes);
// the new client reads that refusal and asks again without flags, which
// the old server serves, and reads its version 1 answers.
func TestCompatOldServer(t *testing.T) {
	for _, q := range []Request{
		{Op: OpGet, Path: "/f", Flags: FlagDigest},
		{Op: OpGet, Path: "/f", Offset: 10, Flags: FlagDigest},
		{Op: OpStat, Path: "/f", Flags: FlagDigest},
	} {
		t.Run(q.Op.String(), func(t *testing.T) {
			b := AppendRequest(nil, &q)
			if st := wiretest.CheckRequestV1(b); st != wiretest.StatusUnsupportedVersion {
				t.Fatalf("old server answers a flagged request with status %d, want %d", st, wiretest.StatusUnsupportedVersion)
			}
			refusal := wiretest.AppendResponseV1(nil, &wiretest.Response{Status: wiretest.StatusUnsupportedVersion,
				Message: "bad request: protocol version 2 not supported, this server speaks 1"})
			r, err := ReadResponse(bytes.NewReader(refusal))
			if err != nil || r.Status != StatusUnsupportedVersion {
				t.Fatalf("new client reads the old refusal as %+v, %v", r, err)
			}
			plain := q
			plain.Flags = 0
			b = AppendRequest(nil, &plain)
			if st := wiretest.CheckRequestV1(b); st != wiretest.StatusOK {
				t.Fatalf("old server refuses the retry without flags: status %d", st)
			}
			ok := wiretest.AppendResponseV1(nil, &wiretest.Response{Status: 0, Kind: 1, Size: 20, MTime: 7, BodyLen: 20})
			r, err = ReadResponse(bytes.NewReader(ok))
			want := Response{Status: StatusOK, Kind: KindFile, Size: 20, MTime: 7, BodyLen: 20}
			if err != nil || r != want {
				t.Fatalf("new client reads the old answer as %+v, %v; want %+v", r, err, want)
			}
		})
	}
}
