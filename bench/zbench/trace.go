package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zfs-serve/zfs-serve/bench/internal/proc"
)

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
func (b *bench) syscalls(title, per string, groups []group, work func() (float64, error)) {
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
