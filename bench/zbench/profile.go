package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zfs-serve/zfs-serve/bench/internal/proc"
)

// profileAll gathers the evidence behind the findings: which system calls
// each zero-copy mode really makes (the proof that sendfile is taken),
// syscalls per request for zfs-serve and nginx (strace -c), where the CPU
// goes (perf, kernel and user), and a Go CPU profile of the workers and
// the supervisor (zprof, zfs-serve with the profiler on a trigger).
func (b *bench) profileAll() {
	haveStrace := exec.Command("strace", "-V").Run() == nil
	havePerf := exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-o", os.DevNull, "true").Run() == nil
	b.haveStrace = haveStrace
	b.havePerfStat = exec.Command("perf", "stat", "-e", "raw_syscalls:sys_enter", "-o", os.DevNull, "true").Run() == nil
	b.logf("== profile: strace %v, perf %v", haveStrace, havePerf)
	if !haveStrace {
		b.res.Profiles = append(b.res.Profiles, &Profile{Title: "strace", Text: "strace is not installed: no syscall counts (apt-get install strace)"})
	}
	if haveStrace {
		b.modeSyscalls()
	}
	ss, err := b.startAll([]string{"zfs-sendfile", "nginx"})
	if err != nil {
		b.fail("profile: %v", err)
		return
	}
	zfs, ng := ss["zfs-sendfile"], ss["nginx"]
	nReq := int64(20000)
	nConn := int64(5000)
	if b.quick {
		nReq, nConn = 2000, 500
	}
	if haveStrace || havePerf {
		small := loadSpec{conns: 64, n: nReq, small: true}
		fresh := loadSpec{conns: 32, n: nConn, small: true, newConn: true}
		for _, sv := range []*server{zfs, ng} {
			workers := "supervisor and workers"
			if sv == ng {
				workers = "master and workers"
			}
			b.syscalls(fmt.Sprintf("%s: syscalls per 4 KiB request, keep-alive, 64 connections", sv.label), "request", sv,
				[]group{{workers, sv.pids()}}, b.loadWork(sv, small))
			groups := []group{{workers, sv.pids()}}
			if sv == zfs {
				groups = []group{{"supervisor", []int{sv.pid()}}, {"workers", sv.workerPIDs()}}
			}
			b.syscalls(fmt.Sprintf("%s: syscalls per new connection (one 4 KiB request each, 32 clients)", sv.label), "connection", sv,
				groups, b.loadWork(sv, fresh))
			b.syscalls(fmt.Sprintf("%s: syscalls per GiB, one %s stream", sv.label, sizeName(b.p.BigSize)), "GiB", sv,
				[]group{{workers, sv.pids()}}, func() (float64, error) {
					_, err := b.sink(sv, 1, 0)
					return float64(b.p.BigSize) / (1 << 30), err
				})
		}
	}
	if havePerf {
		d := b.p.ProfileDur
		b.perfLoad(zfs.label+" workers: 4 KiB keep-alive, 64 connections", zfs.workerPIDs(), loadSpec{conns: 64, dur: d + time.Second, small: true}, zfs)
		b.perfLoad(ng.label+" workers: 4 KiB keep-alive, 64 connections", ng.workerPIDs(), loadSpec{conns: 64, dur: d + time.Second, small: true}, ng)
		b.perfLoad(zfs.label+" supervisor and workers: new connection per 4 KiB request, 32 clients", zfs.pids(), loadSpec{conns: 32, dur: d + time.Second, small: true, newConn: true}, zfs)
		b.perfLoad(ng.label+" master and workers: new connection per 4 KiB request, 32 clients", ng.pids(), loadSpec{conns: 32, dur: d + time.Second, small: true, newConn: true}, ng)
	}
	b.stopAll()
	b.pprofAll()
}

