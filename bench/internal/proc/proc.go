// Package proc reads the Linux /proc figures the benchmark reports: CPU
// time and resident memory of a server's process tree (a supervisor or
// nginx master and its direct children), and how busy the whole box is,
// so that a section measured while something else was running can be
// refused instead of reported.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat.
// Linux fixes it at 100 on every architecture Go supports here.
const ClockTick = 100

// Stat is the part of /proc/PID/stat the benchmark uses.
type Stat struct {
	PID, PPID, Session int
	UTime, STime       uint64 // clock ticks, all threads of the process
	CUTime, CSTime     uint64 // clock ticks of reaped children
}

// ReadStat parses /proc/PID/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return parseStat(pid, b)
}

func parseStat(pid int, b []byte) (Stat, error) {
	// The command name is in parentheses and may contain spaces or ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 17 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	num := func(field int) uint64 { v, _ := strconv.ParseUint(f[field-3], 10, 64); return v }
	return Stat{
		PID: pid, PPID: int(num(4)), Session: int(num(6)),
		UTime: num(14), STime: num(15), CUTime: num(16), CSTime: num(17),
	}, nil
}

// Children returns the pids whose parent is pid.
func Children(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadStat(p)
		if err == nil && st.PPID == pid {
			out = append(out, p)
		}
	}
	return out
}

// Tree returns pid and its direct children: a zfs-serve supervisor and its
// workers, an nginx master and its workers, or a single process.
func Tree(pid int) []int { return append([]int{pid}, Children(pid)...) }

// CPU returns the CPU time (user+system, all threads) of the given
// processes, summed. Processes that are gone count as zero.
func CPU(pids []int) time.Duration {
	var ticks uint64
	for _, p := range pids {
		if st, err := ReadStat(p); err == nil {
			ticks += st.UTime + st.STime
		}
	}
	return time.Duration(ticks) * time.Second / ClockTick
}

// RSS returns the resident set size (VmRSS) of the given processes, summed,
// in bytes.
func RSS(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		if v, err := rss(p); err == nil {
			sum += v
		}
	}
	return sum
}

func rss(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// Box is a snapshot of the machine's CPU counters (/proc/stat, clock
// ticks summed over all CPUs) and of every process's CPU time, split into
// the benchmark's own session and everyone else.
type Box struct {
	At    time.Time
	Busy  uint64 // user+nice+system+irq+softirq: time some task or interrupt ran
	Steal uint64 // time the hypervisor gave our vCPUs to someone else
	Ours  uint64 // utime+stime+cutime+cstime of the session's processes
	Load1 float64
	// Others maps every process outside the session to its
	// utime+stime+cutime+cstime. Kernel threads that do the benchmark's own
	// loopback networking (ksoftirqd) are left out.
	Others map[int]uint64
}

// Snapshot reads the box counters; session is the benchmark's session id
// (0: none of the processes are ours).
func Snapshot(session int) (Box, error) {
	b := Box{At: time.Now(), Others: map[int]uint64{}}
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return b, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return b, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var v [8]uint64
	for i := range v {
		v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
	}
	// user nice system idle iowait irq softirq steal
	b.Busy = v[0] + v[1] + v[2] + v[5] + v[6]
	b.Steal = v[7]
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(la)); len(f) > 0 {
			b.Load1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return b, err
	}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st, err := parseStat(p, raw)
		if err != nil {
			continue
		}
		t := st.UTime + st.STime + st.CUTime + st.CSTime
		switch {
		case session > 0 && st.Session == session:
			b.Ours += t
		case bytes.Contains(raw, []byte("(ksoftirqd/")):
		default:
			b.Others[p] = t
		}
	}
	return b, nil
}

// Usage is the CPU use between two snapshots, in CPUs (1.0 = one core
// busy for the whole interval).
type Usage struct {
	Seconds float64 `json:"seconds"`
	Busy    float64 `json:"busy"`    // everything, ours included
	Foreign float64 `json:"foreign"` // processes outside our session
	Steal   float64 `json:"steal"`
	Load1   float64 `json:"load1"` // at the end (it includes our own load)
}

// Since returns the usage from a to b. Foreign CPU is the growth of the
// other processes' times, capped by what the box as a whole did besides
// our session (a process that exits hands its whole lifetime to its
// parent's cutime, which would otherwise count time from before a).
func Since(a, b Box) Usage {
	secs := b.At.Sub(a.At).Seconds()
	if secs <= 0 {
		return Usage{}
	}
	cpus := func(ticks uint64) float64 { return float64(ticks) / ClockTick / secs }
	u := Usage{Seconds: secs, Busy: cpus(b.Busy - a.Busy), Steal: cpus(b.Steal - a.Steal), Load1: b.Load1}
	var direct uint64
	for p, t := range b.Others {
		if t0, ok := a.Others[p]; ok {
			if t > t0 {
				direct += t - t0
			}
		} else {
			direct += t
		}
	}
	residual := u.Busy
	if b.Ours > a.Ours {
		residual -= cpus(b.Ours - a.Ours)
	}
	u.Foreign = max(min(cpus(direct), residual), 0)
	return u
}
