// Package config is zfs-serve's configuration: the TOML schema, its
// defaults, strict decoding (an unknown key is an error naming the file,
// line and key) and validation. The supervisor resolves it once and hands
// the result to its workers over their channel, so workers never read files.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// DefaultPath is where zfs-serve looks for its config when --config is not given.
const DefaultPath = "/etc/zfs-serve/zfs-serve.toml"

// DefaultListen is the address served when neither config nor flags say.
// Loopback only: exposing files to a network must be a decision.
const DefaultListen = "127.0.0.1:7070"

// Zero-copy modes.
const (
	ModeSendfile = "sendfile"
	ModeSplice   = "splice"
	ModeMmap     = "mmap"
	ModeCopy     = "copy"
)

// Modes lists the accepted zero_copy values.
var Modes = []string{ModeSendfile, ModeSplice, ModeMmap, ModeCopy}

// Dispatch modes: who accepts connections (docs/ARCHITECTURE.md).
const (
	// DispatchHandoff: the supervisor accepts each connection and hands
	// it to the least-loaded worker (the default).
	DispatchHandoff = "handoff"
	// DispatchAccept: the workers accept on the listening sockets
	// themselves, the supervisor only holds them.
	DispatchAccept = "accept"
)

// Config is the whole configuration. The TOML keys are the contract with
// operators and packages; see etc/zfs-serve.toml for every key, commented.
type Config struct {
	Root           string   `toml:"root" json:"root"`
	Listen         []string `toml:"listen" json:"listen"`
	Control        string   `toml:"control" json:"control"`
	ControlGroup   string   `toml:"control_group" json:"control_group"`
	Workers        int      `toml:"workers" json:"workers"`
	MaxConnections int      `toml:"max_connections" json:"max_connections"`
	ZeroCopy       string   `toml:"zero_copy" json:"zero_copy"`
	SendChunk      Size     `toml:"send_chunk" json:"send_chunk"`
	HeaderTimeout  Duration `toml:"header_timeout" json:"header_timeout"`
	IdleTimeout    Duration `toml:"idle_timeout" json:"idle_timeout"`
	SendTimeout    Duration `toml:"send_timeout" json:"send_timeout"`
	DrainTimeout   Duration `toml:"drain_timeout" json:"drain_timeout"`
	OpenFileCache  Duration `toml:"open_file_cache" json:"open_file_cache"`
	HTTP           bool     `toml:"http" json:"http"`
	Index          []string `toml:"index" json:"index"`
	Listing        bool     `toml:"listing" json:"listing"`
	MaxRanges      int      `toml:"max_ranges" json:"max_ranges"`
	AccessLog      bool     `toml:"access_log" json:"access_log"`
	// AccessLogPath is the file access lines go to (access_log), opened
	// by the supervisor for each generation; "": the daemon's log.
	AccessLogPath string `toml:"access_log_path" json:"access_log_path"`
	Digests       bool   `toml:"digests" json:"digests"`
	DigestCache   string `toml:"digest_cache" json:"digest_cache"`
	User          string `toml:"user" json:"user"`
	Group         string `toml:"group" json:"group"`
	LogLevel      string `toml:"log_level" json:"log_level"`
	LogFormat     string `toml:"log_format" json:"log_format"`

	// MaxConnectionsPerClient bounds the connections in flight from one
	// client address; 0: no bound.
	MaxConnectionsPerClient int `toml:"max_connections_per_client" json:"max_connections_per_client"`
	// WorkerTimeout is how long a worker may leave the supervisor's
	// heartbeat unanswered before it is killed and replaced; 0: never.
	WorkerTimeout Duration `toml:"worker_timeout" json:"worker_timeout"`
	MetricsListen string   `toml:"metrics_listen" json:"metrics_listen"`
	// ProxyTrusted lists the networks (CIDR prefixes, or single
	// addresses) whose connections a proxy: listener accepts; empty:
	// any source (docs/PROXY.md).
	ProxyTrusted []string `toml:"proxy_trusted" json:"proxy_trusted"`
	// Dispatch is who accepts connections: DispatchHandoff or
	// DispatchAccept.
	Dispatch string `toml:"dispatch" json:"dispatch"`
	// DeferAccept sets TCP_DEFER_ACCEPT on the TCP listeners: a
	// connection is accepted once its first bytes have arrived.
	DeferAccept bool `toml:"defer_accept" json:"defer_accept"`
	// SupervisorSchedBatch runs the supervisor's threads SCHED_BATCH: a
	// new connection does not preempt a worker to be handed over.
	SupervisorSchedBatch bool `toml:"supervisor_sched_batch" json:"supervisor_sched_batch"`
	// OpenFileCacheValid is how long a cached file's fstat may stand in
	// for a fresh one; 0: every request fstats (serve/filecache.go).
	OpenFileCacheValid Duration `toml:"open_file_cache_valid" json:"open_file_cache_valid"`
	// OpenFileCacheInactive is how long a cached file may go unrequested
	// before its descriptor is closed (at least OpenFileCache).
	OpenFileCacheInactive Duration `toml:"open_file_cache_inactive" json:"open_file_cache_inactive"`
}

