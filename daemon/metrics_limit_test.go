package daemon

import (
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
)

// TestMetricsConnLimit: the metrics listener holds at most
// maxMetricsConns connections open at once. It is not authenticated, and
// each connection it holds is one of the supervisor's descriptors, which
// the file listeners' accept loops, the control socket and the workers'
// channels share: whoever could reach the port could exhaust them by
// holding connections (a second under ReadHeaderTimeout, a minute
// kept-alive), and the supervisor then accepted neither file connections
// nor zctl ("too many open files"). Past the limit a connection is
// closed at once; once the others close, the listener serves again.
func TestMetricsConnLimit(t *testing.T) {
	s := loopSupervisor(t, stateServing)
	s.dispatch.Store(&[]*workerProc{{}})
	s.cfg = &config.Config{MetricsListen: "127.0.0.1:0"}
	if err := s.openMetrics(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.closeMetrics)
	addr := s.metrics.listener.addr
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip(err)
		}
		return len(ents)
	}
	before := fds()
	extra := 100
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range maxMetricsConns + extra {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(200 * time.Millisecond) // the server accepts them all
	// Each client end is one descriptor here; the server ends count too.
	if held := fds() - before - len(conns); held > maxMetricsConns+8 {
		t.Errorf("%d connections open: the server holds %d descriptors for them, want at most %d", len(conns), held, maxMetricsConns)
	}
	// The connections over the limit are closed by the server: their
	// reads end at once (well within ReadHeaderTimeout, 5 s).
	ended := make(chan bool, len(conns))
	for _, c := range conns {
		go func() {
			c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			_, err := c.Read(make([]byte, 1))
			ended <- err == io.EOF || isReset(err)
		}()
	}
	closed := 0
	for range conns {
		if <-ended {
			closed++
		}
	}
	if closed < extra {
		t.Errorf("%d of %d connections over the limit closed", closed, extra)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + addr + "/livez")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the metrics listener does not serve again once the connections closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isReset(err error) bool {
	ne, ok := err.(*net.OpError)
	return ok && !ne.Timeout()
}
