// Command zfs-serve is the zero-copy file server daemon: a supervisor that
// accepts connections and hands them to a pool of worker processes.
package main

import (
	"context"
	"os"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/cli/zfsserve"
)

func main() {
	cli.Exit("zfs-serve", zfsserve.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
