// Command zctl controls a running zfs-serve: status, drain, kill, reload.
package main

import (
	"context"
	"os"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/cli/zctl"
)

func main() {
	cli.Exit("zctl", zctl.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