// modeSyscalls proves which system call moves the bytes in each mode.
func (b *bench) modeSyscalls() {
	calls := []string{"sendfile", "splice", "mmap", "pread64", "read", "write", "sendmsg"}
	p := &Profile{Title: "Which system call moves the file bytes, per zero-copy mode",
		What: fmt.Sprintf("strace -f -c on the workers while `zload -c 4` fetches %d files of 1 MiB (one request each), counted per request. The expected call must be there and the others must not carry the body: this is the proof that sendfile is really taken (Go would silently fall back to a copy behind any wrapper).", b.p.NMid),
		Cmd:  "strace -f -c -e trace=" + strings.Join(calls, ",") + " -p WORKER...",
		Per:  "request"}
	var lines []string
	lines = append(lines, "mode       "+strings.Join(calls, " "))
	expect := map[string]string{"sendfile": "sendfile", "splice": "splice", "mmap": "mmap", "copy": "pread64"}
	for _, mode := range zfsModes {
		s, err := b.start("zfs-" + mode)
		if err != nil {
			b.fail("profile: %v", err)
			continue
		}
		counts, n, err := b.strace(s.workerPIDs(), calls, func() (int64, error) {
			r, err := b.load(s, loadSpec{conns: 4, n: int64(b.p.NMid)})
			if err != nil {
				return 0, err
			}
			return int64(r["requests"]), nil
		})
		b.stop(s)
		if err != nil {
			b.fail("profile: strace %s: %v", mode, err)
			continue
		}
		line := fmt.Sprintf("%-10s", mode)
		for _, c := range calls {
			line += fmt.Sprintf(" %*.2f", len(c), float64(counts[c].Calls)/float64(n))
		}
		lines = append(lines, line)
		if counts[expect[mode]].Calls == 0 {
			b.fail("zero_copy = %q made no %s call while serving %d files", mode, expect[mode], n)
		}
		if mode != "sendfile" && counts["sendfile"].Calls > 0 {
			b.fail("zero_copy = %q made %d sendfile calls", mode, counts["sendfile"].Calls)
		}
		if mode != "copy" && counts["pread64"].Calls > n/2 {
			b.fail("zero_copy = %q read the file through user space (%d pread64 calls for %d requests)", mode, counts["pread64"].Calls, n)
		}
	}
	p.Text = strings.Join(lines, "\n")
	b.res.Profiles = append(b.res.Profiles, p)
	b.logf("mode syscalls:\n%s", p.Text)
}

// strace attaches strace -c to pids (all their threads), runs work, and
// returns the syscall counts and the number of operations work reported.
func (b *bench) strace(pids []int, only []string, work func() (int64, error)) (map[string]Count, int64, error) {
	var n int64
	counts, err := b.trace("strace", []group{{"", pids}}, only, func() (float64, error) {
		var err error
		n, err = work()
		return float64(n), err
	})
	if err != nil {
		return nil, 0, err
	}
	return counts[0], n, nil
}

// group is a set of processes whose syscalls are counted together.
type group struct {
	name string
	pids []int
}

