// Command zbench is the benchmark's driver, run by bench/run: it creates
// the data, starts every server (zfs-serve in each zero-copy mode, nginx,
// Go net/http and the bare sendfile probe) on loopback, runs every
// workload with the same clients (zsink, zload, and wrk/curl/zfetch where
// the issue asks for them), watches the box for background load, profiles
// the workloads, stops everything it started, and writes the report.
//
// Every figure is the min/median/max of several runs; the servers are
// measured in interleaved rounds, so a drift in the box hits them all alike,
// and a run during which something outside the benchmark used the CPU is
// retried, then, if the box stays busy, the whole section is withheld.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// params size a run: the full benchmark or --quick's smoke test.
type params struct {
	Runs       int           `json:"runs"`
	BigSize    int64         `json:"big_size"`
	NSmall     int           `json:"n_small"`
	NMid       int           `json:"n_mid"`
	StreamDur  time.Duration `json:"stream_dur"`  // parallel streams, per run
	LoadDur    time.Duration `json:"load_dur"`    // request workloads, per run
	ManyConns  int           `json:"many_conns"`  // the "1000 connections" figure
	NewConns   int           `json:"new_conns"`   // concurrent clients, new connection per request
	IdleConns  int           `json:"idle_conns"`  // idle keep-alive connections in the idle section
	IdleSettle time.Duration `json:"idle_settle"` // how long they stay idle before RSS is read (idle.go)
	SoakWarm   int64         `json:"soak_warm"`   // warm-up requests before the soak's first RSS reading
	SoakTotal  int64         `json:"soak_total"`  // requests in the RSS soak
	SoakSteps  int           `json:"soak_steps"`  // RSS read this many times along the soak
	BusyCPU    float64       `json:"busy_cpu"`    // CPUs used outside the benchmark that make a run invalid
	QuietWait  time.Duration `json:"quiet_wait"`  // how long a section waits for a quiet box before measuring
	ProfileDur time.Duration `json:"profile_dur"` // perf/pprof sampling per workload
}

func fullParams() params {
	return params{
		Runs: 5, BigSize: 1 << 30, NSmall: 1000, NMid: 100,
		StreamDur: 2 * time.Second, LoadDur: 3 * time.Second,
		ManyConns: 1000, NewConns: 32, IdleConns: 10000, IdleSettle: 6 * time.Second,
		SoakWarm: 100_000, SoakTotal: 1_000_000, SoakSteps: 5,
		BusyCPU: 0.25, QuietWait: 20 * time.Second, ProfileDur: 3 * time.Second,
	}
}

func quickParams() params {
	return params{
		Runs: 1, BigSize: 64 << 20, NSmall: 100, NMid: 10,
		StreamDur: 300 * time.Millisecond, LoadDur: 300 * time.Millisecond,
		ManyConns: 1000, NewConns: 32, IdleConns: 1000, IdleSettle: 3 * time.Second,
		SoakWarm: 5_000, SoakTotal: 20_000, SoakSteps: 2,
		BusyCPU: 0.25, QuietWait: 0, ProfileDur: 300 * time.Millisecond,
	}
}

type bench struct {
	p       params
	quick   bool
	bin     string // built binaries: zfs-serve, zctl, zfetch, zload, zsink, zsendfile, zgohttp, zprof
	scratch string
	data    string
	tmpfs   string // a folder on tmpfs for downloads saved to a file (the verify section)
	nginx   string
	nofile  int
	session int
	goTool  string
	zfsExe  string   // overrides bin/zfs-serve (the profiling wrapper)
	zfsEnv  []string // extra environment for zfs-serve (the profiler's)

	baseZfsEnv []string // ZBENCH_ZFS_ENV: environment for every zfs-serve
	extraConf  string   // ZBENCH_ZFS_CONF: TOML lines added to every zfs-serve config

	haveStrace, havePerfStat bool
	res                      *Results
	log                      io.Writer

	mu      sync.Mutex
	live    map[*server]bool
	pidFile string
	failed  []string
}

