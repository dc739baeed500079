package serve

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

func TestHeaderTimeout(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.HeaderTimeout = 100 * time.Millisecond })
	ts.client.Write([]byte("ZQ")) // a partial header, then silence
	select {
	case res := <-ts.result:
		if res.Outcome != OutcomeBadRequest && res.Outcome != OutcomeIdle {
			t.Fatalf("outcome %q", res.Outcome)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled header was not timed out")
	}
}

// TestSendTimeout: a client that stops reading is dropped once no byte has
// moved for send_timeout, in every mode, and one that reads slowly but
// steadily is not.
func TestSendTimeout(t *testing.T) {
	for _, mode := range config.Modes {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServer(t, mode, func(o *Options) { o.SendTimeout = 300 * time.Millisecond })
			ts.write(t, "f", random(32<<20))
			wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/f"})
			start := time.Now()
			select {
			case res := <-ts.result:
				if res.Outcome != OutcomeClientGone {
					t.Fatalf("outcome %q", res.Outcome)
				}
				if el := time.Since(start); el < 250*time.Millisecond {
					t.Fatalf("dropped after %v, before send_timeout", el)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a client that never reads was not dropped")
			}
		})
	}
	t.Run("steady reader", func(t *testing.T) {
		// Writability is signalled only once about a third of the socket
		// buffer (up to 4 MiB on loopback) has drained, so "no progress for
		// send_timeout" is judged at that grain, as nginx's send_timeout is.
		ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.SendTimeout = time.Second })
		data := random(16 << 20)
		ts.write(t, "f", data)
		wire.WriteRequest(ts.client, &wire.Request{Op: wire.OpGet, Path: "/f"})
		r, err := wire.ReadResponse(ts.br)
		if err != nil {
			t.Fatal(err)
		}
		// 1 MiB every 50ms: slow, but never a second without progress.
		got := make([]byte, 0, r.BodyLen)
		buf := make([]byte, 1<<20)
		for int64(len(got)) < r.BodyLen {
			n, err := io.ReadFull(ts.br, buf[:min(int64(len(buf)), r.BodyLen-int64(len(got)))])
			got = append(got, buf[:n]...)
			if err != nil {
				t.Fatalf("after %d bytes: %v", len(got), err)
			}
			time.Sleep(50 * time.Millisecond) // the client's pace, not synchronisation
		}
		if !bytes.Equal(got, data) {
			t.Fatal("body differs")
		}
	})
}

// TestHeaderTimeoutTrickle: header_timeout bounds the whole request, not
// each read, so a client sending one byte at a time cannot hold a
// connection open (slowloris).
func TestHeaderTimeoutTrickle(t *testing.T) {
	for _, first := range []bool{true, false} {
		name := map[bool]string{true: "new connection", false: "kept alive"}[first]
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.HeaderTimeout = 300 * time.Millisecond })
			ts.write(t, "f", []byte("x"))
			if !first {
				ts.do(t, wire.Request{Op: wire.OpStat, Path: "/f"})
			}
			req := wire.AppendRequest(nil, &wire.Request{Op: wire.OpStat, Path: "/f"})
			sent := make(chan int, 1)
			go func() {
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for i := range req {
					if _, err := ts.client.Write(req[i : i+1]); err != nil {
						sent <- i
						return
					}
					<-tick.C
					select {
					case <-ts.result:
						sent <- i + 1
						return
					default:
					}
				}
				sent <- len(req)
			}()
			if n := <-sent; n >= len(req) {
				t.Fatalf("the whole %d-byte request trickled in at 10 B/s with header_timeout 300ms", len(req))
			}
		})
	}
}