// trace counts the syscalls of each group (one counter process per group,
// all at once) while work runs, with tool "strace" (strace -f -c) or
// "perf" (perf stat on the syscall tracepoints: exact counts, no slowdown).
// PerOp is calls divided by what work returns.
func (b *bench) trace(tool string, groups []group, only []string, work func() (float64, error)) ([]map[string]Count, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type tracer struct {
		cmd    *exec.Cmd
		out    string
		stderr *lockedBuffer
	}
	var ts []tracer
	stopAll := func() {
		for _, t := range ts {
			t.cmd.Process.Signal(syscall.SIGINT)
			t.cmd.Wait()
		}
	}
	for i, g := range groups {
		out := filepath.Join(b.scratch, fmt.Sprintf("%s-%d-%d.txt", tool, time.Now().UnixNano(), i))
		var args []string
		if tool == "strace" {
			args = []string{"-f", "-c", "-o", out}
			if len(only) > 0 {
				args = append(args, "-e", "trace="+strings.Join(only, ","))
			}
			for _, p := range g.pids {
				args = append(args, "-p", strconv.Itoa(p))
			}
		} else {
			// Interval output (-I) tells when the counters are live; the
			// intervals are summed. Naming the syscalls (rather than the
			// 350-odd sys_enter_* tracepoints) keeps perf's start fast.
			args = []string{"stat", "-x", ",", "-I", "250", "-e", perfEvents(), "-o", out, "-p", pidList(g.pids)}
		}
		t := tracer{cmd: exec.CommandContext(ctx, tool, args...), out: out, stderr: &lockedBuffer{}}
		t.cmd.Stderr = t.stderr
		if err := t.cmd.Start(); err != nil {
			stopAll()
			return nil, err
		}
		ts = append(ts, t)
	}
	// Wait until every counter is live: strace says "attached" per
	// process, perf stat writes its first interval.
	deadline := time.Now().Add(15 * time.Second)
	for i, t := range ts {
		for time.Now().Before(deadline) {
			if tool == "strace" && strings.Count(t.stderr.String(), "attached") >= len(groups[i].pids) {
				break
			}
			if b, _ := os.ReadFile(t.out); tool == "perf" && strings.Contains(string(b), "raw_syscalls:sys_enter") {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond)
	ops, werr := work()
	stopAll()
	if werr != nil {
		return nil, werr
	}
	var res []map[string]Count
	for _, t := range ts {
		text, err := os.ReadFile(t.out)
		if err != nil {
			return nil, fmt.Errorf("%s wrote nothing: %v: %s", tool, err, tail(t.stderr.String(), 300))
		}
		var counts map[string]Count
		if tool == "strace" {
			counts = parseStraceC(string(text))
		} else {
			counts = parsePerfStat(string(text))
		}
		for k, c := range counts {
			c.PerOp = float64(c.Calls) / math.Max(ops, 1e-9)
			counts[k] = c
		}
		res = append(res, counts)
	}
	return res, nil
}

// perfSyscalls are the syscalls counted one by one with perf stat; the
// rest show up as "other" (raw_syscalls:sys_enter counts them all).
var perfSyscalls = []string{
	"read", "write", "readv", "writev", "pread64", "recvfrom", "recvmsg", "sendto", "sendmsg",
	"sendfile64", "splice", "mmap", "munmap", "madvise", "mprotect", "openat", "openat2", "close",
	"newfstat", "newfstatat", "statx", "fcntl", "ioctl", "accept4", "getsockopt", "setsockopt", "shutdown",
	"epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "nanosleep", "clock_nanosleep", "sched_yield",
	"getpid", "gettid", "tgkill", "rt_sigreturn", "rt_sigprocmask", "sigaltstack", "clone3", "pipe2",
}

// perfNames maps tracepoint names to the names strace prints.
var perfNames = map[string]string{"sendfile64": "sendfile", "newfstat": "fstat"}

func perfEvents() string {
	ev := []string{"raw_syscalls:sys_enter"}
	for _, s := range perfSyscalls {
		ev = append(ev, "syscalls:sys_enter_"+s)
	}
	return strings.Join(ev, ",")
}

// parsePerfStat sums perf stat -x, -I output: "time,count,unit,event,...".
func parsePerfStat(text string) map[string]Count {
	counts := map[string]Count{}
	var total, named int64
	for _, line := range strings.Split(text, "\n") {
		f := strings.Split(line, ",")
		if len(f) < 4 {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue // "<not counted>": the thread did not run
		}
		if f[3] == "raw_syscalls:sys_enter" {
			total += n
			continue
		}
		name, ok := strings.CutPrefix(f[3], "syscalls:sys_enter_")
		if !ok || n == 0 {
			continue
		}
		if s, ok := perfNames[name]; ok {
			name = s
		}
		c := counts[name]
		c.Name, c.Calls = name, c.Calls+n
		counts[name] = c
		named += n
	}
	if total > named {
		counts["(other)"] = Count{Name: "(other)", Calls: total - named}
	}
	return counts
}

func (b *bench) loadWork(s *server, l loadSpec) func() (float64, error) {
	return func() (float64, error) {
		r, err := b.load(s, l)
		if err != nil {
			return 0, err
		}
		return r["requests"], nil
	}
}

// syscalls counts each group's syscalls per operation: exactly, with perf
// stat (if the kernel lets it), and with strace -c as the issue asks.
// strace stops the process at every call, which changes what the Go
// runtime does around them (more nanosleep, futex, sched_yield), so the
// table shows both and is sorted by the exact count.
func (b *bench) syscalls(title, per string, s *server, groups []group, work func() (float64, error)) {
	var exact, traced []map[string]Count
	var err error
	a, _ := proc.Snapshot(b.session)
	if b.havePerfStat {
		if exact, err = b.trace("perf", groups, nil, work); err != nil {
			b.fail("profile: %s: perf stat: %v", title, err)
			return
		}
	}
	if b.haveStrace {
		if traced, err = b.trace("strace", groups, nil, work); err != nil {
			b.fail("profile: %s: strace: %v", title, err)
			return
		}
	}
	z, _ := proc.Snapshot(b.session)
	for i, g := range groups {
		merged := map[string]Count{}
		if exact != nil {
			for k, c := range exact[i] {
				merged[k] = c
			}
		}
		if traced != nil {
			for k, c := range traced[i] {
				m := merged[k]
				m.Name = k
				m.StracePerOp, m.Errors, m.TimeUs = c.PerOp, c.Errors, c.TimeUs
				if exact == nil {
					m.PerOp, m.Calls = c.PerOp, c.Calls
				}
				merged[k] = m
			}
		}
		t := title
		if g.name != "" {
			t = fmt.Sprintf("%s (%s)", title, g.name)
		}
		var tools []string
		if exact != nil {
			tools = append(tools, fmt.Sprintf("perf stat -I 250 -e raw_syscalls:sys_enter,syscalls:sys_enter_{read,sendmsg,...} -p %s", pidList(g.pids)))
		}
		if traced != nil {
			tools = append(tools, fmt.Sprintf("strace -f -c -p %s", pidList(g.pids)))
		}
		b.res.Profiles = append(b.res.Profiles, &Profile{Title: t, Per: per, Table: sortedCounts(merged),
			Exact: exact != nil,
			What:  "Counted twice, in two runs of the same work: exactly with perf stat on the syscall tracepoints (no slowdown), and with strace -c (which stops the process at every call, so the Go runtime's own nanosleep, futex and sched_yield counts grow under it: read those from the perf column).",
			Cmd:   strings.Join(tools, "; "), Load: proc.Since(a, z).Foreign})
		b.logf("profile: %s: %s", t, topCalls(merged, 8))
	}
}

// lockedBuffer is a buffer that exec's copier goroutine writes while the
// caller polls it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// parseStraceC reads strace -c's table.
func parseStraceC(text string) map[string]Count {
	counts := map[string]Count{}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || strings.HasPrefix(line, "%") || strings.HasPrefix(line, "-") {
			continue
		}
		name := f[len(f)-1]
		if name == "total" {
			continue
		}
		calls, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			continue
		}
		c := Count{Name: name, Calls: calls}
		c.TimeUs, _ = strconv.ParseFloat(f[2], 64)
		if len(f) >= 6 {
			c.Errors, _ = strconv.ParseInt(f[4], 10, 64)
		}
		counts[name] = c
	}
	return counts
}

