// Package zfetch is the zfetch command: download files and trees from
// zfs-serve with progress, resume, retries and verification. The work is
// done by package fetch; the output by package fetch/progress.
package zfetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/fetch/progress"
	"github.com/zfs-serve/zfs-serve/internal/human"
	"github.com/zfs-serve/zfs-serve/wire"
)

const usage = `Usage: zfetch [-o FILE | -O DIR | -o -] [-c] [-q] [--json] [--retries N]
              [--retry-for DUR] [-x N] [-r] [-j N] [--recv MODE] [--sha256 HEX]
              [--no-verify] [--mirror URL]... [--cacert FILE | -k]
              [--limit-rate RATE] [--speed-limit RATE] [--speed-time DUR]
              [--max-time DUR] URL...

Download files from zfs-serve or any HTTP/1.1 server. URL is
zfs://HOST[:PORT]/PATH or HOST[:PORT]/PATH (zfs-serve's native protocol,
port 7070 by default), or http://... or https://... (percent-encoding
accepted).

  -o FILE        write to FILE; -o - writes to stdout (one URL); with -r,
                 FILE is the directory that receives the tree
  -O DIR         write into DIR (created if missing); default: .
  -c             continue: resume FILE.part; a complete FILE is left alone
  -q             quiet: print nothing but errors
  --json         print one JSON object per event on stdout (on stderr with
                 -o -); see docs/ZFETCH.md
  --retry-for D  give up once no data has arrived for D (default 90s:
                 longer than a server's drain, 60s by default, and a
                 restart); an attempt that hears nothing ends after D (at
                 least 1s) or 30s, whichever is shorter
  --retries N    also give up after N failed retries in a row (N+1
                 attempts; one that receives data resets the count);
                 default: no limit but --retry-for's
  -x N           fetch each file over N connections by ranges (per source
                 with --mirror)
  -r             fetch the directory tree under each URL (over HTTP: from
                 zfs-serve's or nginx's JSON listing)
  -j N           fetch up to N files at once (default 4)
  --recv MODE    auto, copy, splice or mmap: how bytes get from the socket
                 into the output (default auto: splice into files, the
                 fastest measured, but copy for one connection whose
                 digest is checked; to stdout splice, or copy into
                 /dev/null and terminals); over TLS always copy
  --sha256 HEX   check the file's SHA-256 (one file); wins over a digest
                 the server announces
  --no-verify    do not check digests the servers announce
  --mirror URL   another URL of the same file (repeatable; zfs://, http://
                 and https:// mixed): ranges are fetched from all at once,
                 faster sources get more, and a source that fails, is slow
                 or has another version of the file is left out
  --cacert FILE  trust the certificate authorities in FILE (PEM) for
                 https:// instead of the system's
  -k, --insecure do not check https:// certificates
  --limit-rate R cap the transfer rate, e.g. 500K, 20M, 1.5G (bytes/s)
  --speed-limit R
  --speed-time D end an attempt whose rate stays below R bytes/s for D (by
                 default 1 byte/s and 30s when only one is given); it is
                 retried, but does not count as progress, so a server that
                 trickles uses up --retries
  --max-time D   stop after D in all (e.g. 10m), whatever is left; exit 7

Each file is written to FILE.part (with its resume state in
FILE.part.state) and renamed to FILE only when complete and verified, with
the server's mtime: its size, and its SHA-256 when the server announces
one (zfs-serve natively, HTTP servers with Repr-Digest or Digest) or
--sha256 gives one, hashed as it is written. Connection errors, connection
refused, busy or draining servers and HTTP 408, 429 and 5xx (after
Retry-After) are retried with backoff, resuming where the bytes stop. If
the file changes on the server meanwhile (its size, mtime, ETag or digest;
looked at again before the rename), it is fetched from the start; over
HTTP, ranges are asked with If-Range for that. Redirects are followed (at
most 10), but not from https to http.
Ctrl-C (and --max-time) keeps FILE.part and prints the command that
resumes it.

Exit status:
  0    every file complete and verified
  1    other error
  2    bad command line
  3    refused by the server: not found, forbidden, not a regular file...
  4    connection failed (after the retries)
  5    verification failed: wrong size or SHA-256, or the file changed
       while being written to stdout
  6    local I/O error: cannot create, write or rename the output
  7    --max-time reached; FILE.part is kept for -c
  8    TLS certificate not trusted (see --cacert, -k)
  130  interrupted (Ctrl-C or SIGTERM); FILE.part is kept for -c
With several files, the status is that of the first file that failed.
`