func main() {
	var (
		quick   = flag.Bool("quick", false, "smoke test: tiny data, one short run each; checks that everything works, not timings")
		bin     = flag.String("bin", "", "directory with the built binaries (required)")
		scratch = flag.String("scratch", "", "scratch directory for data, configs and logs (required)")
		out     = flag.String("out", "", "write the Markdown report here")
		jsonOut = flag.String("json", "", "write the raw results here")
		render  = flag.String("render", "", "only render: read results from this JSON file and write -out")
		commit  = flag.String("commit", "unknown", "git commit being measured")
		only    = flag.String("only", "", "comma-separated section ids to run (default: all)")
		finds   = flag.String("findings", "", "Markdown file included verbatim under Findings")
		goTool  = flag.String("go", "go", "the go command (for go tool pprof)")
		tmpfs   = flag.String("tmpfs", "", "a folder on tmpfs for the verify section's downloads (default: a folder in -scratch)")
		idleN   = flag.Int("idle-conns", 0, "connections in the idle section (default 10000, 1000 with -quick)")
	)
	flag.Parse()
	if *render != "" {
		r, err := readResults(*render)
		if err != nil {
			fatal(err)
		}
		if err := writeReport(r, *out, *finds); err != nil {
			fatal(err)
		}
		return
	}
	if *bin == "" || *scratch == "" {
		fatal(fmt.Errorf("-bin and -scratch are required"))
	}
	b := &bench{quick: *quick, bin: *bin, scratch: *scratch, log: os.Stderr, live: map[*server]bool{}, goTool: *goTool, tmpfs: *tmpfs}
	b.p = fullParams()
	if b.quick {
		b.p = quickParams()
	}
	if *idleN > 0 {
		b.p.IdleConns = *idleN
	}
	b.data = filepath.Join(b.scratch, "data")
	b.pidFile = filepath.Join(b.scratch, "pids")
	b.session, _ = unix.Getsid(0)
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &rl)
	b.nofile = int(rl.Cur)
	if b.nofile < 2*b.p.ManyConns+100 {
		fatal(fmt.Errorf("open file limit %d is too low for %d connections (bench/run raises it)", b.nofile, b.p.ManyConns))
	}
	var err error
	if b.nginx, err = lookPath("nginx", "/usr/sbin/nginx"); err != nil {
		fatal(err)
	}
	b.res = &Results{Quick: b.quick, Date: time.Now().UTC(), Commit: *commit, Params: b.p, Machine: machineInfo(b.nginx)}
	// ZBENCH_ZFS_ENV="GOMAXPROCS=1 GODEBUG=..." runs every zfs-serve with
	// that environment: a way to try a runtime setting without a rebuild.
	if e := strings.Fields(os.Getenv("ZBENCH_ZFS_ENV")); len(e) > 0 {
		b.baseZfsEnv = e
		b.res.ZfsEnv = strings.Join(e, " ")
	}
	// ZBENCH_ZFS_CONF='send_chunk = "512KiB"' appends TOML lines to every
	// zfs-serve config: a way to try a setting (one per line).
	if c := strings.TrimSpace(os.Getenv("ZBENCH_ZFS_CONF")); c != "" {
		b.extraConf = c
		b.res.ZfsConf = c
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		b.logf("got %v: stopping everything started", s)
		b.stopAll()
		os.Exit(130)
	}()
	defer b.stopAll()

	sections := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			sections[s] = true
		}
	}
	start := time.Now()
	if err := b.runAll(sections); err != nil {
		b.stopAll()
		fatal(err)
	}
	b.stopAll()
	b.res.Seconds = time.Since(start).Seconds()
	b.res.Failures = b.failed
	if *jsonOut != "" {
		if err := writeResults(b.res, *jsonOut); err != nil {
			fatal(err)
		}
	}
	if *out != "" {
		if err := writeReport(b.res, *out, *finds); err != nil {
			fatal(err)
		}
		b.logf("report written to %s", *out)
	}
	b.logf("done in %.0fs", b.res.Seconds)
	if len(b.failed) > 0 {
		for _, f := range b.failed {
			fmt.Fprintln(os.Stderr, "FAILED:", f)
		}
		os.Exit(1)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "zbench:", err)
	os.Exit(1)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// fail records a functional failure (wrong bytes, a server that did not
// start, a client error): the run continues, but zbench exits non-zero.
func (b *bench) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.logf("FAILURE: %s", msg)
	b.mu.Lock()
	b.failed = append(b.failed, msg)
	b.mu.Unlock()
}

// track records a started server's pid in the scratch pid file, so that
// bench/run can kill it by pid if zbench itself dies.
func (b *bench) track(s *server) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.live[s] = true
	b.writePIDs()
}

func (b *bench) untrack(s *server) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.live, s)
	b.writePIDs()
}

func (b *bench) writePIDs() {
	var lines []string
	for s := range b.live {
		lines = append(lines, strconv.Itoa(s.pid()))
		for _, p := range s.extra {
			lines = append(lines, strconv.Itoa(p))
		}
	}
	os.WriteFile(b.pidFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func (b *bench) stopAll() {
	b.mu.Lock()
	var ss []*server
	for s := range b.live {
		ss = append(ss, s)
	}
	b.mu.Unlock()
	for _, s := range ss {
		b.stop(s)
	}
}

func lookPath(name string, fallbacks ...string) (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	for _, p := range fallbacks {
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (bench/run installs it: apt-get install nginx-light wrk curl strace)", name)
}

func writeResults(r *Results, path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func readResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	return &r, json.Unmarshal(b, &r)
}
