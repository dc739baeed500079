// Command zfetch downloads files from zfs-serve.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/cli/zfetch"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := zfetch.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	cli.Exit("zfetch", err)
}