// Exit statuses beyond cli's.
const (
	ExitRefused     = 3
	ExitConnection  = 4
	ExitVerify      = 5
	ExitLocalIO     = 6
	ExitMaxTime     = 7
	ExitTLS         = 8
	ExitInterrupted = 130
)

// maxTimeError is the cause of the deadline --max-time puts on the run.
type maxTimeError struct{ d time.Duration }

func (e *maxTimeError) Error() string { return fmt.Sprintf("--max-time %s reached", e.d) }

// exitErr carries an exit status. reported means the message was already
// printed (by the progress renderer), so main must not print it again.
type exitErr struct {
	code     int
	err      error
	reported bool
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }
func (e *exitErr) ExitCode() int { return e.code }

// Reported reports whether err's message has already been shown to the
// user; main then exits with cli.Code(err) without printing it.
func Reported(err error) bool {
	var ee *exitErr
	return errors.As(err, &ee) && ee.reported
}

// ExitCode maps an error to zfetch's exit status.
func ExitCode(err error) int {
	var (
		ue *cli.UsageError
		le *fetch.LocalError
		ve *fetch.VerifyError
		ge *fetch.GiveUpError
		se *fetch.StatusError
		we *wire.Error
		pe *os.PathError
		de *net.DNSError // a host that does not resolve
		oe *net.OpError
		me *maxTimeError
		ce *fetch.CertError
	)
	switch {
	case err == nil:
		return cli.ExitOK
	case errors.As(err, &me):
		return ExitMaxTime
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.As(err, &ue):
		return cli.ExitUsage
	case errors.As(err, &le), errors.As(err, &pe):
		return ExitLocalIO
	case errors.As(err, &ve):
		return ExitVerify
	case errors.As(err, &ce):
		return ExitTLS
	case errors.As(err, &ge):
		return ExitConnection
	case errors.As(err, &se):
		if se.Retryable() {
			return ExitConnection
		}
		return ExitRefused
	case errors.As(err, &we), errors.As(err, &de), errors.As(err, &oe), fetch.Retryable(err):
		return ExitConnection
	}
	return cli.ExitError
}

type options struct {
	output, dir    string
	resume, quiet  bool
	jsonOut        bool
	retries        int
	retryFor       time.Duration
	conns, jobs    int
	recursive      bool
	recv           string
	sha256         string
	limit          int64
	speedLimit     int64
	speedTime      time.Duration
	maxTime        time.Duration
	stdoutIsOutput bool
	mirrors        []string
	cacert         string
	insecure       bool
	noVerify       bool
}

// Run runs zfetch with args (without the program name). Progress and
// errors go to stderr; stdout gets the file with -o -, and JSON events
// with --json otherwise.
func Run(ctx context.Context, args []string, stdout, stderr *os.File) error {
	o, urls, err := parse(args, stdout)
	if err != nil {
		return err
	}
	return run(ctx, o, urls, args, stdout, stderr)
}

