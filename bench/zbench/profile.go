package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
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
		nReq, nConn = 500, 100 // under strace -f: a few seconds each
	}
	if haveStrace || havePerf {
		small := loadSpec{conns: 64, n: nReq, small: true}
		fresh := loadSpec{conns: 32, n: nConn, small: true, newConn: true}
		for _, sv := range []*server{zfs, ng} {
			workers := "supervisor and workers"
			if sv == ng {
				workers = "master and workers"
			}
			b.syscalls(fmt.Sprintf("%s: syscalls per 4 KiB request, keep-alive, 64 connections", sv.label), "request",
				[]group{{workers, sv.pids()}}, b.loadWork(sv, small))
			groups := []group{{workers, sv.pids()}}
			if sv == zfs {
				groups = []group{{"supervisor", []int{sv.pid()}}, {"workers", sv.workerPIDs()}}
			}
			b.syscalls(fmt.Sprintf("%s: syscalls per new connection (one 4 KiB request each, 32 clients)", sv.label), "connection",
				groups, b.loadWork(sv, fresh))
			b.syscalls(fmt.Sprintf("%s: syscalls per GiB, one %s stream", sv.label, sizeName(b.p.BigSize)), "GiB",
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
