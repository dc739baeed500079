package serve

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// churnRound sends one or two pipelined requests on c and checks the answers.
func churnRound(c *testServer, http1 bool, pipelined int, data []byte) error {
	c.client.SetDeadline(time.Now().Add(20 * time.Second))
	var out bytes.Buffer
	for range pipelined {
		if http1 {
			out.WriteString("GET /f HTTP/1.1\r\nHost: a\r\n\r\n")
		} else if err := wire.WriteRequest(&out, &wire.Request{Op: wire.OpGet, Path: "/f"}); err != nil {
			return err
		}
	}
	if _, err := c.client.Write(out.Bytes()); err != nil {
		return err
	}
	for i := range pipelined {
		var body []byte
		if http1 {
			resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
			if err != nil {
				return fmt.Errorf("response %d: %w", i, err)
			}
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				return fmt.Errorf("response %d: status %d, %v", i, resp.StatusCode, err)
			}
		} else {
			r, err := wire.ReadResponse(c.br)
			if err != nil {
				return fmt.Errorf("response %d: %w", i, err)
			}
			body = make([]byte, r.BodyLen)
			if _, err := io.ReadFull(c.br, body); err != nil || r.Status != wire.StatusOK {
				return fmt.Errorf("response %d: status %v, %v", i, r.Status, err)
			}
		}
		if !bytes.Equal(body, data) {
			return fmt.Errorf("response %d: %d bytes, not the file's", i, len(body))
		}
	}
	return nil
}

// TestParkChurn: connections churn between busy and parked (a sweep runs
// all the time, so they park between most requests), with pipelined
// requests in both protocols: every request is answered once, whole, and
// every connection reports one result with all its requests when its
// client closes (half of them half-close first).
func TestParkChurn(t *testing.T) {
	for _, w := range []waitMode{waitEpoll, waitPoller} {
		t.Run(w.String(), func(t *testing.T) { testParkChurn(t, w) })
	}
}

func testParkChurn(t *testing.T, w waitMode) {
	const conns, rounds = 48, 25
	ts := newParkServer(t, w, true, func(o *Options) { o.IdleTimeout = time.Minute })
	data := random(3000)
	ts.write(t, "f", data)
	cs := []*testServer{ts}
	for range conns - 1 {
		c := &testServer{srv: ts.srv, root: ts.root, result: make(chan Result, 1)}
		c.connect(t)
		cs = append(cs, c)
	}
	stop := make(chan struct{})
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ts.srv.sweep(time.Now())
			time.Sleep(50 * time.Microsecond)
		}
	}()
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			http1 := i%2 == 1
			for r := range rounds {
				if err := churnRound(c, http1, 1+(i+r)%3, data); err != nil {
					t.Errorf("connection %d round %d: %v", i, r, err)
					return
				}
				if r%5 == 0 {
					// Idle long enough to be parked before the next one.
					for deadline := time.Now().Add(5 * time.Second); ts.srv.parked() == 0 && time.Now().Before(deadline); {
						time.Sleep(time.Millisecond)
					}
				}
			}
			if i%4 == 0 {
				c.client.(interface{ CloseWrite() error }).CloseWrite()
				if _, err := bufio.NewReader(c.br).ReadByte(); err != io.EOF {
					t.Errorf("connection %d after its half-close: %v, want EOF", i, err)
				}
			}
			c.client.Close()
		}()
	}
	wg.Wait()
	close(stop)
	<-swept
	want := 0
	for i := range conns {
		for r := range rounds {
			want += 1 + (i+r)%3
		}
	}
	got := 0
	for i, c := range cs {
		select {
		case res := <-c.result:
			got += res.Requests
			if res.Outcome != OutcomeClosed {
				t.Errorf("connection %d: %+v", i, res)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("connection %d reported no result", i)
		}
		select {
		case res := <-c.result:
			t.Errorf("connection %d reported twice: %+v", i, res)
		default:
		}
	}
	if got != want {
		t.Errorf("%d requests counted, %d sent", got, want)
	}
	ts.srv.Wait()
	if st := ts.srv.Stats(); st.Active != 0 {
		t.Errorf("%d active after every client closed", st.Active)
	}
}
