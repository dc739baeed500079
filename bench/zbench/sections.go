package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/bench/internal/proc"
)

// Columns, reused by the sections.
var (
	mGBps      = Metric{Key: "gbps", Label: "GB/s", Scale: 1, Digits: 2}
	mCPUGB     = Metric{Key: "cpu_per_gb", Label: "server CPU s/GB", Scale: 1, Digits: 2, Lower: true}
	mRPS       = Metric{Key: "rps", Label: "k req/s", Scale: 1e-3, Digits: 1}
	mP50       = Metric{Key: "p50_us", Label: "p50 ms", Scale: 1e-3, Digits: 2, Lower: true}
	mP99       = Metric{Key: "p99_us", Label: "p99 ms", Scale: 1e-3, Digits: 2, Lower: true}
	mCPUReq    = Metric{Key: "cpu_us_per_req", Label: "server CPU µs/req", Scale: 1, Digits: 1, Lower: true}
	mClientReq = Metric{Key: "client_us_per_req", Label: "client CPU µs/req", Scale: 1, Digits: 1, Lower: true}
	mPeakRSS   = Metric{Key: "peak_rss", Label: "peak RSS MiB", Scale: 1.0 / (1 << 20), Digits: 1, Lower: true, Memory: true}
	mIdleRSS   = Metric{Key: "idle_rss", Label: "RSS before MiB", Scale: 1.0 / (1 << 20), Digits: 1, Lower: true, Memory: true}
	mConnKiB   = Metric{Key: "kib_per_conn", Label: "KiB per connection", Scale: 1, Digits: 1, Lower: true, Memory: true}
)

func zfsKeys() []string {
	var ks []string
	for _, m := range zfsModes {
		ks = append(ks, "zfs-"+m)
	}
	return ks
}

// runAll runs every section (or those in only) and the profiles.
func (b *bench) runAll(only map[string]bool) error {
	want := func(ids ...string) bool {
		if len(only) == 0 {
			return true
		}
		for _, id := range ids {
			if only[id] {
				return true
			}
		}
		return false
	}
	b.logf("creating data in %s", b.data)
	info, err := b.makeData()
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	b.res.Data = info
	b.logf("%s", info)

	if want("stream1", "fetch", "streams4", "streams16", "mid16", "small64", "wrk") {
		ss, err := b.startAll(allServers())
		if err != nil {
			return err
		}
		byKey := func(keys ...string) []*server {
			var out []*server
			for _, k := range keys {
				out = append(out, ss[k])
			}
			return out
		}
		streamers := byKey(allServers()...)
		webish := byKey(append(zfsKeys(), "nginx", "gohttp")...)
		if want("stream1") {
			b.stream1(streamers)
		}
		if want("fetch") {
			b.fetch(ss)
		}
		if want("streams4") {
			b.streams(streamers, 4)
		}
		if want("streams16") {
			b.streams(streamers, 16)
		}
		if want("mid16") {
			b.mid16(streamers)
		}
		if want("small64") {
			// The accept mode beside the handoff: how keep-alive
			// connections spread over the workers when they accept.
			if acc, err := b.start(zfsAcceptKey); err != nil {
				b.fail("small64: %v", err)
				b.small(webish, 64, nil)
			} else {
				b.small(append(webish[:1:1], append([]*server{acc}, webish[1:]...)...), 64, nil)
				b.stop(acc)
			}
		}
		if want("wrk") {
			b.wrkCheck(ss["nginx"])
		}
		b.stopAll()
	}
	if want("small1000", "newconn") {
		// Fresh servers: the memory figures at 1000 connections must not
		// carry what earlier sections left in the heaps.
		keys := append(zfsKeys(), "nginx", "gohttp")
		if want("newconn") {
			keys = append(keys, zfsAcceptKey)
		}
		ss, err := b.startAll(keys)
		if err != nil {
			return err
		}
		var list []*server
		idle := map[string]int64{}
		for _, k := range keys {
			if k == zfsAcceptKey {
				continue // newconn only
			}
			list = append(list, ss[k])
			idle[k] = proc.RSS(ss[k].pids())
		}
		if want("small1000") {
			b.small(list, b.p.ManyConns, idle)
		}
		if want("newconn") {
			b.newConn([]*server{ss["zfs-sendfile"], ss[zfsAcceptKey], ss["nginx"], ss["gohttp"]})
		}
		b.stopAll()
	}
	if wantHTTP(want) {
		// zfs-serve (HTTP on, its default) and nginx, fresh: wrk and curl
		// are the clients for both.
		keys := []string{"zfs-sendfile", "nginx"}
		if want("httpnewconn") {
			keys = append(keys, zfsAcceptKey)
		}
		ss, err := b.startAll(keys)
		if err != nil {
			return err
		}
		rows := httpRows(ss["zfs-sendfile"], ss["nginx"])
		if want("http64") {
			b.httpSmall(rows, 64)
		}
		if want("http1000") {
			b.httpSmall(rows, b.p.ManyConns)
		}
		if want("http404") {
			b.httpNotFound(rows)
		}
		if want("httpnewconn") {
			acc := *ss[zfsAcceptKey]
			acc.key, acc.label, acc.proto = zfsAcceptKey+"/http", "zfs-serve (accept), HTTP", "http"
			b.httpNewConn(append(rows[:1:1], &acc, rows[1]))
		}
		if want("httpfetch") {
			b.httpFetch(rows)
		}
		b.stopAll()
	}
	if want("httplog") {
		ss, err := b.startAll([]string{zfsLogKey, nginxLogKey})
		if err != nil {
			return err
		}
		zl := *ss[zfsLogKey]
		zl.proto = "http"
		b.httpLog([]*server{&zl, ss[nginxLogKey]})
		b.stopAll()
	}
	if want("verify") {
		ss, err := b.startAll([]string{"zfs-sendfile", "nginx"})
		if err != nil {
			return err
		}
		b.verify(ss["nginx"], ss["zfs-sendfile"])
		b.stopAll()
	}
	if want("idle") {
		b.idle() // a fresh server for every run
	}
	if want("soak") {
		ss, err := b.startAll([]string{"zfs-sendfile", "nginx"})
		if err != nil {
			return err
		}
		b.soak([]*server{ss["zfs-sendfile"], ss["nginx"]})
		b.stopAll()
	}
	if want("profile") {
		b.profileAll()
	}
	return nil
}

