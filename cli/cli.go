// Package cli holds what the three commands share: turning a Run error
// into a message and an exit status.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/zfs-serve/zfs-serve/internal/human"
)

// Exit statuses shared by every command. Each command documents its own
// on top of these in its --help.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// UsageError is a bad command line or configuration: exit status 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// ExitCoder is an error that chooses its exit status.
type ExitCoder interface{ ExitCode() int }

// Code maps an error to an exit status.
func Code(err error) int {
	var ec ExitCoder
	var ue *UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ec):
		return ec.ExitCode()
	case errors.As(err, &ue):
		return ExitUsage
	}
	return ExitError
}

// ParseFlags parses args into fs with the commands' conventions. -h and
// --help print the usage (written by usage) on stdout and return
// flag.ErrHelp, which exits 0. A bad flag returns a one-line UsageError
// and prints nothing: Report prints it, once, on stderr.
func ParseFlags(fs *flag.FlagSet, args []string, stdout io.Writer, usage func(io.Writer)) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		usage(stdout)
		return err
	}
	return &UsageError{Err: fmt.Errorf("%w (see --help)", err)}
}

// Given reports whether the flag called name was set on the command line.
func Given(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			given = true
		}
	})
	return given
}

// Exit prints err (if any) as "prog: err" and exits with its status.
func Exit(prog string, err error) {
	os.Exit(Report(os.Stderr, prog, err))
}

// Report prints err and returns the exit status, for tests. Each line of
// the message (several for a config file with several mistakes) is
// printed made Printable, as it may carry text from a server, and starts
// with prog, so none can pass for another program's.
func Report(w io.Writer, prog string, err error) int {
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(w, "%s: %s\n", prog, human.Printable(line))
		}
	}
	return Code(err)
}
