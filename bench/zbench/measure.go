package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zfs-serve/zfs-serve/bench/internal/proc"
)

type sample = map[string]float64

// quiet samples the box for one second at a time, waiting up to
// params.QuietWait for it to be quiet, and records what it saw before the
// section. The benchmark's own servers are idle then, so the busy CPU
// measured is someone else's.
func (b *bench) quiet(sec *Section) {
	start := time.Now()
	for {
		a, _ := proc.Snapshot(b.session)
		time.Sleep(time.Second)
		z, _ := proc.Snapshot(b.session)
		u := proc.Since(a, z)
		sec.Pre = u
		if u.Foreign <= b.p.BusyCPU*0.6 || time.Since(start) >= b.p.QuietWait {
			break
		}
		b.logf("%s: box busy (%.2f CPUs used outside the benchmark, load %.2f); waiting", sec.ID, u.Foreign, u.Load1)
	}
	sec.Waited = time.Since(start).Seconds() - 1
	b.logf("== %s: box before: %.2f CPUs busy outside the benchmark, steal %.2f, loadavg %.2f", sec.ID, sec.Pre.Foreign, sec.Pre.Steal, sec.Pre.Load1)
}

// measureOpt adds optional readings to a run.
type measureOpt struct {
	rss bool // sample the server's RSS every 50 ms, keep the peak
}

// measure runs fn once against s and records what it returns, plus the
// server's CPU time (supervisor and workers) over the run and the box's
// foreign load. A run during which something outside the benchmark used
// more than params.BusyCPU is run again (twice at most); if it stays busy
// the section is marked busy and withheld from the report. It reports
// whether the run succeeded.
func (b *bench) measure(sec *Section, s *server, opt measureOpt, fn func() (sample, error)) bool {
	row := sec.row(s.key, s.label)
	for attempt := 0; ; attempt++ {
		pids := s.pids()
		a, _ := proc.Snapshot(b.session)
		cpu0 := proc.CPU(pids)
		var peak int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		if opt.rss {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.NewTicker(50 * time.Millisecond)
				defer t.Stop()
				for {
					peak = max(peak, proc.RSS(s.pids()))
					select {
					case <-stop:
						return
					case <-t.C:
					}
				}
			}()
		}
		m, err := fn()
		close(stop)
		wg.Wait()
		cpu1 := proc.CPU(pids)
		z, _ := proc.Snapshot(b.session)
		u := proc.Since(a, z)
		if err != nil {
			row.Errors = append(row.Errors, err.Error())
			b.fail("%s: %s: %v", sec.ID, s.label, err)
			return false
		}
		busy := u.Foreign > b.p.BusyCPU
		// Retry a busy run twice, unless the section is already lost.
		if busy && attempt < 2 && !b.quick && !sec.Busy {
			sec.Retries++
			b.logf("%s: %s: %.2f CPUs used outside the benchmark during the run (load %.2f); running it again", sec.ID, s.label, u.Foreign, u.Load1)
			time.Sleep(2 * time.Second)
			continue
		}
		cpu := (cpu1 - cpu0).Seconds()
		m["server_cpu_s"] = cpu
		if by := m["bytes"]; by > 0 {
			m["cpu_per_gb"] = cpu / (by / 1e9)
		}
		if n := m["requests"]; n > 0 {
			m["cpu_us_per_req"] = cpu * 1e6 / n
			if c, ok := m["client_cpu_s"]; ok {
				m["client_us_per_req"] = c * 1e6 / n
			}
		}
		if opt.rss {
			m["peak_rss"] = float64(peak)
		}
		m["foreign"] = u.Foreign
		row.Runs = append(row.Runs, m)
		sec.MaxForeign = max(sec.MaxForeign, u.Foreign)
		sec.MaxLoad1 = max(sec.MaxLoad1, u.Load1)
		if busy && !sec.Busy {
			sec.Busy = true
			sec.BusyWhy = fmt.Sprintf("%.2f CPUs used outside the benchmark during a run of %s, loadavg %.2f", u.Foreign, s.label, u.Load1)
		}
		b.logf("%s: %s: %s", sec.ID, s.label, brief(m))
		return true
	}
}

// finish records a section. Its verdict comes from its runs (each one's
// own foreign load); the sample before it only decided how long to wait
// and is shown with the section.
func (b *bench) finish(sec *Section) {
	b.res.Sections = append(b.res.Sections, sec)
}

func brief(m sample) string {
	var parts []string
	for _, k := range []string{"gbps", "rps", "p99_us", "cpu_per_gb", "client_cpu_per_gb", "cpu_us_per_req", "peak_rss", "foreign"} {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%.4g", k, v))
		}
	}
	return strings.Join(parts, " ")
}

// command runs a client program with a hard timeout and returns its
// standard output and its CPU time (user+system).
func (b *bench) command(timeout time.Duration, name string, args ...string) ([]byte, float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	var cpu float64
	if c.ProcessState != nil {
		cpu = (c.ProcessState.UserTime() + c.ProcessState.SystemTime()).Seconds()
	}
	if err != nil {
		return out.Bytes(), cpu, fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, tail(strings.TrimSpace(errb.String()), 500))
	}
	return out.Bytes(), cpu, nil
}

