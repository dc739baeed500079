package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeConfig writes body to a file in a fresh temp dir and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "zfs-serve.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// load loads body as an explicit config file, with the root overridden to
// an existing directory unless the body sets one.
func load(t *testing.T, body string) (*Config, string, error) {
	t.Helper()
	p := writeConfig(t, body)
	src := Source{Path: p, Explicit: true}
	if !strings.Contains(body, "root") {
		body = "root = " + strconv.Quote(t.TempDir()) + "\n" + body
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := src.Load()
	return c, p, err
}

// lineOf returns the 1-based line of body (after load's root line, if
// added) that contains marker.
func lineOf(t *testing.T, path, marker string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, marker) {
			return i + 1
		}
	}
	t.Fatalf("%q not in %s", marker, b)
	return 0
}

func TestDefault(t *testing.T) {
	c := Default()
	want := &Config{
		Root:                 ".",
		Listen:               []string{"127.0.0.1:7070"},
		MaxConnections:       10000,
		ZeroCopy:             "sendfile",
		SendChunk:            512 << 10,
		HeaderTimeout:        Duration(10 * time.Second),
		IdleTimeout:          Duration(time.Minute),
		SendTimeout:          Duration(time.Minute),
		DrainTimeout:         Duration(time.Minute),
		OpenFileCache:        Duration(time.Second),
		HTTP:                 true,
		Index:                []string{"index.html"},
		Listing:              true,
		MaxRanges:            16,
		Digests:              true,
		LogLevel:             "info",
		LogFormat:            "text",
		WorkerTimeout:        Duration(10 * time.Second),
		ProxyTrusted:         []string{},
		Dispatch:             "handoff",
		DeferAccept:          true,
		SupervisorSchedBatch: true,

		OpenFileCacheValid:    Duration(time.Second),
		OpenFileCacheInactive: Duration(20 * time.Second),
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Default() = %+v\nwant        %+v", c, want)
	}
	if err := c.validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
	// Each call is a fresh value: callers may change it.
	c.Listen[0] = "changed"
	if Default().Listen[0] != DefaultListen {
		t.Fatal("Default() shares its Listen slice between calls")
	}
}

func TestUnknownKeys(t *testing.T) {
	tests := []struct {
		name string
		body string
		// want: each unknown key with the text on its line (to find the line number).
		want [][2]string
	}{
		{"top level", "workers = 2\nworkerz = 3\n", [][2]string{{"workerz", "workerz = 3"}}},
		{"quoted top level", "\"rooot\" = \"/x\"\n", [][2]string{{"rooot", "rooot"}}},
		{"several", "wrokers = 1\nzero_copy = \"splice\"\n\nlisten_on = [\"x\"]\n", [][2]string{
			{"wrokers", "wrokers"}, {"listen_on", "listen_on"}}},
		{"table", "workers = 1\n\n[tls]\ncert = \"c\"\nkey = \"k\"\n", [][2]string{
			{"tls", "[tls]"}, {"tls.cert", "cert ="}, {"tls.key", "key ="}}},
		{"table header with comment", "[log] # logging\nlevel = \"debug\"\n", [][2]string{
			{"log", "[log]"}, {"log.level", "level ="}}},
		{"implicit table", "[a.b]\nc = 1\n\n[a]\nd = 2\n", [][2]string{
			{"a.b", "[a.b]"}, {"a.b.c", "c = 1"}, {"a", "[a]"}, {"a.d", "d = 2"}}},
		{"dotted key", "\nlimits.rate = 5\n", [][2]string{{"limits.rate", "limits.rate"}}},
		{"dotted key in table", "[limits]\nper.ip = 5\n", [][2]string{{"limits", "[limits]"}, {"limits.per.ip", "per.ip"}}},
		{"inline table", "\n\nfoo = { bar = 1 }\n", [][2]string{{"foo", "foo ="}, {"foo.bar", "foo ="}}},
		{"array of tables", "[[mount]]\npath = \"/a\"\n", [][2]string{{"mount", "[[mount]]"}, {"mount.path", "path ="}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, p, err := load(t, tt.body)
			if err == nil {
				t.Fatal("unknown keys were accepted")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d error lines, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				want := p + ":" + strconv.Itoa(lineOf(t, p, w[1])) + ": unknown key " + strconv.Quote(w[0])
				if lines[i] != want {
					t.Errorf("error line %d:\n got %s\nwant %s", i, lines[i], want)
				}
			}
		})
	}
}

