package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/zfs-serve/zfs-serve/ctl"
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

func TestResolveErrorsNameTheirSource(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	body := "# c\nroot = " + strconv.Quote(missing) + "\n"

	p := writeConfig(t, body)
	_, err := Source{Path: p, Explicit: true}.Load()
	if want := p + ":2: key \"root\": "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("missing root in the file: got %v, want prefix %q", err, want)
	}

	// A bad --root is the flag's fault, not the file's.
	_, err = Source{Path: p, Explicit: true, Overrides: Overrides{Root: file}}.Load()
	if want := "--root: key \"root\": " + file + " is not a directory"; err == nil || err.Error() != want {
		t.Errorf("--root naming a file: got %v, want %q", err, want)
	}

	// A default path that does not exist is not to blame either.
	_, err = Source{Path: filepath.Join(dir, "nope.toml"), Overrides: Overrides{Root: missing}}.Load()
	if err == nil || !strings.HasPrefix(err.Error(), "--root: key \"root\": ") || strings.Contains(err.Error(), "nope.toml") {
		t.Errorf("missing --root with no config file: got %v", err)
	}

	// An unknown user in the file names its line.
	p = writeConfig(t, "root = "+strconv.Quote(dir)+"\n\nuser = \"no-such-user-zfs\"\n")
	_, err = Source{Path: p, Explicit: true}.Load()
	if want := p + ":3: key \"user\": "; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("unknown user: got %v, want prefix %q", err, want)
	}
}

func TestSizeText(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"2MiB", 2 << 20, true},
		{"2097152", 2 << 20, true},
		{"64KiB", 64 << 10, true},
		{"1GiB", 1 << 30, true},
		{"512B", 512, true},
		{" 3 MiB ", 3 << 20, true},
		{"0", 0, true},
		{"4294967296GiB", 1 << 62, true},
		{"4294967297GiB", 0, false}, // overflows
		{"9223372036854775807", 0, false},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1", 0, false},
		{"-1KiB", 0, false},
		{"1.5MiB", 0, false},
		{"2MB", 0, false},
		{"2mib", 0, false},
		{"2 M", 0, false},
		{"two", 0, false},
		{"0x10", 0, false},
	}
	for _, tt := range tests {
		var s Size = 7
		err := s.UnmarshalText([]byte(tt.in))
		switch {
		case tt.ok && err != nil:
			t.Errorf("%q: %v", tt.in, err)
		case tt.ok && s != tt.want:
			t.Errorf("%q = %d, want %d", tt.in, s, tt.want)
		case !tt.ok && err == nil:
			t.Errorf("%q accepted as %d", tt.in, s)
		case !tt.ok && s != 7:
			t.Errorf("%q: failed but changed the value to %d", tt.in, s)
		}
	}
}

func TestSizeTOML(t *testing.T) {
	tests := []struct {
		in   any
		want Size
		ok   bool
	}{
		{int64(2097152), 2 << 20, true},
		{int64(0), 0, true},
		{"64KiB", 64 << 10, true},
		{int64(-1), 0, false},
		{1.5, 0, false},
		{true, 0, false},
		{[]any{int64(1)}, 0, false},
	}
	for _, tt := range tests {
		var s Size
		err := s.UnmarshalTOML(tt.in)
		if tt.ok != (err == nil) || s != tt.want {
			t.Errorf("UnmarshalTOML(%#v) = %d, %v; want %d, ok %v", tt.in, s, err, tt.want, tt.ok)
		}
	}
}

func TestSizeMarshalRoundTrip(t *testing.T) {
	tests := []struct {
		s    Size
		text string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{1024, "1KiB"},
		{1536, "1536"},
		{64 << 10, "64KiB"},
		{2 << 20, "2MiB"},
		{3 << 30, "3GiB"},
		{1<<30 + 1<<20, "1025MiB"},
	}
	for _, tt := range tests {
		b, err := tt.s.MarshalText()
		if err != nil || string(b) != tt.text {
			t.Errorf("MarshalText(%d) = %q, %v; want %q", tt.s, b, err, tt.text)
			continue
		}
		var back Size
		if err := back.UnmarshalText(b); err != nil || back != tt.s {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d", b, back, err, tt.s)
		}
	}
}

