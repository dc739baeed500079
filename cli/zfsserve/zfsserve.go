// Package zfsserve is the zfs-serve command: flags, config, then the
// supervisor (or, re-executed by it, a worker).
package zfsserve

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon"
	"github.com/zfs-serve/zfs-serve/version"
)

const usage = `Usage: zfs-serve [--config FILE] [--root DIR] [--listen ADDR]... [--control PATH] [--workers N]
                 [--metrics ADDR]
       zfs-serve --check [--config FILE] [flags]
       zfs-serve --version

Serve files from DIR over the zfs-serve protocol with zero-copy sends,
from a pool of worker processes. Flags override the config file.
With no config file and no flags it serves the current directory on
127.0.0.1:7070.

Flags:
  --config FILE   config file (default /etc/zfs-serve/zfs-serve.toml if it exists)
  --root DIR      directory to serve
  --listen ADDR   address to listen on, host:port; repeat for several
                  (ignored when systemd passes sockets)
  --control PATH  control socket for zctl
                  (default /run/zfs-serve/control.sock as root or under systemd,
                  else $XDG_RUNTIME_DIR/zfs-serve/control.sock or /tmp/zfs-serve-$UID/)
  --workers N     worker processes (0 = one per CPU)
  --metrics ADDR  serve Prometheus metrics and health checks over HTTP on
                  host:port: /metrics, /healthz, /readyz, /livez
                  (config metrics_listen; "" = off, the default)
  --check         validate the configuration and exit (0 if valid)
  --version       print the version and exit

Signals: SIGTERM, SIGINT, SIGUSR1 drain (a second SIGTERM/SIGINT kills);
SIGHUP reloads. See zctl for the control socket.

Exit status: 0 drained, or killed on request (zctl kill; the log says what
it cut), 1 runtime error, 2 bad flags or configuration, 3 a drain cut
transfers (drain_timeout expired, or a second SIGTERM/SIGINT).
`

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// Run runs zfs-serve with args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == daemon.WorkerCommand {
		return daemon.RunWorker()
	}
	fs := flag.NewFlagSet("zfs-serve", flag.ContinueOnError)
	var (
		cfgPath  = fs.String("config", "", "")
		root     = fs.String("root", "", "")
		control  = fs.String("control", "", "")
		workers  = fs.Int("workers", 0, "")
		metrics  = fs.String("metrics", "", "")
		check    = fs.Bool("check", false, "")
		showVers = fs.Bool("version", false, "")
		listen   listFlag
	)
	fs.Var(&listen, "listen", "")
	if err := cli.ParseFlags(fs, args, stdout, func(w io.Writer) { fmt.Fprint(w, usage) }); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q (see --help)", fs.Arg(0))
	}
	for _, name := range []string{"config", "root", "control"} {
		if cli.Given(fs, name) && fs.Lookup(name).Value.String() == "" {
			return cli.Usagef("--%s wants a path, not an empty string", name)
		}
	}
	if *showVers {
		fmt.Fprintln(stdout, "zfs-serve", version.String())
		return nil
	}
	src := config.Source{Path: config.DefaultPath}
	if cli.Given(fs, "config") {
		src.Path, src.Explicit = *cfgPath, true
	}
	src.Overrides = config.Overrides{Root: *root, Listen: listen, Control: *control}
	if cli.Given(fs, "workers") {
		// Any value given, negative too: the config's validation
		// rejects what is out of range, naming the flag.
		src.Overrides.Workers = workers
	}
	if cli.Given(fs, "metrics") {
		src.Overrides.Metrics = metrics // "" too: it turns metrics off
	}
	cfg, err := src.Load()
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	if *check {
		fmt.Fprintf(stdout, "configuration OK (%s): root %s, listen %s, %d workers, zero_copy %s, control %s",
			src, cfg.Root, strings.Join(cfg.Listen, " "), cfg.Workers, cfg.ZeroCopy, cfg.Control)
		if cfg.MetricsListen != "" {
			fmt.Fprintf(stdout, ", metrics %s", cfg.MetricsListen)
		}
		fmt.Fprintln(stdout)
		return nil
	}
	return daemon.Run(ctx, daemon.Options{Source: src, Config: cfg, Version: version.String()})
}
