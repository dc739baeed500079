package main

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/bench/internal/proc"
)

// Results is everything one benchmark run measured; the report is
// rendered from it (and can be rendered again from its JSON).
type Results struct {
	Quick    bool              `json:"quick"`
	Date     time.Time         `json:"date"`
	Commit   string            `json:"commit"`
	Machine  map[string]string `json:"machine"`
	Params   params            `json:"params"`
	ZfsEnv   string            `json:"zfs_env,omitempty"`  // ZBENCH_ZFS_ENV
	ZfsConf  string            `json:"zfs_conf,omitempty"` // ZBENCH_ZFS_CONF
	Data     string            `json:"data"`               // how the data was made and whether it is cached
	Sections []*Section        `json:"sections"`
	Profiles []*Profile        `json:"profiles"`
	Seconds  float64           `json:"seconds"`
	Failures []string          `json:"failures"`
}

// Metric is one column of a section's table.
type Metric struct {
	Key    string  `json:"key"`
	Label  string  `json:"label"`
	Scale  float64 `json:"scale"` // shown value = raw * Scale
	Digits int     `json:"digits"`
	Lower  bool    `json:"lower"` // lower is better (latency, CPU, memory)
	Memory bool    `json:"memory"`
}

// Section is one workload: a table of servers by metrics.
type Section struct {
	ID      string   `json:"id"`
	Title   string   `json:"title"`
	What    string   `json:"what"`
	Metrics []Metric `json:"metrics"`
	Ratios  []string `json:"ratios"`             // metrics for the zfs-serve ÷ peer matrix
	RatioTo string   `json:"ratio_to,omitempty"` // a row key: ratios are every other row over this one
	Rows    []*Row   `json:"rows"`
	// Box load: the 1-s sample before the section and the worst run.
	Pre        proc.Usage `json:"pre"`
	Waited     float64    `json:"waited"` // seconds spent waiting for a quiet box
	MaxForeign float64    `json:"max_foreign"`
	MaxLoad1   float64    `json:"max_load1"`
	Retries    int        `json:"retries"`
	Busy       bool       `json:"busy"`
	BusyWhy    string     `json:"busy_why"`
	Notes      []string   `json:"notes"`
}

// Row is one server's runs in a section.
type Row struct {
	Key    string               `json:"key"`
	Label  string               `json:"label"`
	Runs   []map[string]float64 `json:"runs"`
	Errors []string             `json:"errors"`
}

func (s *Section) row(key, label string) *Row {
	for _, r := range s.Rows {
		if r.Key == key {
			return r
		}
	}
	r := &Row{Key: key, Label: label}
	s.Rows = append(s.Rows, r)
	return r
}

func (s *Section) find(key string) *Row {
	for _, r := range s.Rows {
		if r.Key == key {
			return r
		}
	}
	return nil
}

// values returns metric k over the runs that have it.
func (r *Row) values(k string) []float64 {
	if r == nil {
		return nil
	}
	var v []float64
	for _, run := range r.Runs {
		if x, ok := run[k]; ok {
			v = append(v, x)
		}
	}
	return v
}

// stats are min, median, max.
type stats struct {
	Min, Med, Max float64
	N             int
}

func summarize(v []float64) stats {
	if len(v) == 0 {
		return stats{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stats{Min: s[0], Med: med, Max: s[len(s)-1], N: len(s)}
}

func (r *Row) median(k string) (float64, bool) {
	st := summarize(r.values(k))
	return st.Med, st.N > 0
}

// Profile is one piece of profiling evidence: a command and what it printed.
type Profile struct {
	Title string  `json:"title"`
	What  string  `json:"what"`
	Cmd   string  `json:"cmd"`
	Text  string  `json:"text"`
	Table []Count `json:"table,omitempty"` // syscalls per request
	Per   string  `json:"per,omitempty"`   // "request", "GiB"
	Exact bool    `json:"exact,omitempty"` // PerOp is from perf stat; StracePerOp from strace
	Busy  bool    `json:"busy,omitempty"`
	Load  float64 `json:"load,omitempty"`
}

// Count is one syscall's count from strace -c, per unit of work.
type Count struct {
	Name        string  `json:"name"`
	Calls       int64   `json:"calls"`
	Errors      int64   `json:"errors"`
	PerOp       float64 `json:"per_op"`
	StracePerOp float64 `json:"strace_per_op,omitempty"`
	TimeUs      float64 `json:"usecs_per_call"`
}

func machineInfo(nginx string) map[string]string {
	m := map[string]string{
		"nproc":  strconv.Itoa(runtime.NumCPU()),
		"go":     runtime.Version(),
		"kernel": firstLine(run("uname", "-r")),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m["model"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m["memory"] = strings.Join(strings.Fields(firstLine(string(b)))[1:], " ")
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		m["debian"] = strings.TrimSpace(string(b))
	}
	m["nginx"] = strings.TrimPrefix(firstLine(run(nginx, "-v")), "nginx version: ")
	m["wrk"] = firstLine(run("wrk", "-v"))
	m["curl"] = firstLine(run("curl", "--version"))
	return m
}

// run runs a command and returns its combined output, "" on failure to start.
func run(name string, args ...string) string {
	var out bytes.Buffer
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = &out, &out
	c.Run()
	return out.String()
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(l)
}