func TestDurationText(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30s", 30 * time.Second, true},
		{"2m", 2 * time.Minute, true},
		{"1h2m3s", time.Hour + 2*time.Minute + 3*time.Second, true},
		{"1.5s", 1500 * time.Millisecond, true},
		{"0", 0, true},
		{"-5s", -5 * time.Second, true}, // parsed; validate refuses it
		{"5", 0, false},
		{"", 0, false},
		{"30 s", 0, false},
		{"1d", 0, false},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if tt.ok != (err == nil) || d.D() != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v, ok %v", tt.in, d.D(), err, tt.want, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), strconv.Quote(tt.in)) {
			t.Errorf("error for %q does not quote it: %v", tt.in, err)
		}
	}
	b, _ := Duration(90 * time.Second).MarshalText()
	if string(b) != "1m30s" {
		t.Errorf("MarshalText(90s) = %q", b)
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

func TestOverrides(t *testing.T) {
	fileRoot, flagRoot := t.TempDir(), t.TempDir()
	p := writeConfig(t, "root = "+strconv.Quote(fileRoot)+"\nlisten = [\"127.0.0.1:1\"]\ncontrol = \"/tmp/file.sock\"\nworkers = 3\nmax_connections = 5\n")
	n := func(i int) *int { return &i }
	str := func(s string) *string { return &s }
	tests := []struct {
		name string
		o    Overrides
		want func(*Config) string // "" if fine
	}{
		{"none", Overrides{}, func(c *Config) string {
			if c.Root != fileRoot || !slices.Equal(c.Listen, []string{"127.0.0.1:1"}) || c.Control != "/tmp/file.sock" || c.Workers != 3 {
				return "file values lost"
			}
			return ""
		}},
		{"root", Overrides{Root: flagRoot}, func(c *Config) string {
			if c.Root != flagRoot || c.Workers != 3 {
				return "root not replaced"
			}
			return ""
		}},
		{"listen", Overrides{Listen: []string{":0", "[::1]:0"}}, func(c *Config) string {
			if !slices.Equal(c.Listen, []string{":0", "[::1]:0"}) {
				return "listen not replaced"
			}
			return ""
		}},
		{"control", Overrides{Control: "/tmp/flag.sock"}, func(c *Config) string {
			if c.Control != "/tmp/flag.sock" {
				return "control not replaced"
			}
			return ""
		}},
		{"workers", Overrides{Workers: n(7)}, func(c *Config) string {
			if c.Workers != 7 {
				return "workers not replaced"
			}
			return ""
		}},
		{"workers 0 means one per CPU", Overrides{Workers: n(0)}, func(c *Config) string {
			if c.Workers != runtime.NumCPU() {
				return "workers 0 did not become NumCPU"
			}
			return ""
		}},
		{"metrics", Overrides{Metrics: str("[::1]:9100")}, func(c *Config) string {
			if c.MetricsListen != "[::1]:9100" {
				return "metrics_listen not replaced"
			}
			return ""
		}},
		{"every flag", Overrides{Root: flagRoot, Listen: []string{":0"}, Control: "rel.sock", Workers: n(1)}, func(c *Config) string {
			if c.Root != flagRoot || c.Listen[0] != ":0" || c.Control != filepath.Join(mustGetwd(), "rel.sock") || c.Workers != 1 || c.MaxConnections != 5 {
				return "not every flag applied"
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := Source{Path: p, Explicit: true, Overrides: tt.o}
			c, err := src.Load()
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.want(c); msg != "" {
				t.Errorf("%s: %+v", msg, c)
			}
		})
	}

	// The override is copied: changing the caller's slice later does not
	// change the loaded config.
	o := Overrides{Listen: []string{":0"}}
	c, err := Source{Path: p, Explicit: true, Overrides: o}.Load()
	if err != nil {
		t.Fatal(err)
	}
	o.Listen[0] = "changed"
	if c.Listen[0] != ":0" {
		t.Error("Load kept the caller's Listen slice")
	}

	// Overrides are validated like the file.
	_, err = Source{Path: p, Explicit: true, Overrides: Overrides{Workers: n(-2)}}.Load()
	if err == nil || !strings.Contains(err.Error(), "--workers") || !strings.Contains(err.Error(), `key "workers"`) {
		t.Errorf("--workers -2: %v", err)
	}
	_, err = Source{Path: p, Explicit: true, Overrides: Overrides{Metrics: str("nohost")}}.Load()
	if err == nil || !strings.Contains(err.Error(), "--metrics") || !strings.Contains(err.Error(), `key "metrics_listen"`) {
		t.Errorf("--metrics nohost: %v", err)
	}
	_, err = Source{Path: p, Explicit: true, Overrides: Overrides{Listen: []string{"nohost"}}}.Load()
	if err == nil || !strings.Contains(err.Error(), "--listen") || !strings.Contains(err.Error(), `bad address "nohost"`) {
		t.Errorf("--listen nohost: %v", err)
	}
}

func mustGetwd() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return wd
}

func TestSourceLoadMissingFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "absent.toml")

	// The default path is optional.
	c, err := Source{Path: missing, Overrides: Overrides{Root: dir}}.Load()
	if err != nil {
		t.Fatalf("missing default config: %v", err)
	}
	want := Default()
	if c.Root != dir || !slices.Equal(c.Listen, want.Listen) || c.ZeroCopy != want.ZeroCopy ||
		c.SendChunk != want.SendChunk || c.DrainTimeout != want.DrainTimeout || c.Workers != runtime.NumCPU() ||
		c.Control != ctl.DefaultControlPath() {
		t.Errorf("missing default config did not give the defaults: %+v", c)
	}

	// --config must exist.
	_, err = Source{Path: missing, Explicit: true, Overrides: Overrides{Root: dir}}.Load()
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing explicit config: %v", err)
	}

	// A default path that exists but cannot be read is an error too.
	_, err = Source{Path: dir, Overrides: Overrides{Root: dir}}.Load()
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("config path is a directory: %v", err)
	}

	// No path at all: built-in defaults.
	t.Chdir(dir)
	c, err = Source{}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != dir {
		t.Errorf("built-in root %q, want the current directory %q", c.Root, dir)
	}
}