func (b *bench) startAll(keys []string) (map[string]*server, error) {
	ss := map[string]*server{}
	for _, k := range keys {
		s, err := b.start(k)
		if err != nil {
			b.stopAll()
			return nil, err
		}
		ss[k] = s
	}
	return ss, nil
}

// rounds measures every server runs times, interleaved (round i starts at
// server i), after one warm-up run each that is not recorded.
//
// A server that fails (in its warm-up or a run) is not run again in this
// section: its row says it failed, with the error, and the other servers
// are measured as usual.
func (b *bench) rounds(sec *Section, ss []*server, opt measureOpt, warm, fn func(s *server) (sample, error)) {
	failed := map[*server]bool{}
	if warm != nil && !b.quick {
		for _, s := range ss {
			if _, err := warm(s); err != nil {
				row := sec.row(s.key, s.label)
				row.Errors = append(row.Errors, "warm-up: "+err.Error())
				b.fail("%s: warm-up of %s: %v", sec.ID, s.label, err)
				failed[s] = true
			}
		}
	}
	for i := range b.p.Runs {
		for j := range ss {
			s := ss[(i+j)%len(ss)]
			if failed[s] {
				continue
			}
			if !b.measure(sec, s, opt, func() (sample, error) { return fn(s) }) {
				failed[s] = true
			}
		}
	}
	// Keep the report's row order fixed whatever the round order was.
	var rows []*Row
	for _, s := range ss {
		if r := sec.find(s.key); r != nil {
			rows = append(rows, r)
		}
	}
	sec.Rows = rows
}