// parse reads the command line; --help prints the usage on stdout.
func parse(args []string, stdout io.Writer) (*options, []string, error) {
	o := &options{}
	fs := flag.NewFlagSet("zfetch", flag.ContinueOnError)
	fs.StringVar(&o.output, "o", "", "")
	fs.StringVar(&o.dir, "O", "", "")
	fs.BoolVar(&o.resume, "c", false, "")
	fs.BoolVar(&o.quiet, "q", false, "")
	fs.BoolVar(&o.jsonOut, "json", false, "")
	fs.IntVar(&o.retries, "retries", -1, "")
	fs.DurationVar(&o.retryFor, "retry-for", fetch.DefaultRetryFor, "")
	fs.IntVar(&o.conns, "x", 1, "")
	fs.IntVar(&o.jobs, "j", 4, "")
	fs.BoolVar(&o.recursive, "r", false, "")
	fs.StringVar(&o.recv, "recv", string(fetch.DefaultRecv), "")
	fs.StringVar(&o.sha256, "sha256", "", "")
	limit := fs.String("limit-rate", "", "")
	speedLimit := fs.String("speed-limit", "", "")
	fs.DurationVar(&o.speedTime, "speed-time", 0, "")
	fs.DurationVar(&o.maxTime, "max-time", 0, "")
	fs.Func("mirror", "", func(s string) error {
		o.mirrors = append(o.mirrors, s)
		return nil
	})
	fs.StringVar(&o.cacert, "cacert", "", "")
	fs.BoolVar(&o.insecure, "k", false, "")
	fs.BoolVar(&o.insecure, "insecure", false, "")
	fs.BoolVar(&o.noVerify, "no-verify", false, "")
	// Flags may come after URLs: parse, take the positional, go on.
	var urls []string
	rest := args
	for {
		if err := cli.ParseFlags(fs, rest, stdout, func(w io.Writer) { fmt.Fprint(w, usage) }); err != nil {
			return nil, nil, err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args)-len(rest) > 0 && args[len(args)-len(rest)-1] == "--" {
			urls = append(urls, rest...)
			break
		}
		urls = append(urls, rest[0])
		rest = rest[1:]
	}
	switch {
	case len(urls) == 0:
		return nil, nil, cli.Usagef("no URL (see --help)")
	case o.output != "" && o.dir != "":
		return nil, nil, cli.Usagef("-o and -O are exclusive")
	case o.output != "" && len(urls) > 1:
		return nil, nil, cli.Usagef("-o takes one URL; use -O DIR for several")
	case o.conns < 1 || o.conns > 64:
		return nil, nil, cli.Usagef("-x wants 1 to 64 connections, not %d", o.conns)
	case o.jobs < 1 || o.jobs > 64:
		return nil, nil, cli.Usagef("-j wants 1 to 64 files at once, not %d", o.jobs)
	case cli.Given(fs, "retries") && o.retries < 0:
		return nil, nil, cli.Usagef("--retries wants 0 or more, not %d", o.retries)
	case cli.Given(fs, "retry-for") && o.retryFor <= 0:
		return nil, nil, cli.Usagef("--retry-for wants a positive duration such as 30s or 5m, not %s", o.retryFor)
	case cli.Given(fs, "speed-time") && o.speedTime <= 0:
		return nil, nil, cli.Usagef("--speed-time wants a positive duration such as 30s, not %s", o.speedTime)
	case cli.Given(fs, "max-time") && o.maxTime <= 0:
		return nil, nil, cli.Usagef("--max-time wants a positive duration such as 10m, not %s", o.maxTime)
	case o.quiet && o.jsonOut:
		return nil, nil, cli.Usagef("-q and --json are exclusive")
	case len(o.mirrors) > 0 && (len(urls) > 1 || o.recursive):
		return nil, nil, cli.Usagef("--mirror names other URLs of one file: give one URL, without -r")
	case o.noVerify && o.sha256 != "":
		return nil, nil, cli.Usagef("--no-verify and --sha256 are exclusive")
	case o.cacert != "" && o.insecure:
		return nil, nil, cli.Usagef("--cacert and -k are exclusive")
	}
	if o.output == "-" {
		o.stdoutIsOutput = true
		switch {
		case o.recursive:
			return nil, nil, cli.Usagef("-o - cannot take a tree (-r)")
		case o.resume:
			return nil, nil, cli.Usagef("-c needs a file to resume; stdout is not one")
		case o.conns > 1:
			return nil, nil, cli.Usagef("-x needs a file to write ranges into; stdout is not one")
		}
	}
	if _, err := fetch.ParseRecvMode(o.recv); err != nil {
		return nil, nil, &cli.UsageError{Err: err}
	}
	if o.sha256 != "" {
		o.sha256 = strings.ToLower(o.sha256)
		if len(o.sha256) != 64 || strings.Trim(o.sha256, "0123456789abcdef") != "" {
			return nil, nil, cli.Usagef("--sha256 wants 64 hex digits")
		}
		if len(urls) > 1 || o.recursive {
			return nil, nil, cli.Usagef("--sha256 checks one file: give one URL, without -r")
		}
	}
	if *limit != "" {
		n, err := human.ParseBytes(*limit)
		if err != nil || n <= 0 {
			return nil, nil, cli.Usagef("--limit-rate %q: want a rate such as 500K, 20M or 1.5G", *limit)
		}
		o.limit = n
	}
	if *speedLimit != "" {
		n, err := human.ParseBytes(*speedLimit)
		if err != nil || n <= 0 {
			return nil, nil, cli.Usagef("--speed-limit %q: want a rate such as 1K or 100K", *speedLimit)
		}
		o.speedLimit = n
	}
	// As curl: either one alone sets a floor, with the other's default.
	switch {
	case o.speedLimit > 0 && o.speedTime == 0:
		o.speedTime = 30 * time.Second
	case o.speedTime > 0 && o.speedLimit == 0:
		o.speedLimit = 1
	}
	return o, urls, nil
}