func TestSourceString(t *testing.T) {
	dir := t.TempDir()
	exists := writeConfig(t, "")
	missing := filepath.Join(dir, "absent.toml")
	n := 2
	off := ""
	tests := []struct {
		src  Source
		want string
	}{
		{Source{}, "built-in defaults"},
		{Source{Path: exists}, exists},
		{Source{Path: exists, Explicit: true}, exists},
		{Source{Path: missing}, "built-in defaults (no " + missing + ")"},
		{Source{Path: missing, Explicit: true}, missing},
		{Source{Path: exists, Overrides: Overrides{Root: "/x"}}, exists + " + --root"},
		{Source{Overrides: Overrides{Root: "/x", Listen: []string{":0"}, Control: "c", Workers: &n}}, "built-in defaults + --root --listen --control --workers"},
		{Source{Overrides: Overrides{Metrics: &off}}, "built-in defaults + --metrics"},
	}
	for _, tt := range tests {
		if got := tt.src.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.src, got, tt.want)
		}
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.Mkdir("sub", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("file", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		root    string
		want    string // resolved root, or "" for an error
		errText string
	}{
		{".", dir, ""},
		{"sub", filepath.Join(dir, "sub"), ""},
		{"./sub/../sub/", filepath.Join(dir, "sub"), ""},
		{dir, dir, ""},
		{"file", "", "is not a directory"},
		{"missing", "", "no such file or directory"},
	}
	for _, tt := range tests {
		c := Default()
		c.Root = tt.root
		c.Control = "ctl.sock"
		err := c.Resolve()
		if tt.want == "" {
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != "root" || !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("root %q: got %v, want a root error saying %q", tt.root, err, tt.errText)
			}
			continue
		}
		if err != nil {
			t.Errorf("root %q: %v", tt.root, err)
			continue
		}
		if c.Root != tt.want {
			t.Errorf("root %q resolved to %q, want %q", tt.root, c.Root, tt.want)
		}
		if c.Control != filepath.Join(dir, "ctl.sock") {
			t.Errorf("control resolved to %q", c.Control)
		}
		if c.Workers != runtime.NumCPU() {
			t.Errorf("workers 0 resolved to %d, want %d", c.Workers, runtime.NumCPU())
		}
	}

	// Resolve validates first.
	c := Default()
	c.ZeroCopy = "nope"
	if err := c.Resolve(); err == nil || !strings.Contains(err.Error(), `key "zero_copy"`) {
		t.Errorf("Resolve of an invalid config: %v", err)
	}
	// Groups and users must exist; numeric gids are taken as they are.
	for _, tt := range []struct {
		user, group, controlGroup, key string
	}{
		{"no-such-user-zfs", "", "", "user"},
		{"", "no-such-group-zfs", "", "group"},
		{"", "", "no-such-group-zfs", "control_group"},
		{"", "", "", ""},
		{"0", "0", "4242", ""},
	} {
		c := Default()
		c.Root, c.User, c.Group, c.ControlGroup = dir, tt.user, tt.group, tt.controlGroup
		err := c.Resolve()
		var ke *KeyError
		if tt.key == "" && err != nil {
			t.Errorf("%+v: %v", tt, err)
		}
		if tt.key != "" && (!errors.As(err, &ke) || ke.Key != tt.key) {
			t.Errorf("%+v: got %v, want an error about %q", tt, err, tt.key)
		}
	}
}

