package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/zfs-serve/zfs-serve/ctl"
)

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
