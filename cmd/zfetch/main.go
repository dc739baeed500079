// Command zfetch downloads files from zfs-serve.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/cli/zfetch"
)

func main() {
	// Ctrl-C and SIGTERM stop the downloads, keeping their .part files; a
	// second one is not caught, so it ends zfetch at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	err := zfetch.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if zfetch.Reported(err) {
		os.Exit(cli.Code(err))
	}
	cli.Exit("zfetch", err)
}