// errLine returns the line an error names ("FILE:LINE: ...").
func errLine(t *testing.T, err error, path string) int {
	t.Helper()
	m := regexp.MustCompile("^" + regexp.QuoteMeta(path) + `:(\d+): `).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("error does not start with file %s and a line: %v", path, err)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestTypeErrors(t *testing.T) {
	tests := []struct {
		body, key, msg string
	}{
		{"workers = \"x\"\n", "workers", "incompatible types"},
		{"max_connections = 1.5\n", "max_connections", "incompatible types"},
		{"listen = \"127.0.0.1:1\"\n", "listen", "incompatible types"},
		{"zero_copy = 1\n", "zero_copy", "incompatible types"},
		{"drain_timeout = 5\n", "drain_timeout", "not a duration"},
		{"idle_timeout = \"ten seconds\"\n", "idle_timeout", "not a duration"},
		{"send_chunk = 1.5\n", "send_chunk", "not a size"},
		{"send_chunk = \"2MB\"\n", "send_chunk", "not a size"},
		{"send_chunk = -65536\n", "send_chunk", "negative size"},
		{"workers = 2\nworkers = 3\n", "workers", "already been defined"},
		{"workers = \n", "", "expected value"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			body := "# comment\n\n" + tt.body
			_, p, err := load(t, body)
			if err == nil {
				t.Fatal("accepted")
			}
			// The offending line is the last one of the body.
			wantLine := strings.Count(mustRead(t, p), "\n")
			if got := errLine(t, err, p); got != wantLine {
				t.Errorf("error names line %d, want %d: %v", got, wantLine, err)
			}
			if tt.key != "" && !strings.Contains(err.Error(), ": key "+strconv.Quote(tt.key)+": ") {
				t.Errorf("error does not name key %q: %v", tt.key, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error does not say %q: %v", tt.msg, err)
			}
		})
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		line, key, msg string
	}{
		{`workers = -1`, "workers", "between 0 (one per CPU) and 1024, not -1"},
		{`workers = 1025`, "workers", "not 1025"},
		{`max_connections = 0`, "max_connections", "at least 1"},
		{`max_connections_per_client = -1`, "max_connections_per_client", "0 (no limit) or more, not -1"},
		{`dispatch = "nope"`, "dispatch", `must be handoff or accept, not "nope"`},
		{`worker_timeout = "2s"`, "worker_timeout", "0 (never) or between 3s and 1h, not 2s"},
		{`worker_timeout = "2h"`, "worker_timeout", "not 2h0m0s"},
		{`zero_copy = "zerocopy"`, "zero_copy", `must be one of sendfile, splice, mmap, copy, not "zerocopy"`},
		{`send_chunk = "1KiB"`, "send_chunk", "between 64KiB and 1GiB, not 1024"},
		{`send_chunk = 65535`, "send_chunk", "not 65535"},
		{`send_chunk = "2GiB"`, "send_chunk", "between 64KiB and 1GiB"},
		{`header_timeout = "0s"`, "header_timeout", "positive duration, not 0s"},
		{`idle_timeout = "-5s"`, "idle_timeout", "positive duration, not -5s"},
		{`send_timeout = "0"`, "send_timeout", "positive duration"},
		{`drain_timeout = "-1m"`, "drain_timeout", "positive duration, not -1m0s"},
		{`listen = []`, "listen", "at least one address"},
		{`listen = ["127.0.0.1"]`, "listen", `bad address "127.0.0.1"`},
		{`listen = ["127.0.0.1:7070", "example.com:80"]`, "listen", "host must be an IP address"},
		{`listen = ["127.0.0.1:65536"]`, "listen", "bad port"},
		{`listen = ["127.0.0.1:http"]`, "listen", "bad port"},
		{`log_level = "verbose"`, "log_level", `must be debug, info, warn or error, not "verbose"`},
		{`log_format = "xml"`, "log_format", `must be text or json, not "xml"`},
		{`root = ""`, "root", "must not be empty"},
		{`open_file_cache = "-1s"`, "open_file_cache", "between 0 (off) and 1h, not -1s"},
		{`open_file_cache = "2h"`, "open_file_cache", "not 2h0m0s"},
		{`open_file_cache_inactive = "-1s"`, "open_file_cache_inactive", "between 0 (open_file_cache) and 24h, not -1s"},
		{`open_file_cache_inactive = "25h"`, "open_file_cache_inactive", "not 25h0m0s"},
		{`open_file_cache_valid = "-1s"`, "open_file_cache_valid", "between 0 (fstat every request) and 1h, not -1s"},
		{`open_file_cache_valid = "2h"`, "open_file_cache_valid", "not 2h0m0s"},
		{`metrics_listen = "9100"`, "metrics_listen", `bad address "9100"`},
		{`listen = ["proxy:127.0.0.1"]`, "listen", `bad address "127.0.0.1"`},
		{`listen = ["proxy:"]`, "listen", `bad address ""`},
		{`listen = ["PROXY:127.0.0.1:7071"]`, "listen", `bad address`},
		{`listen = ["127.0.0.1:7070", "proxy:127.0.0.1:7070"]`, "listen", "127.0.0.1:7070 is listed twice"},
		{`proxy_trusted = ["10.0.0.0/33"]`, "proxy_trusted", `"10.0.0.0/33" is not a network`},
		{`proxy_trusted = ["10.0.0.1/8"]`, "proxy_trusted", "write 10.0.0.0/8"},
		{`proxy_trusted = ["example.com"]`, "proxy_trusted", `"example.com" is not a network`},
		{`proxy_trusted = ["fe80::1%eth0"]`, "proxy_trusted", "is not a network"},
		{`metrics_listen = "example.com:9100"`, "metrics_listen", "host must be an IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			body := "# a comment\ncontrol_group = \"\"\n\n" + tt.line + "\nuser = \"\"\n"
			_, p, err := load(t, body)
			if err == nil {
				t.Fatal("accepted")
			}
			want := p + ":" + strconv.Itoa(lineOf(t, p, tt.line)) + ": key " + strconv.Quote(tt.key) + ": "
			if !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error\n got %v\nwant prefix %s", err, want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error does not say %q: %v", tt.msg, err)
			}
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != tt.key {
				t.Errorf("error is not a *KeyError for %q: %#v", tt.key, err)
			}
		})
	}
}