func TestLookups(t *testing.T) {
	u, err := LookupUser("root")
	if err != nil || u.Uid != "0" {
		t.Errorf("LookupUser(root) = %v, %v", u, err)
	}
	u, err = LookupUser("0")
	if err != nil || u.Username != "root" {
		t.Errorf("LookupUser(0) = %v, %v", u, err)
	}
	if _, err := LookupUser("no-such-user-zfs"); err == nil {
		t.Error("LookupUser of an unknown name succeeded")
	}
	for _, tt := range []struct {
		in   string
		want int
		ok   bool
	}{{"root", 0, true}, {"0", 0, true}, {"4242", 4242, true}, {"no-such-group-zfs", 0, false}} {
		g, err := LookupGroup(tt.in)
		if tt.ok != (err == nil) || g != tt.want {
			t.Errorf("LookupGroup(%q) = %d, %v", tt.in, g, err)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:7070", true},
		{":7070", true},
		{"[::1]:0", true},
		{"[::]:7070", true},
		{"localhost:7070", true},
		{"0.0.0.0:65535", true},
		{"127.0.0.1", false},
		{"::1:7070", false},
		{"example.com:7070", false},
		{"127.0.0.1:65536", false},
		{"127.0.0.1:-1", false},
		{"127.0.0.1:http", false},
		{"", false},
	} {
		err := CheckAddr(tt.addr)
		if tt.ok != (err == nil) {
			t.Errorf("CheckAddr(%q) = %v", tt.addr, err)
		}
		if err != nil && !strings.Contains(err.Error(), strconv.Quote(tt.addr)) {
			t.Errorf("CheckAddr(%q) error does not quote the address: %v", tt.addr, err)
		}
	}
}

// exampleConfig is the commented example shipped with the package.
const exampleConfig = "../etc/zfs-serve.toml"

func TestExampleConfigLoads(t *testing.T) {
	t.Setenv("CACHE_DIRECTORY", "") // digest_cache "" follows it
	root := t.TempDir()
	c, err := Source{Path: exampleConfig, Explicit: true, Overrides: Overrides{Root: root}}.Load()
	if err != nil {
		t.Fatalf("the example config does not load: %v", err)
	}
	// Its values are the defaults (it documents them), bar root and control.
	want := Default()
	want.Root, want.Control, want.Workers = root, ctl.SystemControlPath, runtime.NumCPU()
	if !reflect.DeepEqual(c, want) {
		t.Errorf("example config values differ from the defaults it documents:\n got %+v\nwant %+v", c, want)
	}
}

func TestExampleConfigHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if _, err := toml.Decode(string(data), &m); err != nil {
		t.Fatal(err)
	}
	lines, err := decode(exampleConfig, data, Default())
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			t.Errorf("field %s has no toml key", typ.Field(i).Name)
			continue
		}
		tags = append(tags, tag)
		if _, ok := m[tag]; !ok {
			t.Errorf("%s does not set key %q (field %s): document every key there", exampleConfig, tag, typ.Field(i).Name)
		}
		// Each key is documented by a comment just above it.
		if l := lines[tag]; l < 2 || !commentedAbove(data, l) {
			t.Errorf("%s: key %q (line %d) has no comment above it", exampleConfig, tag, l)
		}
	}
	for k := range m {
		if !slices.Contains(tags, k) {
			t.Errorf("%s sets %q, which is not a Config key", exampleConfig, k)
		}
	}
}

