// Package zctl is the zctl command: it talks to a running zfs-serve over
// its control socket. Each subcommand lives in its own file with its own
// flag set.
package zctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/ctl"
)

const usage = `Usage: zctl [-s PATH] COMMAND [flags]

Control a running zfs-serve.

Commands:
  status [--json]                 what the server is doing now: state, listeners,
                                  workers, transfers in flight
  drain [--wait] [--timeout DUR]  graceful exit: answer new connections
                                  "draining", finish every transfer in flight,
                                  then exit (like SIGUSR1); a new zfs-serve
                                  started meanwhile takes the port over; during
                                  a drain, --timeout can only bring its
                                  deadline closer
  kill                            immediate exit: workers killed, connections dropped
  reload [--wait]                 re-read the config and start a new generation of
                                  workers; returns once it serves (--wait: once the
                                  old generation has drained too)
  digest [--timeout DUR] PATH...  the SHA-256 of files (paths as clients request them),
                                  hashed now if not known yet, printed as sha256sum
                                  does; exit 1 if any could not be hashed (default
                                  --timeout 5m)

Flags:
  -s PATH   control socket (default: $ZFS_SERVE_CONTROL, else the first that
            exists of $XDG_RUNTIME_DIR/zfs-serve/control.sock,
            /tmp/zfs-serve-$UID/control.sock, /run/zfs-serve/control.sock;
            as root /run/zfs-serve/control.sock comes first)

A daemon that says nothing for 10s (95s for reload's answer, digest's
--timeout plus 10s for its answer; with --wait, 10s between progress lines)
is given up on: "no answer from the daemon in 10s: is it stopped?" (a
SIGSTOPped or wedged zfs-serve).

Exit status: 0 success, 1 the daemon refused or the operation failed,
2 usage error, 3 cannot reach the daemon, or it did not answer in time.
`

// ExitUnreachable is the exit status when the control socket cannot be
// reached, or the daemon does not answer in time.
const ExitUnreachable = 3

// timeouts bound the waits for the daemon (shortened by tests).
var timeouts = ctl.DefaultTimeouts

type unreachable struct{ error }

func (unreachable) ExitCode() int   { return ExitUnreachable }
func (u unreachable) Unwrap() error { return u.error }

// env is what a subcommand needs.
type env struct {
	socket   string
	timeouts ctl.Timeouts
	stdout   io.Writer
	stderr   io.Writer
}

// do runs one request on a fresh connection.
func (e *env) do(req ctl.Request, onProgress func(*ctl.Response)) (*ctl.Response, error) {
	c, err := ctl.Dial(e.socket)
	if err != nil {
		return nil, unreachable{err}
	}
	defer c.Close()
	c.Timeouts = e.timeouts
	r, err := c.Do(req, onProgress)
	var na *ctl.NoAnswerError
	if errors.As(err, &na) {
		return nil, unreachable{err}
	}
	return r, err
}

// Run runs zctl with args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("zctl", flag.ContinueOnError)
	socket := fs.String("s", "", "")
	printUsage := func(w io.Writer) { fmt.Fprint(w, usage) }
	if err := cli.ParseFlags(fs, args, stdout, printUsage); err != nil {
		return err
	}
	if cli.Given(fs, "s") && *socket == "" {
		return cli.Usagef("-s wants a socket path, not an empty string")
	}
	if fs.NArg() == 0 {
		printUsage(stderr)
		return cli.Usagef("no command given")
	}
	e := &env{socket: ctl.SocketPath(*socket), timeouts: timeouts, stdout: stdout, stderr: stderr}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "status":
		return e.status(rest)
	case "drain":
		return e.drain(rest)
	case "kill":
		return e.kill(rest)
	case "reload":
		return e.reload(rest)
	case "digest":
		return e.digest(rest)
	case "help":
		printUsage(stdout)
		return nil
	}
	return cli.Usagef("unknown command %q (want status, drain, kill, reload or digest)", cmd)
}

// subFlags is a subcommand's flag set with zctl's conventions.
func (e *env) subFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("zctl "+name, flag.ContinueOnError)
	fs.Usage = func() { // called by parseSub for -h and --help, on stdout
		fmt.Fprintf(e.stdout, "Usage: zctl %s\n", synopsis)
		fs.SetOutput(e.stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

func parseSub(fs *flag.FlagSet, args []string) error {
	usage := fs.Usage
	if err := cli.ParseFlags(fs, args, nil, func(io.Writer) { usage() }); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
