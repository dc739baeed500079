// Package zfetch is the zfetch command: download files from zfs-serve with
// a progress line.
package zfetch

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/internal/human"
)

const usage = `Usage: zfetch [-o FILE | -O DIR | -o -] [-q] URL

Download a file from zfs-serve. URL is zfs://HOST[:PORT]/PATH or
HOST[:PORT]/PATH (port 7070 by default; percent-encoding accepted).

  -o FILE   write to FILE (- for stdout); default: the URL's file name
  -O DIR    write into DIR
  -q        quiet: no progress, errors only

The file is written to FILE.part and renamed when complete.

Exit status: 0 complete, 1 other error, 2 usage, 3 not found or refused by
the server, 4 connection failed, 5 incomplete or failed verification,
6 local I/O error.
`

// Exit statuses.
const (
	ExitNotFound   = 3
	ExitConnection = 4
	ExitIncomplete = 5
	ExitLocalIO    = 6
)

type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }
func (e *exitErr) ExitCode() int { return e.code }

// Run runs zfetch with args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("zfetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	output := fs.String("o", "", "")
	dir := fs.String("O", "", "")
	quiet := fs.Bool("q", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &cli.UsageError{Err: err}
	}
	if fs.NArg() != 1 {
		return cli.Usagef("want exactly one URL (see --help)")
	}
	if *output != "" && *dir != "" {
		return cli.Usagef("-o and -O are exclusive")
	}
	t, err := fetch.ParseURL(fs.Arg(0))
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	var out io.Writer
	dst := *output
	switch {
	case dst == "-":
		out, dst = stdout, ""
	case dst == "":
		name := path.Base(t.Path)
		if name == "/" || name == "." || name == "" {
			return cli.Usagef("%s names no file; use -o FILE", t)
		}
		dst = filepath.Join(*dir, name)
	}
	opts := fetch.Options{}
	if !*quiet {
		opts.Progress = newRenderer(stderr).event
	}
	_, err = fetch.Download(ctx, t, dst, out, opts)
	return classify(err)
}

func classify(err error) error {
	if err == nil {
		return nil
	}
	var se *fetch.StatusError
	var pe *os.PathError
	switch {
	case errors.As(err, &se):
		return &exitErr{ExitNotFound, err}
	case errors.As(err, &pe):
		return &exitErr{ExitLocalIO, err}
	case errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "received"):
		return &exitErr{ExitIncomplete, err}
	}
	return &exitErr{ExitConnection, err}
}

// renderer draws one progress line: redrawn in place on a terminal, a
// plain line at start and end otherwise.
type renderer struct {
	w     io.Writer
	tty   bool
	width int
	start time.Time
	last  time.Time
	prevT time.Time
	prevN int64
	rate  float64
}

func newRenderer(w io.Writer) *renderer {
	r := &renderer{w: w}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		r.tty = true
		if wd, _, err := term.GetSize(int(f.Fd())); err == nil {
			r.width = wd
		}
	}
	if r.width <= 0 {
		r.width = 80
	}
	return r
}

func (r *renderer) event(e fetch.Event) {
	switch e.Kind {
	case "start":
		r.start, r.prevT = e.Time, e.Time
		if !r.tty {
			fmt.Fprintf(r.w, "zfetch: %s: %s\n", e.Name, human.Bytes(e.Total))
		}
	case "progress":
		if dt := e.Time.Sub(r.prevT).Seconds(); dt > 0 {
			inst := float64(e.Done-r.prevN) / dt
			if r.rate == 0 {
				r.rate = inst
			} else {
				r.rate = 0.7*r.rate + 0.3*inst
			}
			r.prevT, r.prevN = e.Time, e.Done
		}
		if r.tty {
			r.draw(e)
		}
	case "done":
		el := e.Time.Sub(r.start)
		avg := float64(e.Done) / max(el.Seconds(), 1e-9)
		if r.tty {
			r.draw(e)
			fmt.Fprintln(r.w)
		} else {
			fmt.Fprintf(r.w, "zfetch: %s: done, %s in %s (%s)\n", e.Name, human.Bytes(e.Done), human.Duration(el), human.Rate(avg))
		}
	case "error":
		if r.tty {
			fmt.Fprintln(r.w)
		}
	}
}

func (r *renderer) draw(e fetch.Event) {
	pct := 100.0
	if e.Total > 0 {
		pct = 100 * float64(e.Done) / float64(e.Total)
	}
	eta := "--"
	if r.rate > 0 && e.Total > 0 {
		eta = human.Duration(time.Duration(float64(e.Total-e.Done) / r.rate * float64(time.Second)))
	}
	line := fmt.Sprintf("%s %6.2f%% %s/%s %s ETA %s", e.Name, pct, human.Bytes(e.Done), human.Bytes(e.Total), human.Rate(r.rate), eta)
	if len(line) > r.width-1 {
		line = line[:r.width-1]
	}
	fmt.Fprintf(r.w, "\r%-*s", r.width-1, line)
}