// sinkResult is zsink's JSON output.
type sinkResult struct {
	Bytes       int64   `json:"bytes"`
	Responses   int64   `json:"responses"`
	Seconds     float64 `json:"seconds"`
	BytesPerSec float64 `json:"bytes_per_sec"`
}

// sink runs zsink against s: streams connections, each fetching /big.bin
// once (dur 0) or repeatedly for dur.
func (b *bench) sink(s *server, streams int, dur time.Duration) (sample, error) {
	args := []string{"-json", "-proto", s.proto, "-addr", s.addr, "-path", "/big.bin", "-c", strconv.Itoa(streams)}
	if dur > 0 {
		args = append(args, "-d", dur.String())
	}
	out, cpu, err := b.command(2*time.Minute, filepath.Join(b.bin, "zsink"), args...)
	if err != nil {
		return nil, err
	}
	var r sinkResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("zsink output %q: %w", out, err)
	}
	if dur == 0 && r.Bytes != int64(streams)*b.p.BigSize {
		return nil, fmt.Errorf("zsink received %d bytes, want %d", r.Bytes, int64(streams)*b.p.BigSize)
	}
	if r.Bytes == 0 {
		return nil, fmt.Errorf("zsink received nothing")
	}
	return sample{"gbps": r.BytesPerSec / 1e9, "bytes": float64(r.Bytes), "client_cpu_s": cpu}, nil
}

// loadResult is zload's JSON output.
type loadResult struct {
	Requests    int64   `json:"requests"`
	Bytes       int64   `json:"bytes"`
	Errors      int64   `json:"errors"`
	Reconnects  int64   `json:"reconnects"`
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"rps"`
	BytesPerSec float64 `json:"bytes_per_sec"`
	P50         float64 `json:"p50_us"`
	P90         float64 `json:"p90_us"`
	P99         float64 `json:"p99_us"`
	P999        float64 `json:"p999_us"`
	Max         float64 `json:"max_us"`
	FirstError  string  `json:"first_error"`
}

// loadSpec is one zload invocation.
type loadSpec struct {
	conns   int
	dur     time.Duration
	n       int64
	newConn bool
	small   bool   // the 4 KiB files (else the 1 MiB files)
	path    string // one fixed path instead
}

func (b *bench) zloadArgs(s *server, l loadSpec) []string {
	args := []string{"-json", "-proto", s.proto, "-addr", s.addr, "-c", strconv.Itoa(l.conns)}
	switch {
	case l.path != "":
		args = append(args, "-path", l.path)
	case l.small:
		args = append(args, "-pathfmt", "/small/%04d.bin", "-npaths", strconv.Itoa(b.p.NSmall), "-expect", "4096")
	default:
		args = append(args, "-pathfmt", "/mid/%03d.bin", "-npaths", strconv.Itoa(b.p.NMid), "-expect", strconv.Itoa(1<<20))
	}
	if l.dur > 0 {
		args = append(args, "-d", l.dur.String())
	}
	if l.n > 0 {
		args = append(args, "-n", strconv.FormatInt(l.n, 10))
	}
	if l.newConn {
		args = append(args, "-newconn")
	}
	return args
}

// load runs zload against s.
func (b *bench) load(s *server, l loadSpec) (sample, error) {
	out, cpu, err := b.command(5*time.Minute, filepath.Join(b.bin, "zload"), b.zloadArgs(s, l)...)
	if err != nil {
		return nil, err
	}
	var r loadResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("zload output %q: %w", out, err)
	}
	if r.Errors > 0 {
		return nil, fmt.Errorf("zload: %d errors in %d requests, first: %s", r.Errors, r.Requests, r.FirstError)
	}
	if r.Requests == 0 {
		return nil, fmt.Errorf("zload: no request completed")
	}
	return sample{
		"rps": r.RPS, "gbps": r.BytesPerSec / 1e9, "requests": float64(r.Requests), "bytes": float64(r.Bytes),
		"p50_us": r.P50, "p90_us": r.P90, "p99_us": r.P99, "p999_us": r.P999, "max_us": r.Max,
		"reconnects": float64(r.Reconnects), "client_cpu_s": cpu,
	}, nil
}

// timed runs a whole-file download command (zfetch or curl) with the
// body discarded and returns the transfer rate over its wall time. With
// sizeOnStdout the command prints the byte count it received (curl -w),
// which is checked; otherwise the body goes to /dev/null and the command's
// exit status vouches for it (zfetch verifies the length).
func (b *bench) timed(size int64, sizeOnStdout bool, name string, args ...string) (sample, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = devnull, &errb
	if sizeOnStdout {
		c.Stdout = &out
	}
	t0 := time.Now()
	err = c.Run()
	secs := time.Since(t0).Seconds()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, tail(errb.String(), 300))
	}
	if sizeOnStdout {
		if got, _ := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64); got != size {
			return nil, fmt.Errorf("%s received %q bytes, want %d", filepath.Base(name), out.String(), size)
		}
	}
	cpu := (c.ProcessState.UserTime() + c.ProcessState.SystemTime()).Seconds()
	return sample{"gbps": float64(size) / secs / 1e9, "bytes": float64(size), "seconds": secs, "client_cpu_s": cpu}, nil
}
