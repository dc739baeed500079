package main

import "fmt"

// The HTTP sections measure zfs-serve's HTTP/1.1 side (served on the same
// port as its native protocol) against nginx with independent clients, the
// same for both servers: wrk for requests, curl for the big file. The
// native sections, with zload and zfetch, run in the same benchmark run;
// the report sets the three side by side (report_http.go).

// httpSectionIDs are the HTTP sections, in run order.
var httpSectionIDs = []string{"http64", "http1000", "http404", "httpnewconn", "httpfetch"}

// httpRows returns the rows of the HTTP sections: zfs-serve in its default
// mode spoken to over HTTP, then nginx.
func httpRows(zfs, ng *server) []*server {
	h := *zfs
	h.key, h.label, h.proto = zfsHTTPKey, "zfs-serve (sendfile), HTTP", "http"
	return []*server{&h, ng}
}

// zfsHTTPKey is zfs-serve's row in the HTTP sections.
const zfsHTTPKey = "zfs-sendfile/http"

// httpSmall is the 4 KiB keep-alive workload with wrk as the client.
func (b *bench) httpSmall(ss []*server, conns int) {
	sec := &Section{ID: fmt.Sprintf("http%d", conns), Title: fmt.Sprintf("HTTP: 4 KiB files, %d connections, keep-alive (wrk for both)", conns),
		What: fmt.Sprintf("`wrk -t%d -c%d -d%s --latency -s smallfiles.lua URL -- %d` against zfs-serve's HTTP side (its one port, the native protocol's too) and against nginx: keep-alive, the requests spread over the %d files of 4 KiB as the native sections spread them (`bench/zbench/smallfiles.lua`: each wrk thread cycles through every path). wrk opens its connections inside the measured time. Latency is wrk's, request written to response read. Server CPU per request is the server processes' CPU time over the run (zfs-serve: supervisor and every worker; nginx: master and workers) divided by the requests; client CPU is wrk's. Each response is checked to be a 4 KiB body plus a header by wrk's bytes read; any socket error or non-2xx answer fails the run.",
			wrkThreads, conns, wrkDuration(b.p.LoadDur), b.p.NSmall, b.p.NSmall),
		Metrics: []Metric{mRPS, mP50, mP99, mCPUReq, mClientReq}, Ratios: []string{"rps", "p99_us", "cpu_us_per_req"}}
	b.quiet(sec)
	spec := wrkSpec{conns: conns, dur: b.p.LoadDur}
	warm := func(s *server) (sample, error) { w := spec; w.dur = spec.dur / 4; return b.wrk(s, w) }
	b.rounds(sec, ss, measureOpt{}, warm, func(s *server) (sample, error) { return b.wrk(s, spec) })
	b.finish(sec)
}

// httpNotFound is the keep-alive workload for names that do not exist:
// what a server on the internet answers all day to scanners and stale
// links.
func (b *bench) httpNotFound(ss []*server) {
	sec := &Section{ID: "http404", Title: "HTTP: 404s, 64 connections, keep-alive (wrk for both)",
		What: fmt.Sprintf("`wrk -t%d -c64 -d%s --latency -s smallfiles.lua URL -- %d /small/missing-%%04d.bin`: as the 4 KiB HTTP sections, but every path names nothing (%d names in an existing folder), so every answer is a 404 with its short text, on a kept-alive connection. Every response must have an error status (wrk counts those of 400 and above) and no socket error is allowed. After the warm-up the kernel's dentry cache knows every name is missing, for both servers alike; nginx's `open_file_cache_errors` is off (its default), and zfs-serve's open-file cache keeps no negative entries either.",
			wrkThreads, wrkDuration(b.p.LoadDur), b.p.NSmall, b.p.NSmall),
		Metrics: []Metric{mRPS, mP50, mP99, mCPUReq, mClientReq}, Ratios: []string{"rps", "p99_us", "cpu_us_per_req"}}
	b.quiet(sec)
	spec := wrkSpec{conns: 64, dur: b.p.LoadDur, pathFmt: "/small/missing-%04d.bin", notFound: true}
	warm := func(s *server) (sample, error) { w := spec; w.dur = spec.dur / 4; return b.wrk(s, w) }
	b.rounds(sec, ss, measureOpt{}, warm, func(s *server) (sample, error) { return b.wrk(s, spec) })
	b.finish(sec)
}