// plan is the batch of files to fetch.
type plan struct {
	jobs  []fetch.Job
	files []progress.File
	dirs  []dirMTime // -r: directories to give their server mtime at the end
}

type dirMTime struct {
	path  string
	mtime int64
}

func (p *plan) add(j fetch.Job, size int64) {
	j.ID = len(p.jobs)
	p.jobs = append(p.jobs, j)
	p.files = append(p.files, progress.File{Name: j.Name, Size: size})
}

// failedBefore returns the first of jobs that failed, or -1.
func failedBefore(jobs []int, results []error) int {
	for _, k := range jobs {
		if results[k] != nil {
			return k
		}
	}
	return -1
}

// tempNames are the files a download of dst writes besides dst itself.
func tempNames(dst string) []string {
	part := dst + ".part"
	state := part + fetch.StateSuffix
	return []string{part, state, state + ".tmp"}
}

// order puts the jobs into waves, batches run one after the other (the
// jobs of a batch at once, -j at a time). A job whose destination is one
// of another job's temporary files ("x.part" in a tree that also has "x")
// runs after that job is over: run together, one would overwrite the
// other's file, and the last rename would put the wrong content in place.
// Its own temporary files are longer names, so the order has no cycles.
// after[i] lists the jobs whose temporary files job i's destination is:
// if one of those fails, its .part stays for a later -c, and job i must
// not replace it.
func (p *plan) order() (waves [][]int, after [][]int) {
	after = make([][]int, len(p.jobs))
	idx := map[string]int{}
	for i, j := range p.jobs {
		if j.Dst != "" {
			idx[filepath.Clean(j.Dst)] = i
		}
	}
	wave := make([]int, len(p.jobs))
	order := make([]int, len(p.jobs))
	for i := range order {
		order[i] = i
	}
	// Shorter destinations first: a job's wave depends only on the waves
	// of jobs with shorter names.
	sort.SliceStable(order, func(a, b int) bool { return len(p.jobs[order[a]].Dst) < len(p.jobs[order[b]].Dst) })
	n := 1
	for _, i := range order {
		if p.jobs[i].Dst == "" {
			continue
		}
		for _, t := range tempNames(filepath.Clean(p.jobs[i].Dst)) {
			k, ok := idx[t]
			if !ok {
				continue
			}
			after[k] = append(after[k], i)
			if wave[k] <= wave[i] {
				wave[k] = wave[i] + 1
				n = max(n, wave[k]+1)
			}
		}
	}
	waves = make([][]int, n)
	for i, w := range wave {
		waves[w] = append(waves[w], i)
	}
	return waves, after
}

