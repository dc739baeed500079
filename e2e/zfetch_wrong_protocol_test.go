package e2e

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// wrongServer listens on loopback and answers every connection with
// answer(conn); it is closed with the test.
func wrongServer(t *testing.T, answer func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
			go answer(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range held {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestZfetchNativeShortWrongAnswer: a native URL at a server that speaks
// another protocol and answers with fewer bytes than a native header (32),
// then closes or waits: a protocol violation, status 1 at once, as a long
// HTTP answer is (TestZfetchNativeAtHTTPServer). It was taken for a
// connection cut inside a frame, or a stall, and retried until
// --retry-for ran out (status 4, "connection reset" or "timed out").
func TestZfetchNativeShortWrongAnswer(t *testing.T) {
	for _, c := range []struct {
		name, answer string
		hold         bool
		want         string
	}{
		{"http-400-close", "HTTP/1.1 400 Bad Request\r\n\r\n", false, "answered in HTTP"},
		{"http-400-hold", "HTTP/1.0 400\r\n", true, "answered in HTTP"},
		{"smtp-greeting", "220 mail.example ESMTP\r\n", true, `it begins "220 mail.example"`},
		{"pop3-close", "+OK\r\n", false, `it begins "+OK\r\n"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := wrongServer(t, func(conn net.Conn) {
				conn.Write([]byte(c.answer))
				if !c.hold {
					// Read what the client sent (so the close is a
					// FIN, not a reset), then close.
					conn.SetReadDeadline(time.Now().Add(time.Second))
					bufio.NewReader(conn).Peek(24)
					conn.(*net.TCPConn).CloseWrite()
				}
			})
			refusedAtOnce(t, addr+"/f.bin", c.want)
		})
	}
}

// refusedAtOnce runs zfetch on url and wants a protocol violation: status
// 1 at once (no retry, well within --retry-for), saying want, nothing
// written.
func refusedAtOnce(t *testing.T, url, want string) {
	t.Helper()
	out := t.TempDir()
	start := time.Now()
	r := Zfetch(t, "-O", out, "--retry-for", "20s", url)
	took := time.Since(start)
	if r.Code != 1 || took > 10*time.Second || strings.Contains(r.Stderr, "retrying") || !strings.Contains(r.Stderr, want) {
		t.Fatalf("exit %d after %v, want 1 at once, saying %s: %s", r.Code, took, want, r.Stderr)
	}
	if es, _ := os.ReadDir(out); len(es) != 0 {
		t.Fatalf("wrote %v", es)
	}
}

// TestZfetchHTTPAtOtherProtocol: an http:// URL at a server that speaks
// another protocol and never sends an HTTP head's empty line (a zfs-serve
// native frame, an SSH banner, an SMTP greeting), then closes or waits:
// a protocol violation, status 1 at once, saying what answered. It was
// taken for a connection cut inside the head, or a stall, and retried
// until --retry-for ran out (status 4).
func TestZfetchHTTPAtOtherProtocol(t *testing.T) {
	native := "ZR\x01\x01\x00\x00\x00\x0a" + strings.Repeat("\x00", 24) + "bad magic!"
	for _, c := range []struct {
		name, answer string
		hold         bool
		want         string
	}{
		{"native-frame", native, false, "a zfs:// URL"},
		{"ssh-banner", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", true, `"SSH-2.0-OpenSSH_9.2p1`},
		{"smtp-greeting", "220 mail.example ESMTP\r\n", true, `"220 mail.example ESMTP"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := wrongServer(t, func(conn net.Conn) {
				conn.SetReadDeadline(time.Now().Add(time.Second))
				bufio.NewReader(conn).Peek(16)
				conn.Write([]byte(c.answer))
				if !c.hold {
					conn.(*net.TCPConn).CloseWrite()
				}
			})
			refusedAtOnce(t, "http://"+addr+"/f.bin", c.want)
		})
	}
}

// TestZfetchNativeStatWithBody: a server that answers STAT with a body
// (STAT has none, docs/PROTOCOL.md) is a protocol violation of the STAT,
// status 1. It went unseen, and the body was read as the header of the
// GET that followed on the connection: the error blamed the GET ("GET
// /f.bin: ... bad magic "he"") and left a .part behind.
func TestZfetchNativeStatWithBody(t *testing.T) {
	addr := wrongServer(t, func(conn net.Conn) {
		var hdr [24]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return
		}
		io.CopyN(io.Discard, conn, int64(binary.BigEndian.Uint16(hdr[4:])))
		resp := make([]byte, 32, 37)
		copy(resp, "ZR\x01\x00\x01\x00")            // ok, a file
		binary.BigEndian.PutUint64(resp[8:], 1000)  // size
		binary.BigEndian.PutUint64(resp[16:], 1e18) // mtime
		binary.BigEndian.PutUint64(resp[24:], 5)    // body length
		conn.Write(append(resp, "hello"...))
		io.Copy(io.Discard, conn)
	})
	out := t.TempDir()
	r := Zfetch(t, "-O", out, "--retry-for", "20s", addr+"/f.bin")
	if r.Code != 1 || !strings.Contains(r.Stderr, "STAT /f.bin") || !strings.Contains(r.Stderr, "5-byte body") || strings.Contains(r.Stderr, "retrying") {
		t.Fatalf("exit %d, want 1 blaming the STAT's body: %s", r.Code, r.Stderr)
	}
	if es, _ := os.ReadDir(out); len(es) != 0 {
		t.Fatalf("wrote %v", es)
	}
}