func (b *bench) stream1(ss []*server) {
	sec := &Section{ID: "stream1", Title: fmt.Sprintf("One %s stream", sizeName(b.p.BigSize)),
		What:    "One connection fetches the big file once. The receiver is the same for every server: `zsink`, a blocking socket read into a 1 MiB buffer and thrown away (native protocol for zfs-serve, HTTP/1.1 for the others). GB/s = bytes / (connect to last byte). Server CPU = utime+stime of the server's processes (supervisor or master and all workers) over the run, per GB sent.",
		Metrics: []Metric{mGBps, mCPUGB}, Ratios: []string{"gbps", "cpu_per_gb"}}
	b.quiet(sec)
	b.rounds(sec, ss, measureOpt{},
		func(s *server) (sample, error) { return b.sink(s, 1, 0) },
		func(s *server) (sample, error) { return b.sink(s, 1, 0) })
	b.finish(sec)
}

func (b *bench) fetch(ss map[string]*server) {
	sec := &Section{ID: "fetch", Title: fmt.Sprintf("One %s file as users fetch it: zfetch vs curl", sizeName(b.p.BigSize)),
		What:    "`zfetch -q -o - URL >/dev/null` against zfs-serve and `curl -s -o /dev/null URL` against the HTTP servers, timed from process start to exit (so it includes each tool's start-up, as a user sees it). Both discard the body; the issue's 1.3x target is zfetch<-zfs-serve (sendfile) over curl<-nginx.",
		Metrics: []Metric{mGBps, mCPUGB}, Ratios: []string{"gbps"}}
	b.quiet(sec)
	type client struct {
		s   *server
		key string
		run func() (sample, error)
	}
	var cs []client
	for _, k := range zfsKeys() {
		s := ss[k]
		cs = append(cs, client{s, "zfetch<-" + k, func() (sample, error) {
			return b.timed(b.p.BigSize, false, filepath.Join(b.bin, "zfetch"), "-q", "-o", "-", "zfs://"+s.addr+"/big.bin")
		}})
	}
	for _, k := range []string{"nginx", "gohttp", "probe"} {
		s := ss[k]
		cs = append(cs, client{s, "curl<-" + k, func() (sample, error) {
			return b.timed(b.p.BigSize, true, "curl", "-s", "-f", "-o", "/dev/null", "-w", "%{size_download}", "http://"+s.addr+"/big.bin")
		}})
	}
	// rounds works on servers; the rows here are client+server pairs, so
	// give each pair its own row key through a shallow copy of the server.
	var keyed []*server
	runs := map[string]func() (sample, error){}
	for _, c := range cs {
		cp := *c.s
		cp.key = c.key
		tool, _, _ := strings.Cut(c.key, "<-")
		cp.label = tool + " <- " + c.s.label
		keyed = append(keyed, &cp)
		runs[c.key] = c.run
	}
	b.rounds(sec, keyed, measureOpt{},
		func(s *server) (sample, error) { return runs[s.key]() },
		func(s *server) (sample, error) { return runs[s.key]() })
	b.finish(sec)
}

func (b *bench) streams(ss []*server, n int) {
	sec := &Section{ID: fmt.Sprintf("streams%d", n), Title: fmt.Sprintf("%d parallel streams", n),
		What:    fmt.Sprintf("%d connections, each fetching the big file over and over (keep-alive) with `zsink` for %v; GB/s = body bytes received within that time, all streams together.", n, b.p.StreamDur),
		Metrics: []Metric{mGBps, mCPUGB}, Ratios: []string{"gbps", "cpu_per_gb"}}
	b.quiet(sec)
	warm := func(s *server) (sample, error) { return b.sink(s, n, b.p.StreamDur/4) }
	b.rounds(sec, ss, measureOpt{}, warm, func(s *server) (sample, error) { return b.sink(s, n, b.p.StreamDur) })
	b.finish(sec)
}

func (b *bench) mid16(ss []*server) {
	sec := &Section{ID: "mid16", Title: "1 MiB files, 16 connections",
		What:    fmt.Sprintf("`zload -c 16` keep-alive for %v, cycling through the %d files of 1 MiB.", b.p.LoadDur, b.p.NMid),
		Metrics: []Metric{mRPS, mGBps, mP99, mCPUGB}, Ratios: []string{"rps", "p99_us", "cpu_per_gb"}}
	b.quiet(sec)
	spec := loadSpec{conns: 16, dur: b.p.LoadDur}
	warm := func(s *server) (sample, error) { w := spec; w.dur = spec.dur / 4; return b.load(s, w) }
	b.rounds(sec, ss, measureOpt{}, warm, func(s *server) (sample, error) { return b.load(s, spec) })
	b.finish(sec)
}