func run(ctx context.Context, o *options, urls []string, args []string, stdout, stderr *os.File) error {
	targets := make([]fetch.Target, len(urls))
	for i, u := range urls {
		t, err := parseTarget(u)
		if err != nil {
			return err
		}
		targets[i] = t
	}
	var mirrors []fetch.Target
	for _, u := range o.mirrors {
		t, err := parseTarget(u)
		if err != nil {
			return err
		}
		mirrors = append(mirrors, t)
	}
	tlsConf, err := tlsConfig(o)
	if err != nil {
		return err
	}
	if o.maxTime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.maxTime, &maxTimeError{o.maxTime})
		defer cancel()
	}
	rend, every := newRenderer(o, stdout, stderr)
	client := fetch.New(fetch.Options{
		ProgressEvery: every,
		Recv:          fetch.RecvMode(o.recv),
		Conns:         o.conns,
		Retries:       o.retries,
		RetryFor:      o.retryFor,
		RateLimit:     o.limit,
		SpeedLimit:    o.speedLimit,
		SpeedTime:     o.speedTime,
		Events:        rend.Event,
		TLS:           tlsConf,
		NoVerify:      o.noVerify,
	})
	defer client.Close()

	p, err := makePlan(ctx, o, targets, mirrors, client, rend, stdout)
	if err != nil {
		if ctx.Err() != nil {
			err = fetch.Stopped(ctx)
		}
		// Said by the renderer, like a file's error: one line for people
		// (the message may be a server's), and the exit event in JSON.
		code := ExitCode(err)
		rend.Abort(time.Now(), code, err)
		return &exitErr{code: code, err: err, reported: true}
	}
	rend.SetFiles(p.files)

	results := make([]error, len(p.jobs))
	parts := make([]string, len(p.jobs))
	sem := make(chan struct{}, o.jobs)
	waves, after := p.order()
	for _, wave := range waves {
		var wg sync.WaitGroup
		for _, i := range wave {
			j := p.jobs[i]
			if ctx.Err() != nil {
				results[i] = ctx.Err()
				continue
			}
			if k := failedBefore(after[i], results); k >= 0 {
				err := fmt.Errorf("not fetched: it would replace the partial download of %s; fetch that one first (zfetch -c)", p.jobs[k].Dst)
				results[i] = err
				rend.Event(fetch.Event{Kind: fetch.EventError, Time: time.Now(), File: j.ID, Name: j.Name, Source: j.Src.String(), Total: -1, Err: err})
				continue
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				res, err := client.Fetch(ctx, j)
				results[i], parts[i] = err, res.Part
			})
		}
		wg.Wait()
	}
	for _, d := range p.dirs {
		mt := time.Unix(0, d.mtime)
		os.Chtimes(d.path, mt, mt) // cosmetic: a failure here loses nothing
	}

	var first error
	failed := 0
	for _, err := range results {
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
		}
	}
	code := ExitCode(first)
	if ctx.Err() != nil {
		first = fetch.Stopped(ctx)
		code = ExitCode(first)
	}
	rend.Finish(time.Now(), code)
	if first == nil {
		return nil
	}
	switch code {
	case ExitInterrupted:
		resumeHint(stderr, "interrupted", args, parts)
	case ExitMaxTime:
		resumeHint(stderr, fmt.Sprintf("stopped by --max-time %s", o.maxTime), args, parts)
	}
	if len(p.jobs) > 1 {
		first = fmt.Errorf("%d of %d files failed; first: %w", failed, len(p.jobs), first)
	}
	return &exitErr{code: code, err: first, reported: true}
}

