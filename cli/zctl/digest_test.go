package zctl

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/ctl"
)

// digestDaemon answers digest: "/bad..." paths fail, the others get a
// digest made of their length; it records the batches and timeouts.
type digestDaemon struct {
	fakeDaemon
	batches  [][]string
	timeouts []time.Duration
}

func (d *digestDaemon) Digest(_ context.Context, paths []string, timeout time.Duration) ([]ctl.Digest, error) {
	d.mu.Lock()
	d.batches = append(d.batches, paths)
	d.timeouts = append(d.timeouts, timeout)
	d.mu.Unlock()
	var ds []ctl.Digest
	for _, p := range paths {
		if strings.HasPrefix(p, "/bad") {
			ds = append(ds, ctl.Digest{Path: p, Error: "not found: " + p})
			continue
		}
		ds = append(ds, ctl.Digest{Path: p, SHA256: fmt.Sprintf("%064x", len(p))})
	}
	return ds, nil
}

func serveHandler(t *testing.T, h ctl.Handler) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "z")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "c.sock")
	ln, err := ctl.Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &ctl.Server{Handler: h, Log: slog.New(slog.DiscardHandler)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return path
}

func TestDigest(t *testing.T) {
	d := &digestDaemon{}
	sock := serveHandler(t, d)
	sum := func(p string) string { return fmt.Sprintf("%064x", len(p)) }
	for _, tc := range []struct {
		args    []string
		out     string
		errOut  string
		code    int
		batches int
	}{
		{[]string{"/a", "b/c.iso"}, sum("/a") + "  /a\n" + sum("b/c.iso") + "  b/c.iso\n", "", 0, 1},
		{[]string{"--timeout", "90s", "/a", "/bad"}, sum("/a") + "  /a\n", "zctl: not found: /bad\n", 1, 1},
		{[]string{"a\\b", "x\ny"}, "\\" + sum("a\\b") + "  a\\\\b\n\\" + sum("x\ny") + "  x\\ny\n", "", 0, 1},
		{[]string{}, "", "", cli.ExitUsage, 0},
		{[]string{"--timeout", "0s", "/a"}, "", "", cli.ExitUsage, 0},
	} {
		d.batches, d.timeouts = nil, nil
		out, errOut, err := run(append([]string{"-s", sock, "digest"}, tc.args...)...)
		if cli.Code(err) != tc.code || out != tc.out || (tc.code != cli.ExitUsage && errOut != tc.errOut) || len(d.batches) != tc.batches {
			t.Errorf("zctl digest %q: %v (exit %d)\nstdout %q\nwant   %q\nstderr %q\nwant   %q\nbatches %q",
				tc.args, err, cli.Code(err), out, tc.out, errOut, tc.errOut, d.batches)
		}
	}
	// More paths than one request may carry go in batches, in order,
	// each with what is left of the timeout.
	var paths []string
	var want strings.Builder
	for i := range ctl.MaxDigestPaths + 3 {
		p := fmt.Sprintf("/f%d", i)
		paths = append(paths, p)
		fmt.Fprintf(&want, "%s  %s\n", sum(p), p)
	}
	d.batches, d.timeouts = nil, nil
	out, _, err := run(append([]string{"-s", sock, "digest", "--timeout", "1m"}, paths...)...)
	if err != nil || out != want.String() {
		t.Fatalf("batched: %v\n%s", err, out)
	}
	if len(d.batches) != 2 || len(d.batches[0]) != ctl.MaxDigestPaths || d.timeouts[0] > time.Minute || d.timeouts[1] > d.timeouts[0] {
		t.Errorf("batches of %d and %d paths, timeouts %v", len(d.batches[0]), len(d.batches[1]), d.timeouts)
	}
}

// TestDigestBatches: a request stays within the control protocol's line
// limit and path count, however long the paths.
func TestDigestBatches(t *testing.T) {
	long := strings.Repeat("\x01", 4096) // JSON escapes each byte into 6
	for _, tc := range []struct {
		paths []string
		want  int
	}{
		{[]string{"/a"}, 1},
		{make([]string, ctl.MaxDigestPaths+1), ctl.MaxDigestPaths},
		{[]string{long, long, long}, 2},
		{[]string{long + long + long}, 1}, // one path always goes, the daemon refuses it if it must
	} {
		if got := nextBatch(tc.paths); got != tc.want {
			t.Errorf("%d paths of %d bytes: batch of %d, want %d", len(tc.paths), len(tc.paths[0]), got, tc.want)
		}
		n := nextBatch(tc.paths)
		if b, _ := json.Marshal(ctl.Request{V: ctl.Version, Cmd: ctl.CmdDigest, Paths: tc.paths[:n], Timeout: "4m59.999999999s"}); len(b) > ctl.MaxLine && n > 1 {
			t.Errorf("a request of %d bytes", len(b))
		}
	}
}