func sortedCounts(counts map[string]Count) []Count {
	var out []Count
	for _, c := range counts {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Calls != out[j].Calls {
			return out[i].Calls > out[j].Calls
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func topCalls(counts map[string]Count, n int) string {
	var parts []string
	for i, c := range sortedCounts(counts) {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", c.Name, c.PerOp))
	}
	return strings.Join(parts, ", ")
}

func pidList(pids []int) string {
	var s []string
	for _, p := range pids {
		s = append(s, strconv.Itoa(p))
	}
	return strings.Join(s, ",")
}

// perfLoad samples pids with perf (cpu-clock, kernel and user) while zload
// runs, and keeps the flat top of the profile by symbol.
func (b *bench) perfLoad(title string, pids []int, l loadSpec, s *server) {
	data := filepath.Join(b.scratch, fmt.Sprintf("perf-%d.data", time.Now().UnixNano()))
	loadDone := make(chan error, 1)
	go func() { _, err := b.load(s, l); loadDone <- err }()
	time.Sleep(500 * time.Millisecond)
	a, _ := proc.Snapshot(b.session)
	rec := exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-o", data, "-p", pidList(pids),
		"--", "sleep", fmt.Sprint(b.p.ProfileDur.Seconds()))
	recOut, recErr := rec.CombinedOutput()
	z, _ := proc.Snapshot(b.session)
	if err := <-loadDone; err != nil {
		b.fail("profile: perf %s: load: %v", title, err)
		return
	}
	if recErr != nil {
		b.fail("profile: perf record %s: %v: %s", title, recErr, tail(string(recOut), 300))
		return
	}
	report := func(sortBy string, limit string) string {
		out, _ := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sortBy,
			"--percent-limit", limit).CombinedOutput()
		var keep []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
				continue
			}
			keep = append(keep, strings.TrimRight(line, " "))
		}
		return strings.Join(keep, "\n")
	}
	split := report("dso", "2")
	top := report("sym", "1")
	lines := strings.Split(top, "\n")
	if len(lines) > 40 {
		lines = lines[:40]
	}
	os.Remove(data)
	b.res.Profiles = append(b.res.Profiles, &Profile{Title: "perf: " + title,
		What: "Where the CPU time of these processes goes, kernel and user, flat (self time), symbols above 1%; first by binary ([kernel.kallsyms] is the kernel).",
		Cmd:  fmt.Sprintf("perf record -e cpu-clock -F 1999 -p %s -- sleep %v; perf report --no-children --sort dso / --sort sym   while  zload %s", pidList(pids), b.p.ProfileDur.Seconds(), strings.Join(b.zloadArgs(s, l), " ")),
		Text: split + "\n\n" + strings.Join(lines, "\n"), Load: proc.Since(a, z).Foreign})
	b.logf("profile: perf %s done", title)
}

