package daemon

// The contract between the supervisor and the worker processes it starts.
// A worker is this same binary, re-executed from os.Executable() with
// WorkerCommand as its only argument and these descriptors and variables.
const (
	// WorkerCommand is the hidden subcommand that runs a worker.
	WorkerCommand = "__worker"

	// CookieKey/CookieValue must be in a worker's environment; without
	// them the worker entry refuses to run, so nobody starts one by hand.
	CookieKey   = "ZFS_SERVE_WORKER_COOKIE"
	CookieValue = "4b1f0c6e9e2a7d35-zfs-serve-worker"

	// channelFD is the worker's end of its SOCK_SEQPACKET socketpair with
	// the supervisor: config, connections and drain come down it; ready,
	// finished connections and status go up.
	channelFD = 3
	// deathFD is the read end of a pipe whose write end only the
	// supervisor holds. It reads EOF when the supervisor is gone, however
	// it died (Pdeathsig fires on thread exit in Go, so it is not used).
	deathFD = 4
	// accessLogFD is the file access lines go to (access_log_path), which
	// the supervisor opens for each generation; passed only when set.
	accessLogFD = 5

	// channelVersion guards against a new worker binary (after a package
	// upgrade and a reload) speaking to an old supervisor, or the reverse.
	channelVersion = 6
)

// envDenied are variables a worker must not inherit: only the supervisor
// talks to systemd, and workers hold no listeners.
var envDenied = []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", CookieKey}