// commentedAbove reports whether the lines just above line (1-based),
// skipping other assignments of a group like user/group, include a comment.
func commentedAbove(data []byte, line int) bool {
	lines := strings.Split(string(data), "\n")
	for i := line - 2; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		switch {
		case strings.HasPrefix(l, "#"):
			return true
		case l == "":
			return false
		}
	}
	return false
}

func TestRelativePathsInFileAreRelativeToIt(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "files"), 0o755)
	p := filepath.Join(dir, "z.toml")
	os.WriteFile(p, []byte("root = \"files\"\ncontrol = \"run/c.sock\"\n"), 0o644)
	t.Chdir(t.TempDir()) // somewhere else entirely
	c, err := Source{Path: p, Explicit: true}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != filepath.Join(dir, "files") || c.Control != filepath.Join(dir, "run/c.sock") {
		t.Fatalf("root %s, control %s: not relative to the config file", c.Root, c.Control)
	}
	// A --root flag stays relative to the working directory.
	wd, _ := os.Getwd()
	os.Mkdir(filepath.Join(wd, "here"), 0o755)
	c, err = Source{Path: p, Explicit: true, Overrides: Overrides{Root: "here"}}.Load()
	if err != nil || c.Root != filepath.Join(wd, "here") {
		t.Fatalf("--root here: %v %v", c, err)
	}
}

// TestFlagsFixInvalidFileValues: values are validated after flags override
// them, so a flag can stand in for a value the file got wrong, and the
// error still names the file's line when no flag does.
func TestFlagsFixInvalidFileValues(t *testing.T) {
	root := t.TempDir()
	p := writeConfig(t, "root = "+strconv.Quote(root)+"\nworkers = -1\nlisten = []\n")
	two := 2
	c, err := Source{Path: p, Explicit: true, Overrides: Overrides{Workers: &two, Listen: []string{"127.0.0.1:0"}}}.Load()
	if err != nil {
		t.Fatalf("flags did not replace the invalid values: %v", err)
	}
	if c.Workers != 2 || !slices.Equal(c.Listen, []string{"127.0.0.1:0"}) {
		t.Fatalf("workers %d listen %v", c.Workers, c.Listen)
	}
	_, err = Source{Path: p, Explicit: true, Overrides: Overrides{Workers: &two}}.Load()
	if err == nil || !strings.HasPrefix(err.Error(), p+":3: key \"listen\"") {
		t.Fatalf("without --listen: %v", err)
	}
}

