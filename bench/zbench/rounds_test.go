package main

import (
	"errors"
	"io"
	"os/exec"
	"testing"
)

// A server that fails its warm-up is not run again in the section; the
// other server is measured every round.
func TestRoundsSkipFailedServer(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p := fullParams()
	p.Runs, p.BusyCPU = 3, 1e9
	b := &bench{p: p, log: io.Discard, res: &Results{}}
	bad := &server{key: zfsHTTPKey, label: "zfs-serve (sendfile), HTTP", cmd: cmd}
	good := &server{key: "nginx", label: "nginx", cmd: cmd}
	calls := map[string]int{}
	fn := func(s *server) (sample, error) {
		calls[s.key]++
		if s == bad {
			return nil, errors.New("wrk: Socket errors: connect 0, read 9, write 0, timeout 0")
		}
		return sample{"rps": 1, "requests": 1}, nil
	}
	sec := &Section{ID: "http64"}
	b.rounds(sec, []*server{bad, good}, measureOpt{}, fn, fn)
	if calls[zfsHTTPKey] != 1 || calls["nginx"] != 1+p.Runs {
		t.Errorf("calls %v, want the failed server once (its warm-up) and nginx %d times", calls, 1+p.Runs)
	}
	if r := sec.find(zfsHTTPKey); r == nil || len(r.Errors) != 1 || len(r.Runs) != 0 {
		t.Errorf("failed row %+v, want one error and no runs", r)
	}
	if r := sec.find("nginx"); r == nil || len(r.Runs) != p.Runs {
		t.Errorf("nginx row %+v, want %d runs", r, p.Runs)
	}
	if len(b.failed) != 1 {
		t.Errorf("failures %q, want one", b.failed)
	}
}