// resumeHint says why zfetch stopped, where the partial downloads are and
// how to go on.
func resumeHint(w io.Writer, why string, args []string, parts []string) {
	var kept []string
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		return
	}
	what := kept[0]
	if len(kept) > 1 {
		what = fmt.Sprintf("%s and %d more", kept[0], len(kept)-1)
	}
	cmd := []string{"zfetch"}
	hasC := false
	for _, a := range args {
		if a == "-c" || a == "--c" {
			hasC = true
		}
	}
	if !hasC {
		cmd = append(cmd, "-c")
	}
	for _, a := range args {
		cmd = append(cmd, shellQuote(a))
	}
	// The names may come from a server's listing (-r): made printable.
	fmt.Fprintf(w, "zfetch: %s; partial download kept in %s\n", why, human.Printable(what))
	fmt.Fprintf(w, "zfetch: resume with: %s\n", human.Printable(strings.Join(cmd, " ")))
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=%@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// newRenderer picks the output for the situation, and how often the client
// should report progress to it: on a terminal twice per redraw period, so
// that redraws keep to their ~10/s pace; otherwise less often.
func newRenderer(o *options, stdout, stderr *os.File) (*progress.Renderer, time.Duration) {
	ro := progress.Options{Out: stderr, Err: stderr, ExitCode: ExitCode}
	every := 250 * time.Millisecond
	switch {
	case o.quiet:
		ro.Mode = progress.ModeQuiet
	case o.jsonOut:
		ro.Mode = progress.ModeJSON
		if !o.stdoutIsOutput {
			ro.Out = stdout
		}
	case term.IsTerminal(int(stderr.Fd())):
		ro.Mode = progress.ModeTTY
		every = progress.MinRedraw / 2
		fd := int(stderr.Fd())
		ro.Width = func() int {
			w, _, err := term.GetSize(fd)
			if err != nil {
				return 0
			}
			return w
		}
	default:
		ro.Mode = progress.ModePlain
	}
	return progress.New(ro), every
}

// makePlan turns the URLs into jobs: one per URL, or, with -r, one per file
// of each tree (creating its directories).
func makePlan(ctx context.Context, o *options, targets, mirrors []fetch.Target, c *fetch.Client, rend *progress.Renderer, stdout *os.File) (*plan, error) {
	p := &plan{}
	dir := o.dir
	if dir == "" {
		dir = "."
	}
	if o.dir != "" {
		if err := os.MkdirAll(o.dir, 0o755); err != nil {
			return nil, &fetch.LocalError{Op: "create directory", Path: o.dir, Err: err}
		}
	}
	seen := map[string]string{}
	claim := func(dst string, t fetch.Target) error {
		key := filepath.Clean(dst)
		if prev, ok := seen[key]; ok {
			return cli.Usagef("%s and %s would both be written to %s; use -O or -o", prev, t, dst)
		}
		seen[key] = t.String()
		return nil
	}
	for _, t := range targets {
		if o.recursive {
			if err := planTree(ctx, o, t, dir, c, rend, p, claim); err != nil {
				return nil, err
			}
			continue
		}
		j := fetch.Job{Src: t, Resume: o.resume, SHA256: o.sha256, Mirrors: mirrors}
		switch {
		case o.stdoutIsOutput:
			j.Out, j.Name = stdout, "-"
		case o.output != "":
			j.Dst = o.output
		default:
			name := path.Base(t.Path)
			if strings.HasSuffix(t.Path, "/") || name == "/" || name == "." || name == ".." {
				return nil, cli.Usagef("%s names no file; use -o FILE, or -r for a directory", t)
			}
			j.Dst = filepath.Join(dir, name)
		}
		if j.Name == "" {
			j.Name = j.Dst
			if err := claim(j.Dst, t); err != nil {
				return nil, err
			}
		}
		p.add(j, -1)
	}
	return p, nil
}

