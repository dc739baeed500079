package main

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// smallFilesLua is the wrk script that spreads requests over the 4 KiB
// files as zload's -pathfmt/-npaths does (see the script's comment).
//
//go:embed smallfiles.lua
var smallFilesLua []byte

// wrkThreads is wrk's -t: one thread per core of the 2-core box the
// benchmark was made for, as the load tool check has always used.
const wrkThreads = 2

// wrkSpec is one wrk invocation.
type wrkSpec struct {
	conns    int
	dur      time.Duration
	path     string // one fixed path; "" spreads over b.p.NSmall paths (smallfiles.lua)
	pathFmt  string // those paths' format; "" for the 4 KiB files, /small/%04d.bin
	close    bool   // Connection: close: a new connection per request
	notFound bool   // every answer must be a 404 (the paths name nothing)
}

// wrk runs wrk against s (HTTP only) and parses what it prints. With no
// fixed path and no path format every request is for one of the 4 KiB
// files, and the bytes wrk read per response are checked against that
// size. With notFound every answer must be an error status (wrk counts
// them; the paths name nothing, so they are the 404s).
func (b *bench) wrk(s *server, w wrkSpec) (sample, error) {
	args := []string{"-t" + strconv.Itoa(wrkThreads), "-c" + strconv.Itoa(w.conns), "-d" + wrkDuration(w.dur),
		"--latency", "--timeout", "5s"}
	if w.close {
		args = append(args, "-H", "Connection: close")
	}
	url := "http://" + s.addr + w.path
	if w.path == "" {
		script, err := b.smallFilesScript()
		if err != nil {
			return nil, err
		}
		pathFmt := w.pathFmt
		if pathFmt == "" {
			pathFmt = "/small/%04d.bin"
		}
		args = append(args, "-s", script, url, "--", strconv.Itoa(b.p.NSmall), pathFmt, strconv.Itoa(wrkThreads))
	} else {
		args = append(args, url)
	}
	out, cpu, err := b.command(w.dur+time.Minute, "wrk", args...)
	if err != nil {
		return nil, err
	}
	r, err := parseWrk(string(out), w.notFound)
	if err != nil {
		return nil, err
	}
	if w.path == "" && w.pathFmt == "" {
		// A 4 KiB body and a response header: anything else is not the
		// file (wrk does not look at bodies).
		if per := r["read_bytes"] / r["requests"]; per < 4096 || per > 4096+2048 {
			return nil, fmt.Errorf("wrk read %.0f bytes per response, want a 4 KiB body plus a header", per)
		}
	}
	r["client_cpu_s"] = cpu
	return r, nil
}

// smallFilesScript writes the embedded script into the scratch folder once
// and returns its path.
func (b *bench) smallFilesScript() (string, error) {
	name := filepath.Join(b.scratch, "smallfiles.lua")
	if _, err := os.Stat(name); err == nil {
		return name, nil
	}
	if err := os.WriteFile(name, smallFilesLua, 0o644); err != nil {
		return "", fmt.Errorf("wrk script: %w", err)
	}
	return name, nil
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkTotal   = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(us|ms|s|m|h), ([0-9.]+)([KMGT]?B) read`)
	wrkLatency = regexp.MustCompile(`(?m)^\s+(50|90|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkErrors  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)`)
)

// parseWrk reads wrk's --latency output: req/s, requests, bytes read and
// the 50/90/99th percentiles. Any socket error, or no request at all, is
// an error: a server that fails is reported as failed, never as a slow
// figure. So is any error status, unless allErrors, which wants every
// response to have one (a run of 404s).
func parseWrk(text string, allErrors bool) (sample, error) {
	m := wrkRPS.FindStringSubmatch(text)
	if m == nil {
		return nil, fmt.Errorf("wrk output has no Requests/sec: %q", tail(text, 400))
	}
	statusErrs := 0.0
	for _, e := range wrkErrors.FindAllStringSubmatch(text, -1) {
		if e[1] == "" || !allErrors {
			return nil, fmt.Errorf("wrk: %s", e[0])
		}
		statusErrs, _ = strconv.ParseFloat(e[1], 64)
	}
	rps, _ := strconv.ParseFloat(m[1], 64)
	t := wrkTotal.FindStringSubmatch(text)
	if t == nil {
		return nil, fmt.Errorf("wrk output has no request count: %q", tail(text, 400))
	}
	n, _ := strconv.ParseFloat(t[1], 64)
	if n == 0 || rps == 0 {
		return nil, errors.New("wrk: no request completed")
	}
	if allErrors && statusErrs != n {
		return nil, fmt.Errorf("wrk: %.0f of %.0f responses had an error status, want all", statusErrs, n)
	}
	read, _ := strconv.ParseFloat(t[4], 64)
	// wrk prints sizes in binary units.
	switch t[5] {
	case "KB":
		read *= 1 << 10
	case "MB":
		read *= 1 << 20
	case "GB":
		read *= 1 << 30
	case "TB":
		read *= 1 << 40
	}
	r := sample{"rps": rps, "requests": n, "read_bytes": read}
	for _, l := range wrkLatency.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(l[2], 64)
		switch l[3] {
		case "ms":
			v *= 1e3
		case "s":
			v *= 1e6
		}
		r["p"+l[1]+"_us"] = v
	}
	return r, nil
}

func wrkDuration(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	return strconv.Itoa(max(s, 1)) + "s"
}
