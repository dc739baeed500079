package daemon

import (
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/serve"
)

// A worker tells the supervisor, when it reports ready, how many
// connections it can hold at once without running out of descriptors, and
// the supervisor never hands it more. A descriptor passed with SCM_RIGHTS
// to a process with no room for it is closed by the kernel (the receiver
// sees MSG_CTRUNC): that client is lost to everyone, without an answer,
// since the supervisor closed its copy after the handoff. Only the sender
// can prevent that, so the check is the supervisor's, before the handoff:
// past a worker's capacity the connection goes to another worker, and
// when none has room the supervisor answers it busy itself. A worker that
// loses descriptors all the same (the count below is an estimate) reports
// msgFDShort with the connections it holds, and the supervisor lowers its
// capacity to that.
//
// The capacity is (limit - open - fixed - fdReserve) / perConn: limit is
// RLIMIT_NOFILE (Go raises the soft limit to the hard one at start), open
// what the worker holds when ready (stdio, channel, death pipe, poller,
// root), fixed and perConn what package serve says it may add
// (serve.Options.FDUse: the open file cache, a quarter of the limit at
// most; three descriptors per connection, five in splice mode). With a
// systemd default of 524288 that is over 100000 connections per worker,
// far above max_connections: the limit only ever matters on a box where
// it was lowered.

// fdReserve is descriptors left for what the count does not see: the Go
// runtime, a log file opened lazily, a status answer.
const fdReserve = 8

// maxCapacity is what a worker reports when its limit is no bound at all.
const maxCapacity = 1 << 30

// fdCapacity returns how many connections this process can serve at once
// with the options o, and the numbers it comes from.
func fdCapacity(o serve.Options) (capacity, limit, open int) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= maxCapacity {
		return maxCapacity, -1, -1
	}
	limit, open = int(lim.Cur), openFDs()
	return capacityFor(o, limit, open), limit, open
}

// capacityFor is the connections a process with these options, open-file
// limit and descriptors open can serve at once (at least 1).
func capacityFor(o serve.Options, limit, open int) int {
	fixed, perConn := o.FDUse(limit)
	return max((limit-open-fixed-fdReserve)/perConn, 1)
}

// openFDs counts this process's open descriptors (a guess of 32 if /proc
// is not mounted).
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 32
	}
	return len(ents) - 1 // the directory's own, closed by now
}

// warnCapacity logs when this worker's share of max_connections does not
// fit its open-file limit: connections past the capacity are answered
// busy (handoff), or wait in the listen backlog (accept: the worker stops
// accepting).
func warnCapacity(log *slog.Logger, c *config.Config, capacity, limit, open int) {
	share := (c.MaxConnections + c.Workers - 1) / max(c.Workers, 1)
	if limit < 0 || capacity >= share {
		return
	}
	past := "past it connections are answered busy"
	if c.Dispatch == config.DispatchAccept {
		past = "past it this worker stops accepting and connections wait in the listen backlog"
	}
	log.Warn("the open-file limit bounds this worker's connections below its share of max_connections; "+
		past+" (raise LimitNOFILE= or ulimit -n)",
		"nofile", limit, "open", open, "capacity", capacity, "share", share)
}