// httpNewConn is the 4 KiB workload with a new connection per request:
// wrk sends "Connection: close", the server closes after the response and
// wrk connects again for the next request.
func (b *bench) httpNewConn(ss []*server) {
	sec := &Section{ID: "httpnewconn", Title: "HTTP: 4 KiB files, a new connection per request (wrk for both)",
		What: fmt.Sprintf("`wrk -t%d -c%d -d%s -H 'Connection: close' -s smallfiles.lua`: every request asks the server to close the connection after its response, and wrk opens a new one for the next request (it reconnects whenever a response does not keep the connection alive), so each of the %d connections in flight pays connect, accept and, in zfs-serve, the supervisor's handoff to a worker (in zfs-serve (accept), `dispatch = \"accept\"`: the worker's own accept), for every request. The same files and checks as the keep-alive HTTP sections. wrk starts a request's latency when it writes it, after its connect completed, so the latency leaves out the handshake but includes the server's accept (and handoff).",
			wrkThreads, b.p.NewConns, wrkDuration(b.p.LoadDur), b.p.NewConns),
		Metrics: []Metric{mRPS, mP50, mP99, mCPUReq, mClientReq}, Ratios: []string{"rps", "p99_us", "cpu_us_per_req"}}
	b.quiet(sec)
	spec := wrkSpec{conns: b.p.NewConns, dur: b.p.LoadDur, close: true}
	warm := func(s *server) (sample, error) { w := spec; w.dur = spec.dur / 4; return b.wrk(s, w) }
	b.rounds(sec, ss, measureOpt{}, warm, func(s *server) (sample, error) { return b.wrk(s, spec) })
	b.finish(sec)
}

// httpFetch downloads the big file with curl from each server.
func (b *bench) httpFetch(ss []*server) {
	sec := &Section{ID: "httpfetch", Title: fmt.Sprintf("HTTP: one %s file with curl (curl for both)", sizeName(b.p.BigSize)),
		What:    "`curl -sS -f -o /dev/null -w %{size_download} URL` from zfs-serve's HTTP side and from nginx, timed from process start to exit as in the zfetch section; the byte count curl reports is checked. Server CPU is per GB sent.",
		Metrics: []Metric{mGBps, mCPUGB}, Ratios: []string{"gbps", "cpu_per_gb"}}
	b.quiet(sec)
	var keyed []*server
	for _, s := range ss {
		cp := *s
		cp.key = "curl<-" + s.key
		cp.label = "curl <- " + s.label
		keyed = append(keyed, &cp)
	}
	run := func(s *server) (sample, error) {
		return b.timed(b.p.BigSize, true, "curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}", "http://"+s.addr+"/big.bin")
	}
	b.rounds(sec, keyed, measureOpt{}, run, run)
	b.finish(sec)
}

// httpLog is the 4 KiB keep-alive workload over HTTP with both servers'
// access logs on, each into a file: what an operator moving from nginx
// runs.
func (b *bench) httpLog(ss []*server) {
	sec := &Section{ID: "httplog", Title: "HTTP: 4 KiB files, 64 connections, access log to a file (wrk for both)",
		What: fmt.Sprintf("As the 64-connection HTTP section (`wrk -t%d -c64 -d%s --latency -s smallfiles.lua URL -- %d`), on fresh servers with their access logs on, each into a file in its own scratch folder: nginx's `access_log FILE` (its default format, unbuffered, as configured by default), zfs-serve's `access_log = true` with `access_log_path` (its lines, batched: one write per 512 KiB or 50 ms). The files are on the scratch folder's file system.",
			wrkThreads, wrkDuration(b.p.LoadDur), b.p.NSmall),
		Metrics: []Metric{mRPS, mP50, mP99, mCPUReq, mClientReq}, Ratios: []string{"rps", "p99_us", "cpu_us_per_req"}}
	b.quiet(sec)
	spec := wrkSpec{conns: 64, dur: b.p.LoadDur}
	warm := func(s *server) (sample, error) { w := spec; w.dur = spec.dur / 4; return b.wrk(s, w) }
	b.rounds(sec, ss, measureOpt{}, warm, func(s *server) (sample, error) { return b.wrk(s, spec) })
	b.finish(sec)
}

// wantHTTP reports whether any HTTP section is selected.
func wantHTTP(want func(...string) bool) bool { return want(httpSectionIDs...) }