func TestValidConfigs(t *testing.T) {
	tests := []struct {
		body  string
		check func(*Config) bool
	}{
		{`listen = ["[::1]:7070", ":0", "localhost:1", "0.0.0.0:65535"]`, func(c *Config) bool { return len(c.Listen) == 4 }},
		{`workers = 1024`, func(c *Config) bool { return c.Workers == 1024 }},
		{`zero_copy = "splice"`, func(c *Config) bool { return c.ZeroCopy == ModeSplice }},
		{`dispatch = "accept"`, func(c *Config) bool { return c.Dispatch == DispatchAccept }},
		{`dispatch = "handoff"`, func(c *Config) bool { return c.Dispatch == DispatchHandoff }},
		{`defer_accept = false`, func(c *Config) bool { return !c.DeferAccept }},
		{`supervisor_sched_batch = false`, func(c *Config) bool { return !c.SupervisorSchedBatch }},
		{`log_level = "warn"`, func(c *Config) bool { return c.SupervisorSchedBatch }}, // the default
		{`zero_copy = "mmap"`, func(c *Config) bool { return c.ZeroCopy == ModeMmap }},
		{`zero_copy = "copy"`, func(c *Config) bool { return c.ZeroCopy == ModeCopy }},
		{`send_chunk = "64KiB"`, func(c *Config) bool { return c.SendChunk == 64<<10 }},
		{`send_chunk = 2097152`, func(c *Config) bool { return c.SendChunk == 2<<20 }},
		{`send_chunk = "1GiB"`, func(c *Config) bool { return c.SendChunk == 1<<30 }},
		{`drain_timeout = "1h30m"`, func(c *Config) bool { return c.DrainTimeout.D() == 90*time.Minute }},
		{`header_timeout = "250ms"`, func(c *Config) bool { return c.HeaderTimeout.D() == 250*time.Millisecond }},
		{`log_level = "debug"` + "\n" + `log_format = "json"`, func(c *Config) bool { return c.LogLevel == "debug" && c.LogFormat == "json" }},
		{`control_group = "0"`, func(c *Config) bool { return c.ControlGroup == "0" }},
		{`user = "root"` + "\n" + `group = "root"`, func(c *Config) bool { return c.User == "root" && c.Group == "root" }},
		{`metrics_listen = "127.0.0.1:0"`, func(c *Config) bool { return c.MetricsListen == "127.0.0.1:0" }},
		{`metrics_listen = ""`, func(c *Config) bool { return c.MetricsListen == "" }},
		{`control = "rel/ctl.sock"`, func(c *Config) bool {
			return filepath.IsAbs(c.Control) && strings.HasSuffix(c.Control, "/rel/ctl.sock")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			c, _, err := load(t, tt.body+"\n")
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected result: %+v", c)
			}
		})
	}
}

// The supervisor sends its resolved Config to workers as JSON; it must
// come back unchanged.
func TestJSONRoundTrip(t *testing.T) {
	c, _, err := load(t, "send_chunk = \"64KiB\"\nheader_timeout = \"1.5s\"\nworkers = 3\nuser = \"root\"\nlisten = [\"[::1]:0\", \"127.0.0.1:1\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back Config
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if !reflect.DeepEqual(c, &back) {
		t.Errorf("round trip changed the config:\n got %+v\nwant %+v", &back, c)
	}
}