func planTree(ctx context.Context, o *options, t fetch.Target, dir string, c *fetch.Client, rend *progress.Renderer, p *plan, claim func(string, fetch.Target) error) error {
	root := o.output
	if root == "" {
		switch base := path.Base(t.Path); base {
		case "/":
			root = dir
		case ".", "..":
			// "dir/." would be the tree of dir written into DIR itself.
			return cli.Usagef("%s: its last name is %q, which names no directory to create; use -o DIR", t, base)
		default:
			root = filepath.Join(dir, base)
		}
	}
	var rootMTime int64
	if !t.IsHTTP() {
		// Over HTTP the listing itself tells (a file has none).
		st, err := c.Stat(ctx, t)
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		if st.Kind != wire.KindDir {
			return &fetch.StatusError{Status: wire.StatusNotDirectory, Path: t.Path,
				Message: fmt.Sprintf("not a directory: %s (drop -r to fetch a file)", t.Path)}
		}
		rootMTime = st.MTime
	}
	entries, err := c.Walk(ctx, t, rend.Event)
	if err != nil {
		return fmt.Errorf("listing %s: %w", t, err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return &fetch.LocalError{Op: "create directory", Path: root, Err: err}
	}
	var dirs []dirMTime
	for _, e := range entries {
		local := filepath.Join(root, filepath.FromSlash(e.Rel))
		switch e.Kind {
		case wire.KindDir:
			if err := os.MkdirAll(local, 0o755); err != nil {
				return &fetch.LocalError{Op: "create directory", Path: local, Err: err}
			}
			if e.MTime != 0 {
				dirs = append(dirs, dirMTime{local, e.MTime})
			}
		case wire.KindFile:
			src := t.Join(e.Rel)
			if err := claim(local, src); err != nil {
				return err
			}
			p.add(fetch.Job{Src: src, Dst: local, Name: local, Resume: o.resume}, e.Size)
		case wire.KindSymlink:
			rend.Note(time.Now(), fmt.Sprintf("skipping %s: a symlink to a directory", t.Join(e.Rel)))
		default:
			rend.Note(time.Now(), fmt.Sprintf("skipping %s: not a regular file", t.Join(e.Rel)))
		}
	}
	// Deepest first, so setting a child's mtime does not change its
	// parent's after. The root too, unless it is the -O directory itself.
	for i := len(dirs) - 1; i >= 0; i-- {
		p.dirs = append(p.dirs, dirs[i])
	}
	if root != dir && rootMTime != 0 {
		p.dirs = append(p.dirs, dirMTime{root, rootMTime})
	}
	return nil
}

// parseTarget parses a URL of the command line.
func parseTarget(u string) (fetch.Target, error) {
	t, err := fetch.ParseURL(u)
	if err != nil {
		return t, &cli.UsageError{Err: err}
	}
	if slices.Contains(strings.Split(t.Path, "/"), "..") {
		// The server refuses it too; say so before anything is written.
		return t, cli.Usagef("%s: a path with \"..\" in it names nothing on the server", t)
	}
	return t, nil
}

// tlsConfig is the TLS configuration of --cacert and -k: nil (the
// system's roots) without them.
func tlsConfig(o *options) (*tls.Config, error) {
	switch {
	case o.insecure:
		return &tls.Config{InsecureSkipVerify: true}, nil
	case o.cacert != "":
		pem, err := os.ReadFile(o.cacert)
		if err != nil {
			return nil, cli.Usagef("--cacert: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, cli.Usagef("--cacert %s: no PEM certificate in it", o.cacert)
		}
		return &tls.Config{RootCAs: pool}, nil
	}
	return nil, nil
}
