// Command zprof is zfs-serve with Go's CPU profiler on a trigger, for the
// benchmark's profiles only: the same command-line code as cmd/zfs-serve
// (so the workers, re-executed from this binary, are zprof too), plus a
// goroutine that watches a directory. It adds nothing to the daemon.
//
// With ZBENCH_PROFILE_DIR=DIR in the environment (the supervisor passes it
// on to its workers), every process waits for DIR/start.N, profiles until
// DIR/stop.N appears, writes DIR/ROLE-PID-N.pprof (ROLE is supervisor or
// worker) and then DIR/ROLE-PID-N.done, for N = 0, 1, 2...
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/cli/zfsserve"
	"github.com/zfs-serve/zfs-serve/daemon"
)

func main() {
	if dir := os.Getenv("ZBENCH_PROFILE_DIR"); dir != "" {
		role := "supervisor"
		if len(os.Args) > 1 && os.Args[1] == daemon.WorkerCommand {
			role = "worker"
		}
		go profileOnTrigger(dir, role)
	}
	cli.Exit("zfs-serve", zfsserve.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func profileOnTrigger(dir, role string) {
	for n := 0; ; n++ {
		waitFor(filepath.Join(dir, fmt.Sprintf("start.%d", n)))
		base := filepath.Join(dir, fmt.Sprintf("%s-%d-%d", role, os.Getpid(), n))
		f, err := os.Create(base + ".pprof")
		if err != nil {
			fmt.Fprintln(os.Stderr, "zprof:", err)
			return
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "zprof:", err)
			f.Close()
			return
		}
		waitFor(filepath.Join(dir, fmt.Sprintf("stop.%d", n)))
		pprof.StopCPUProfile()
		f.Close()
		os.WriteFile(base+".done", nil, 0o644)
	}
}

func waitFor(name string) {
	for {
		if _, err := os.Stat(name); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