// small is the 4 KiB keep-alive workload; with idle RSS figures (fresh
// servers) it also reports peak memory.
func (b *bench) small(ss []*server, conns int, idle map[string]int64) {
	sec := &Section{ID: fmt.Sprintf("small%d", conns), Title: fmt.Sprintf("4 KiB files, %d connections, keep-alive", conns),
		What:    fmt.Sprintf("`zload -c %d` keep-alive for %v, cycling through the %d files of 4 KiB (connections are all open before the clock starts). Latency is per request, write to last byte. Server CPU per request is the server processes' CPU time over the run divided by the requests; client CPU is zload's.", conns, b.p.LoadDur, b.p.NSmall),
		Metrics: []Metric{mRPS, mP50, mP99, mCPUReq, mClientReq}, Ratios: []string{"rps", "p99_us", "cpu_us_per_req"}}
	b.quiet(sec)
	spec := loadSpec{conns: conns, dur: b.p.LoadDur, small: true}
	warm := func(s *server) (sample, error) { w := spec; w.dur = spec.dur / 4; return b.load(s, w) }
	opt := measureOpt{rss: idle != nil}
	// The memory figure is taken on the first (fresh) run; the warm-up
	// would hide nothing, but keep the order: idle, then the runs.
	b.rounds(sec, ss, opt, warm, func(s *server) (sample, error) { return b.load(s, spec) })
	b.finish(sec)
	if idle == nil {
		return
	}
	mem := &Section{ID: fmt.Sprintf("mem%d", conns), Title: fmt.Sprintf("Memory at %d connections", conns),
		What:    fmt.Sprintf("Resident memory (VmRSS) of all the server's processes summed (supervisor or master and every worker), on servers started fresh for this section: before any request, and the peak sampled every 50 ms during the %d-connection runs above. KiB per connection = (peak - before) / %d. Memory is not a timing: it is reported even if the box was busy.", conns, conns),
		Metrics: []Metric{mIdleRSS, mPeakRSS, mConnKiB}, Ratios: []string{"peak_rss"}, Pre: sec.Pre, MaxForeign: sec.MaxForeign, MaxLoad1: sec.MaxLoad1}
	for _, r := range sec.Rows {
		mr := mem.row(r.Key, r.Label)
		for _, run := range r.Runs {
			m := sample{"idle_rss": float64(idle[r.Key]), "peak_rss": run["peak_rss"]}
			m["kib_per_conn"] = (run["peak_rss"] - float64(idle[r.Key])) / 1024 / float64(conns)
			mr.Runs = append(mr.Runs, m)
		}
	}
	b.res.Sections = append(b.res.Sections, mem)
}

func (b *bench) wrkCheck(ng *server) {
	sec := &Section{ID: "wrk", Title: "Load tool check: zload vs wrk on nginx",
		What:    fmt.Sprintf("The same request (`/small/0000.bin`, 4 KiB) against nginx for %v with 64 connections, from `wrk -t2 -c64 --latency` and from `zload -proto http -c 64`. The two must agree within ~10%% for zload's figures to stand for what wrk would say. Both clients share the two cores with the server, so the client that costs more CPU per request leaves less to the server: client CPU per request is shown.", b.p.LoadDur),
		Metrics: []Metric{mRPS, mP50, mP99, mClientReq}, Ratios: []string{"rps", "p99_us", "client_us_per_req"}}
	b.quiet(sec)
	zl, wk := *ng, *ng
	zl.key, zl.label = "zload", "zload -> nginx"
	wk.key, wk.label = "wrk", "wrk -> nginx"
	path := "/small/0000.bin"
	b.rounds(sec, []*server{&zl, &wk}, measureOpt{},
		func(s *server) (sample, error) {
			if s.key == "wrk" {
				return b.wrk(s, wrkSpec{conns: 64, dur: b.p.LoadDur / 3, path: path})
			}
			return b.load(s, loadSpec{conns: 64, dur: b.p.LoadDur / 3, path: path})
		},
		func(s *server) (sample, error) {
			if s.key == "wrk" {
				return b.wrk(s, wrkSpec{conns: 64, dur: b.p.LoadDur, path: path})
			}
			return b.load(s, loadSpec{conns: 64, dur: b.p.LoadDur, path: path})
		})
	b.finish(sec)
}

