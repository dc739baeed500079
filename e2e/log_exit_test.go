package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLogWrittenWhenSupervisorDies: a worker whose supervisor is killed
// exits, through its death pipe or its closed channel (whichever it sees
// first), and writes first the lines it logged (its processes log in
// batches, internal/logbuf). Requests on one keep-alive connection: each
// access line is logged before the next request is read, so once the
// last response is in, every line but the last one's is in the worker's
// log. A few rounds, as the
// worker's two ways out race (on the old code, where the death pipe's
// way skipped the flush, a round lost lines only now and then).
func TestLogWrittenWhenSupervisorDies(t *testing.T) {
	root := t.TempDir()
	body := bytes.Repeat([]byte("x"), 4096)
	if err := os.WriteFile(filepath.Join(root, "f"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1, Config: "access_log = true\n"})
		pid := WorkerPIDs(d.MustStatus())[0]
		c := dial(t, d.Addr)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		const n = 5
		for i := range n {
			fmt.Fprintf(c, "GET /f?i=%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("round %d, request %d: %v", round, i, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, body) {
				t.Fatalf("round %d, request %d: %d, %d bytes, %v", round, i, resp.StatusCode, len(b), err)
			}
		}
		d.Cmd.Process.Kill()
		if !waitFor(10*time.Second, func() bool { return !alive(pid) }) {
			t.Fatalf("worker %d outlived its supervisor", pid)
		}
		c.Close()
		log := d.Log()
		for i := range n - 1 {
			if !strings.Contains(log, fmt.Sprintf(`path="/f?i=%d"`, i)) {
				t.Fatalf("round %d: request %d's access line, logged before the supervisor died, is not in the log:\n%s", round, i, tail(log, 20))
			}
		}
	}
}