// pprofAll profiles zfs-serve's supervisor and workers with Go's profiler
// (zprof) in the two request workloads.
func (b *bench) pprofAll() {
	zprof := filepath.Join(b.bin, "zprof")
	if _, err := os.Stat(zprof); err != nil {
		b.res.Profiles = append(b.res.Profiles, &Profile{Title: "pprof", Text: "zprof was not built: no Go profile"})
		return
	}
	dir := filepath.Join(b.scratch, "pprof")
	os.MkdirAll(dir, 0o755)
	b.zfsExe, b.zfsEnv = zprof, []string{"ZBENCH_PROFILE_DIR=" + dir}
	s, err := b.start("zfs-sendfile")
	b.zfsExe, b.zfsEnv = "", nil
	if err != nil {
		b.fail("profile: pprof: %v", err)
		return
	}
	defer b.stop(s)
	s.label = "zfs-serve (sendfile, under zprof)"
	work := []struct {
		title string
		l     loadSpec
	}{
		{"4 KiB keep-alive, 64 connections", loadSpec{conns: 64, small: true}},
		{"new connection per 4 KiB request, 32 clients", loadSpec{conns: 32, small: true, newConn: true}},
	}
	for n, w := range work {
		w.l.dur = b.p.ProfileDur + time.Second
		loadDone := make(chan error, 1)
		go func() { _, err := b.load(s, w.l); loadDone <- err }()
		time.Sleep(500 * time.Millisecond)
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("start.%d", n)), nil, 0o644)
		time.Sleep(b.p.ProfileDur + 150*time.Millisecond) // the triggers are polled every 100 ms
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("stop.%d", n)), nil, 0o644)
		if err := <-loadDone; err != nil {
			b.fail("profile: pprof %s: %v", w.title, err)
			continue
		}
		deadline := time.Now().Add(10 * time.Second)
		var sup, workers []string
		for time.Now().Before(deadline) {
			sup, _ = filepath.Glob(filepath.Join(dir, fmt.Sprintf("supervisor-*-%d.done", n)))
			workers, _ = filepath.Glob(filepath.Join(dir, fmt.Sprintf("worker-*-%d.done", n)))
			if len(sup) == 1 && len(workers) == len(s.workerPIDs()) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		roles := []struct {
			name  string
			files []string
		}{{"workers", workers}}
		if w.l.newConn { // with keep-alive the supervisor has nothing to do
			roles = append(roles, struct {
				name  string
				files []string
			}{"supervisor", sup})
		}
		for _, role := range roles {
			var profs []string
			for _, f := range role.files {
				profs = append(profs, strings.TrimSuffix(f, ".done")+".pprof")
			}
			if len(profs) == 0 {
				b.fail("profile: pprof %s: no %s profile written", w.title, role.name)
				continue
			}
			args := append([]string{"tool", "pprof", "-top", "-nodecount=30"}, profs...)
			out, err := exec.Command(b.goTool, args...).CombinedOutput()
			if err != nil {
				b.fail("profile: go tool pprof: %v: %s", err, tail(string(out), 300))
				continue
			}
			b.res.Profiles = append(b.res.Profiles, &Profile{
				Title: fmt.Sprintf("pprof: zfs-serve %s, %s", role.name, w.title),
				What:  "Go CPU profile (user-space Go code and the syscalls it makes, as seen from Go; kernel time inside a syscall is charged to the syscall function), top 30 by flat time.",
				Cmd:   fmt.Sprintf("zprof (zfs-serve with the profiler on a trigger), %v  while  zload %s; go tool pprof -top", b.p.ProfileDur, strings.Join(b.zloadArgs(s, w.l), " ")),
				Text:  pprofTrim(string(out)),
			})
		}
		b.logf("profile: pprof %s done", w.title)
	}
}

// pprofTrim drops pprof's header lines that name local files.
func pprofTrim(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Time:") || strings.HasPrefix(l, "Type:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.TrimSpace(strings.Join(keep, "\n"))
}