// Default returns the built-in configuration: serve the current directory on
// loopback with one worker per CPU.
func Default() *Config {
	return &Config{
		Root:           ".",
		Listen:         []string{DefaultListen},
		Workers:        0,
		MaxConnections: 10000,
		ZeroCopy:       ModeSendfile,
		SendChunk:      512 << 10,
		HeaderTimeout:  Duration(10 * time.Second),
		IdleTimeout:    Duration(60 * time.Second),
		SendTimeout:    Duration(60 * time.Second),
		DrainTimeout:   Duration(60 * time.Second),
		OpenFileCache:  Duration(time.Second),
		HTTP:           true,
		Index:          []string{"index.html"},
		Listing:        true,
		MaxRanges:      16,
		Digests:        true,
		LogLevel:       "info",
		LogFormat:      "text",
		WorkerTimeout:  Duration(10 * time.Second),
		ProxyTrusted:   []string{},
		Dispatch:       DispatchHandoff,
		DeferAccept:    true,

		SupervisorSchedBatch: true,

		OpenFileCacheValid:    Duration(time.Second),
		OpenFileCacheInactive: Duration(20 * time.Second),
	}
}

// MinWorkerTimeout is the shortest worker_timeout: a worker that does not
// answer is taken out of dispatch after 2 s, and replacing it must come
// later than that.
const MinWorkerTimeout = 3 * time.Second

// Overrides are the command-line flags; a set field replaces the file's value.
type Overrides struct {
	Root    string
	Listen  []string
	Control string
	Workers *int
	Metrics *string // --metrics: metrics_listen ("" turns it off)
}

// Source says where a configuration came from, so the supervisor can read
// it again on reload with the same flags on top.
type Source struct {
	Path      string // "" = built-in defaults
	Explicit  bool   // Path was given with --config (so it must exist)
	Overrides Overrides
}

func (s Source) String() string {
	p := s.Path
	if p == "" {
		p = "built-in defaults"
	} else if _, err := os.Stat(p); err != nil && !s.Explicit {
		p = "built-in defaults (no " + p + ")"
	}
	var fl []string
	if s.Overrides.Root != "" {
		fl = append(fl, "--root")
	}
	if len(s.Overrides.Listen) > 0 {
		fl = append(fl, "--listen")
	}
	if s.Overrides.Control != "" {
		fl = append(fl, "--control")
	}
	if s.Overrides.Workers != nil {
		fl = append(fl, "--workers")
	}
	if s.Overrides.Metrics != nil {
		fl = append(fl, "--metrics")
	}
	if len(fl) > 0 {
		p += " + " + strings.Join(fl, " ")
	}
	return p
}