func (b *bench) newConn(ss []*server) {
	sec := &Section{ID: "newconn", Title: "4 KiB files, a new connection per request",
		What:    fmt.Sprintf("`zload -newconn -c %d` for %v: each of %d clients connects, sends one request, reads the 4 KiB answer and closes, over and over. For zfs-serve this path includes the supervisor's accept and the SCM_RIGHTS handoff to a worker; in zfs-serve (accept), `dispatch = \"accept\"`, the worker accepts itself. Latency includes the connect.", b.p.NewConns, b.p.LoadDur, b.p.NewConns),
		Metrics: []Metric{mRPS, mP50, mP99, mCPUReq, mClientReq}, Ratios: []string{"rps", "p99_us", "cpu_us_per_req"}}
	b.quiet(sec)
	spec := loadSpec{conns: b.p.NewConns, dur: b.p.LoadDur, small: true, newConn: true}
	warm := func(s *server) (sample, error) { w := spec; w.dur = spec.dur / 4; return b.load(s, w) }
	b.rounds(sec, ss, measureOpt{}, warm, func(s *server) (sample, error) { return b.load(s, spec) })
	b.finish(sec)
}

// soak reads RSS along SoakTotal keep-alive 4 KiB requests on fresh servers.
func (b *bench) soak(ss []*server) {
	step := b.p.SoakTotal / int64(b.p.SoakSteps)
	sec := &Section{ID: "soak", Title: fmt.Sprintf("RSS over %s requests", countName(b.p.SoakTotal)),
		What: fmt.Sprintf("Fresh servers; %s warm-up requests, then RSS (all processes summed); then %d x %s keep-alive 4 KiB requests over 64 connections (`zload -n`), RSS after each. Growth is from the first reading to the last. Flat = the last reading within 10%% (and 4 MiB) of the reading after step 1, so a one-time settling of the Go heap in the first step is shown but not mistaken for a leak; the growth before step 1 is its own column. Memory is not a timing: it is reported even if the box was busy.", countName(b.p.SoakWarm), b.p.SoakSteps, countName(step))}
	b.quiet(sec)
	for _, s := range ss {
		row := sec.row(s.key, s.label)
		warm := loadSpec{conns: 64, n: b.p.SoakWarm, small: true}
		if _, err := b.load(s, warm); err != nil {
			b.fail("soak: warm-up of %s: %v", s.label, err)
			continue
		}
		time.Sleep(200 * time.Millisecond)
		m := sample{"rss_0": float64(proc.RSS(s.pids()))}
		var reqs, secs float64
		for i := 1; i <= b.p.SoakSteps; i++ {
			a, _ := proc.Snapshot(b.session)
			r, err := b.load(s, loadSpec{conns: 64, n: step, small: true})
			z, _ := proc.Snapshot(b.session)
			if err != nil {
				b.fail("soak: %s: %v", s.label, err)
				break
			}
			u := proc.Since(a, z)
			sec.MaxForeign = max(sec.MaxForeign, u.Foreign)
			sec.MaxLoad1 = max(sec.MaxLoad1, u.Load1)
			reqs += r["requests"]
			secs += r["requests"] / r["rps"]
			m[fmt.Sprintf("rss_%d", i)] = float64(proc.RSS(s.pids()))
			m["requests"] = reqs
		}
		if secs > 0 {
			m["rps"] = reqs / secs
		}
		row.Runs = append(row.Runs, m)
		b.logf("soak: %s: %s", s.label, soakLine(m, b.p.SoakSteps))
	}
	b.res.Sections = append(b.res.Sections, sec)
}

func soakLine(m sample, steps int) string {
	var parts []string
	for i := 0; i <= steps; i++ {
		parts = append(parts, fmt.Sprintf("%.1f", m[fmt.Sprintf("rss_%d", i)]/(1<<20)))
	}
	return "RSS MiB " + strings.Join(parts, " -> ")
}

func sizeName(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d-byte", n)
}

func countName(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%d million", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}
