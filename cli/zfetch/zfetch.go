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
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/fetch/progress"
	"github.com/zfs-serve/zfs-serve/internal/human"
	"github.com/zfs-serve/zfs-serve/wire"
)

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
	case errors.As(err, &we):
		return cli.ExitError // a protocol violation, as an HTTP server's
	case errors.As(err, &de), errors.As(err, &oe), fetch.Retryable(err):
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
	outputStream   bool        // -o names a device or a FIFO: written into as stdout is
	stream         *lazyStream // that device or FIFO, once the plan has its job
	outputFile     string      // -o names a symlink to a regular file: that file's path
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
	if err := o.checkOutput(); err != nil {
		return nil, nil, err
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

	defer func() {
		if o.stream != nil {
			o.stream.release(ctx)
		}
	}()
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
	files := make([]progress.File, len(p.Jobs))
	for i, j := range p.Jobs {
		files[i] = progress.File{Name: j.Name, Size: p.Sizes[i]}
	}
	rend.SetFiles(files)
	var results []fetch.Result
	var errs []error
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		results, errs = client.FetchPlan(ctx, p, o.jobs)
	}()
	if !waitRun(ctx, o.stdoutIsOutput || o.outputStream, ran) {
		// The download into stdout or the -o stream did not end when the
		// run was stopped: it is blocked writing into a pipe or FIFO whose
		// reader stopped reading, a write nothing can interrupt. Say so
		// and leave it: zfetch ends, its status the stop's.
		client.Silence()
		err := fetch.Stopped(ctx)
		code := ExitCode(err)
		now := time.Now()
		rend.Fail(now, fmt.Errorf("%w (the output's reader did not take the data within %v of the stop)", err, streamStopGrace))
		rend.Finish(now, code)
		return &exitErr{code: code, err: err, reported: true}
	}

	var first error
	failed := 0
	for _, err := range errs {
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
	parts := make([]string, len(results))
	for i, r := range results {
		parts[i] = r.Part
	}
	switch code {
	case ExitInterrupted:
		resumeHint(stderr, "interrupted", args, parts)
	case ExitMaxTime:
		resumeHint(stderr, fmt.Sprintf("stopped by --max-time %s", o.maxTime), args, parts)
	}
	if len(p.Jobs) > 1 {
		first = fmt.Errorf("%d of %d files failed; first: %w", failed, len(p.Jobs), first)
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

// streamStopGrace is how long a stopped run (--max-time, Ctrl-C) that
// writes into a stream may take to end before zfetch gives up on it.
const streamStopGrace = 2 * time.Second

// waitRun waits until ran is closed and reports true; for a run that
// writes into a stream, only until streamStopGrace after ctx is done,
// and false if it has not ended by then.
func waitRun(ctx context.Context, stream bool, ran <-chan struct{}) bool {
	var stopped <-chan struct{} // nil, never ready: wait for ran alone
	if stream {
		stopped = ctx.Done()
	}
	select {
	case <-ran:
		return true
	case <-stopped:
	}
	t := time.NewTimer(streamStopGrace)
	defer t.Stop()
	select {
	case <-ran:
		return true
	case <-t.C:
	}
	select { // ended as the grace ran out: its own outcome
	case <-ran:
		return true
	default:
		return false
	}
}