// Load reads, decodes, overrides and validates the configuration described
// by src. Relative paths in the result are made absolute.
func (src Source) Load() (*Config, error) {
	c := Default()
	var lines map[string]int // the file's keys' lines, if a file was read
	if src.Path != "" {
		data, err := os.ReadFile(src.Path)
		switch {
		case err == nil:
			if lines, err = decode(src.Path, data, c); err != nil {
				return nil, err
			}
		case errors.Is(err, os.ErrNotExist) && !src.Explicit:
			// The default path is optional; built-in defaults apply.
		default:
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	o := src.Overrides
	if o.Root != "" {
		c.Root = o.Root
	}
	if len(o.Listen) > 0 {
		c.Listen = append([]string(nil), o.Listen...)
	}
	if o.Control != "" {
		c.Control = o.Control
	}
	if o.Workers != nil {
		c.Workers = *o.Workers
	}
	if o.Metrics != nil {
		c.MetricsListen = *o.Metrics
	}
	if err := c.Resolve(); err != nil {
		// Blame what set the value: a flag, the file (with the key's
		// line), or, when neither did, the built-in defaults.
		var ke *KeyError
		if errors.As(err, &ke) {
			if flag := o.flagFor(ke.Key); flag != "" {
				return nil, fmt.Errorf("%s: %w", flag, err)
			}
			if line := lines[ke.Key]; line > 0 {
				return nil, fmt.Errorf("%s:%d: %w", src.Path, line, err)
			}
		}
		if lines != nil {
			return nil, fmt.Errorf("%s: %w", src.Path, err)
		}
		return nil, err
	}
	return c, nil
}

// flagFor names the flag that set key, or "" if none did.
func (o Overrides) flagFor(key string) string {
	switch {
	case key == "root" && o.Root != "":
		return "--root"
	case key == "listen" && len(o.Listen) > 0:
		return "--listen"
	case key == "control" && o.Control != "":
		return "--control"
	case key == "workers" && o.Workers != nil:
		return "--workers"
	case key == "metrics_listen" && o.Metrics != nil:
		return "--metrics"
	}
	return ""
}

// KeyError is a validation error about one key.
type KeyError struct {
	Key string
	Msg string
}

func (e *KeyError) Error() string { return fmt.Sprintf("key %q: %s", e.Key, e.Msg) }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// validate checks values that need no access to the machine.
func (c *Config) validate() error {
	if c.Root == "" {
		return keyErr("root", "must not be empty")
	}
	if len(c.Listen) == 0 {
		return keyErr("listen", "needs at least one address (socket activation overrides it)")
	}
	seen := map[string]bool{}
	for _, a := range c.Listen {
		if err := CheckListen(a); err != nil {
			return keyErr("listen", "%v", err)
		}
		addr, _ := SplitListen(a)
		if _, port, _ := net.SplitHostPort(addr); port != "0" && seen[addr] {
			return keyErr("listen", "%s is listed twice (with and without proxy: is still one port)", addr)
		}
		seen[addr] = true
	}
	if _, err := ParseTrusted(c.ProxyTrusted); err != nil {
		return keyErr("proxy_trusted", "%v", err)
	}
	if c.MetricsListen != "" {
		if err := CheckAddr(c.MetricsListen); err != nil {
			return keyErr("metrics_listen", "%v", err)
		}
	}
	if c.Workers < 0 || c.Workers > 1024 {
		return keyErr("workers", "must be between 0 (one per CPU) and 1024, not %d", c.Workers)
	}
	if c.MaxConnections < 1 {
		return keyErr("max_connections", "must be at least 1, not %d", c.MaxConnections)
	}
	if c.MaxConnectionsPerClient < 0 {
		return keyErr("max_connections_per_client", "must be 0 (no limit) or more, not %d", c.MaxConnectionsPerClient)
	}
	switch c.Dispatch {
	case DispatchHandoff:
	case DispatchAccept:
		if c.MaxConnectionsPerClient > 0 {
			return keyErr("dispatch", "%q cannot enforce max_connections_per_client (no process sees every client's connections before they are served); set dispatch = %q or max_connections_per_client = 0", c.Dispatch, DispatchHandoff)
		}
	default:
		return keyErr("dispatch", "must be %s or %s, not %q", DispatchHandoff, DispatchAccept, c.Dispatch)
	}
	if !slices.Contains(Modes, c.ZeroCopy) {
		return keyErr("zero_copy", "must be one of %s, not %q", strings.Join(Modes, ", "), c.ZeroCopy)
	}
	if c.SendChunk < 64<<10 || c.SendChunk > 1<<30 {
		return keyErr("send_chunk", "must be between 64KiB and 1GiB, not %d", c.SendChunk)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"header_timeout", c.HeaderTimeout}, {"idle_timeout", c.IdleTimeout}, {"send_timeout", c.SendTimeout}, {"drain_timeout", c.DrainTimeout}} {
		if d.v <= 0 {
			return keyErr(d.key, "must be a positive duration, not %v", d.v.D())
		}
	}
	if w := c.WorkerTimeout.D(); w != 0 && (w < MinWorkerTimeout || w > time.Hour) {
		return keyErr("worker_timeout", "must be 0 (never) or between %v and 1h, not %v", MinWorkerTimeout, w)
	}
	if c.OpenFileCache < 0 || c.OpenFileCache.D() > time.Hour {
		return keyErr("open_file_cache", "must be between 0 (off) and 1h, not %v", c.OpenFileCache.D())
	}
	if c.OpenFileCacheInactive < 0 || c.OpenFileCacheInactive.D() > 24*time.Hour {
		return keyErr("open_file_cache_inactive", "must be between 0 (open_file_cache) and 24h, not %v", c.OpenFileCacheInactive.D())
	}
	if c.OpenFileCacheValid < 0 || c.OpenFileCacheValid.D() > time.Hour {
		return keyErr("open_file_cache_valid", "must be between 0 (fstat every request) and 1h, not %v", c.OpenFileCacheValid.D())
	}
	for _, name := range c.Index {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
			return keyErr("index", "must list file names (no \"/\"), not %q", name)
		}
	}
	if c.MaxRanges < 0 || c.MaxRanges > 1000 {
		return keyErr("max_ranges", "must be between 0 (ranges ignored) and 1000, not %d", c.MaxRanges)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return keyErr("log_level", "must be debug, info, warn or error, not %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return keyErr("log_format", "must be text or json, not %q", c.LogFormat)
	}
	return nil
}

// Resolve validates c and fills the values that depend on the machine:
// absolute paths, the worker count, the control socket path, user and
// group existence.
func (c *Config) Resolve() error {
	if err := c.validate(); err != nil {
		return err
	}
	root, err := filepath.Abs(c.Root)
	if err != nil {
		return keyErr("root", "%v", err)
	}
	st, err := os.Stat(root)
	if err != nil {
		return keyErr("root", "%v", err)
	}
	if !st.IsDir() {
		return keyErr("root", "%s is not a directory", root)
	}
	c.Root = root
	if c.Workers == 0 {
		c.Workers = runtime.NumCPU()
	}
	if c.Control == "" {
		c.Control = ctl.DefaultControlPath()
	}
	if c.Control, err = filepath.Abs(c.Control); err != nil {
		return keyErr("control", "%v", err)
	}
	if len(c.Control) > ctl.MaxSocketPath {
		return keyErr("control", "socket path %s is %d bytes long; a unix socket path can have at most %d",
			c.Control, len(c.Control), ctl.MaxSocketPath)
	}
	if c.AccessLogPath != "" {
		if c.AccessLogPath, err = filepath.Abs(c.AccessLogPath); err != nil {
			return keyErr("access_log_path", "%v", err)
		}
		if c.AccessLog {
			if err := CheckAccessLogPath(c.AccessLogPath); err != nil {
				return keyErr("access_log_path", "%v", err)
			}
		}
	}
	if c.DigestCache, err = resolveDigestCache(c.DigestCache, os.Getenv("CACHE_DIRECTORY")); err != nil {
		return keyErr("digest_cache", "%v", err)
	}
	if c.User != "" {
		if _, err := LookupUser(c.User); err != nil {
			return keyErr("user", "%v", err)
		}
	}
	for key, g := range map[string]string{"group": c.Group, "control_group": c.ControlGroup} {
		if g != "" {
			if _, err := LookupGroup(g); err != nil {
				return keyErr(key, "%v", err)
			}
		}
	}
	return nil
}

// DigestCacheMemory as digest_cache keeps digests in memory only, even
// where $CACHE_DIRECTORY is set.
const DigestCacheMemory = "memory"

// resolveDigestCache is the digest cache directory for the digest_cache
// value v: v made absolute; for "" the subdirectory "sha256" of the first
// of $CACHE_DIRECTORY's directories (systemd sets it for CacheDirectory=),
// else "" (memory only); "memory" stays "memory" (memory only).
func resolveDigestCache(v, cacheDirectory string) (string, error) {
	switch v {
	case DigestCacheMemory:
		return v, nil
	case "":
		dir, _, _ := strings.Cut(cacheDirectory, ":")
		if dir == "" {
			return "", nil
		}
		return filepath.Join(dir, "sha256"), nil
	}
	return filepath.Abs(v)
}

// LookupUser resolves a user name or numeric uid to (uid, primary gid).
func LookupUser(name string) (*user.User, error) {
	if _, err := strconv.Atoi(name); err == nil {
		return user.LookupId(name)
	}
	return user.Lookup(name)
}

// LookupGroup resolves a group name or numeric gid to its gid.
func LookupGroup(name string) (int, error) {
	if id, err := strconv.Atoi(name); err == nil {
		return id, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// CheckAccessLogPath refuses an access_log_path that names something
// other than a regular file: when the configuration is resolved, so that
// --check says so too, and by the supervisor before its open
// (daemon/accesslog.go). A path that does
// not exist yet passes: the supervisor creates the file, and the folder
// may be made at start (the unit's LogsDirectory=); so does one this
// process may not look at, which the start's open then judges.
func CheckAccessLogPath(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	switch {
	case st.Mode().IsRegular():
		return nil
	case st.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link, not a regular file", path)
	case st.IsDir():
		return fmt.Errorf("%s is a directory, not a regular file", path)
	case st.Mode()&fs.ModeNamedPipe != 0:
		return fmt.Errorf("%s is a FIFO, not a regular file", path)
	case st.Mode()&fs.ModeDevice != 0:
		return fmt.Errorf("%s is a device, not a regular file", path)
	}
	return fmt.Errorf("%s is not a regular file", path)
}
