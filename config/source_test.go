package config

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/zfs-serve/zfs-serve/ctl"
)

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