// TestControlPathLength: a control socket path longer than a unix socket
// can have is a configuration error naming its source, not a bare
// "bind: invalid argument" at start.
func TestControlPathLength(t *testing.T) {
	root := t.TempDir()
	long := "/" + strings.Repeat("d", ctl.MaxSocketPath-len("/x.sock")) + "/x.sock" // 108 bytes
	fits := long[:1] + long[2:]                                                     // 107 bytes
	if len(long) != ctl.MaxSocketPath+1 || len(fits) != ctl.MaxSocketPath {
		t.Fatalf("bad test paths: %d %d", len(long), len(fits))
	}
	want := `key "control": socket path ` + long + " is 108 bytes long; a unix socket path can have at most 107"

	p := writeConfig(t, "root = "+strconv.Quote(root)+"\n\ncontrol = "+strconv.Quote(long)+"\n")
	_, err := Source{Path: p, Explicit: true}.Load()
	if err == nil || err.Error() != p+":3: "+want {
		t.Errorf("from the file: got %v, want %q", err, p+":3: "+want)
	}
	_, err = Source{Path: p, Explicit: true, Overrides: Overrides{Control: fits}}.Load()
	if err != nil {
		t.Errorf("a --control of %d bytes replaces the file's: %v", len(fits), err)
	}
	_, err = Source{Overrides: Overrides{Root: root, Control: long}}.Load()
	if err == nil || err.Error() != "--control: "+want {
		t.Errorf("from --control: got %v, want %q", err, "--control: "+want)
	}
	// A relative path counts once made absolute.
	rel := strings.Repeat("r", ctl.MaxSocketPath)
	_, err = Source{Overrides: Overrides{Root: root, Control: rel}}.Load()
	if err == nil || !strings.HasPrefix(err.Error(), "--control: key \"control\": socket path /") {
		t.Errorf("relative --control: got %v", err)
	}
}

func TestHTTPKeys(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		toml    string
		index   []string
		wantErr string
	}{
		{"index = []\n", []string{}, ""},
		{"index = [\"a.html\", \"index.htm\"]\n", []string{"a.html", "index.htm"}, ""},
		{"index = [\"a/b.html\"]\n", nil, `key "index"`},
		{"index = [\"..\"]\n", nil, `key "index"`},
		{"max_ranges = -1\n", nil, `key "max_ranges"`},
		{"http = false\nlisting = false\naccess_log = true\nmax_ranges = 0\n", []string{"index.html"}, ""},
	} {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte("root = "+strconv.Quote(dir)+"\n"+tt.toml), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Source{Path: p, Explicit: true}.Load()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err %v, want %s", tt.toml, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		if !slices.Equal(c.Index, tt.index) {
			t.Errorf("%q: index %q, want %q", tt.toml, c.Index, tt.index)
		}
	}
}

func TestProxyListenAndTrusted(t *testing.T) {
	c, _, err := load(t, "listen = [\"proxy:127.0.0.1:7071\", \"[::1]:7070\", \"proxy:[::1]:0\", \"proxy:127.0.0.1:0\"]\nproxy_trusted = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		addr  string
		proxy bool
	}{{"127.0.0.1:7071", true}, {"[::1]:7070", false}, {"[::1]:0", true}, {"127.0.0.1:0", true}} {
		if addr, proxy := SplitListen(c.Listen[i]); addr != want.addr || proxy != want.proxy {
			t.Errorf("listen[%d] = %q: split %q %v, want %q %v", i, c.Listen[i], addr, proxy, want.addr, want.proxy)
		}
	}
	nets, err := ParseTrusted(c.ProxyTrusted)
	if err != nil || len(nets) != 3 || nets[1].String() != "192.0.2.7/32" {
		t.Errorf("proxy_trusted parsed as %v, %v", nets, err)
	}
}

