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