// TestDigestKeys: digest_cache is made absolute (relative to the file),
// "" follows systemd's $CACHE_DIRECTORY (memory only without it), and
// "memory" keeps digests in memory even under systemd.
func TestDigestKeys(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		toml, cacheDirectory string
		digests              bool
		cache                string
	}{
		{"", "", true, ""},
		{"", "/var/cache/zfs-serve", true, "/var/cache/zfs-serve/sha256"},
		{"", "/var/cache/zfs-serve:/var/cache/other", true, "/var/cache/zfs-serve/sha256"},
		{"digest_cache = \"memory\"\n", "/var/cache/zfs-serve", true, "memory"},
		{"digest_cache = \"/srv/cache\"\n", "/var/cache/zfs-serve", true, "/srv/cache"},
		{"digest_cache = \"cache\"\n", "", true, filepath.Join(dir, "cache")},
		{"digests = false\n", "", false, ""},
	} {
		t.Setenv("CACHE_DIRECTORY", tt.cacheDirectory)
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte("root = "+strconv.Quote(dir)+"\n"+tt.toml), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Source{Path: p, Explicit: true}.Load()
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		if c.Digests != tt.digests || c.DigestCache != tt.cache {
			t.Errorf("%q with CACHE_DIRECTORY=%q: digests %v, digest_cache %q; want %v, %q",
				tt.toml, tt.cacheDirectory, c.Digests, c.DigestCache, tt.digests, tt.cache)
		}
		// Resolving again (a worker's copy, a reload) changes nothing.
		again := *c
		if err := again.Resolve(); err != nil || again.DigestCache != c.DigestCache {
			t.Errorf("%q: resolved again: %q, %v", tt.toml, again.DigestCache, err)
		}
	}
}

// TestAccessLogPath: access_log_path is made absolute, relative to the
// file; "" stays "" (the daemon's log).
func TestAccessLogPath(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ toml, want string }{
		{"", ""},
		{"access_log_path = \"/var/log/zfs-serve/access.log\"\n", "/var/log/zfs-serve/access.log"},
		{"access_log_path = \"logs/access.log\"\n", filepath.Join(dir, "logs/access.log")},
	} {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte("root = "+strconv.Quote(dir)+"\naccess_log = true\n"+tt.toml), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Source{Path: p, Explicit: true}.Load()
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		if c.AccessLogPath != tt.want {
			t.Errorf("%q: access_log_path %q, want %q", tt.toml, c.AccessLogPath, tt.want)
		}
		again := *c
		if err := again.Resolve(); err != nil || again.AccessLogPath != c.AccessLogPath {
			t.Errorf("%q: resolved again: %q, %v", tt.toml, again.AccessLogPath, err)
		}
	}
}

// TestAccessLogPathKind: an access_log_path that names a symbolic link,
// a directory or a FIFO is refused, naming the key, as the supervisor's
// open would refuse it at start; a regular file or a path not there yet
// passes, and so does anything while access_log is off.
func TestAccessLogPathKind(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file.log")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.log")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		on   bool
		want string // "" or part of the error
	}{
		{file, true, ""},
		{filepath.Join(dir, "new.log"), true, ""},
		{filepath.Join(dir, "no", "such", "dir.log"), true, ""},
		{link, true, "is a symbolic link"},
		{dir, true, "is a directory"},
		{fifo, true, "is a FIFO"},
		{"/dev/null", true, "is a device"},
		{link, false, ""},
	} {
		p := filepath.Join(dir, "c.toml")
		conf := fmt.Sprintf("root = %q\naccess_log = %v\naccess_log_path = %q\n", dir, tt.on, tt.path)
		if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Source{Path: p, Explicit: true}.Load()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s (access_log %v): %v", tt.path, tt.on, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `key "access_log_path"`)):
			t.Errorf("%s: error %v, want one naming access_log_path with %q", tt.path, err, tt.want)
		}
	}
}

// TestDispatchAcceptPerClient: the accept dispatch mode cannot count
// connections per client, so the combination is refused, naming both keys.
func TestDispatchAcceptPerClient(t *testing.T) {
	c := Default()
	c.Dispatch, c.MaxConnectionsPerClient = DispatchAccept, 4
	err := c.validate()
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "dispatch" || !strings.Contains(err.Error(), "max_connections_per_client") {
		t.Fatalf("validate = %v, want a dispatch error naming max_connections_per_client", err)
	}
	c.MaxConnectionsPerClient = 0
	if err := c.validate(); err != nil {
		t.Fatalf("dispatch = accept without a per-client limit: %v", err)
	}
}
