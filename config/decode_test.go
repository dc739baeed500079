package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDecodeErrors: the errors a person sees for a file the decoder
// refuses, whole, with the line each names. FILE stands for the file's
// path. The lines come from the TOML library's positions, so an upgrade
// that moves or drops them fails here, not in front of a user.
func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		// Syntax.
		{"no value", "# c\n\nworkers = \n", `FILE:3: key "workers": expected value but found '\n' instead`},
		{"unterminated string", "root = \"/x\n", `FILE:1: key "root": strings cannot contain newlines`},
		{"defined twice", "workers = 2\n\nworkers = 3\n", `FILE:3: key "workers": Key 'workers' has already been defined.`},
		{"bad header", "workers = 2\n[tls x]\n", `FILE:2: expected '.' or ']' to end table name, but got 'x' instead`},
		{"after a multi-line array", "listen = [\n  \"127.0.0.1:1\",\n]\nworkers = = 2\n", `FILE:4: key "workers": expected value but found '=' instead`},

		// Types.
		{"string for integer", "\nworkers = \"x\"\n", `FILE:2: key "workers": incompatible types: TOML value has type string; destination has type integer`},
		{"float for integer", "max_connections = 1.5\n", `FILE:1: key "max_connections": incompatible types: TOML value has type float; destination has type integer`},
		{"string for array", "http = true\nlisten = \"127.0.0.1:1\"\n", `FILE:2: key "listen": incompatible types: TOML value has type string; destination has type array of strings`},
		{"integer in array", "listen = [\n  \"127.0.0.1:1\",\n  2,\n]\n", `FILE:1: key "listen": incompatible types: TOML value has type array; destination has type array of strings`},
		{"integer for string", "\n\nzero_copy = 1\n", `FILE:3: key "zero_copy": incompatible types: TOML value has type integer; destination has type string`},
		{"integer for boolean", "listing = 1\n", `FILE:1: key "listing": incompatible types: TOML value has type integer; destination has type boolean`},
		{"table for integer", "[workers]\nn = 2\n", `FILE:1: key "workers": incompatible types: TOML value has type table; destination has type integer`},
		{"inline table", "workers = { n = 2 }\n", `FILE:1: key "workers": incompatible types: TOML value has type table; destination has type integer`},
		{"implied table", "# c\nworkers.n = 2\n", `FILE:2: key "workers": incompatible types: TOML value has type table; destination has type integer`},
		{"table for duration", "\ndrain_timeout = { s = 1 }\n", `FILE:2: key "drain_timeout": incompatible types: TOML value has type table; destination has type duration`},
		{"not a duration", "\n\ndrain_timeout = 5\n", `FILE:3: key "drain_timeout": not a duration like "30s" or "2m": "5"`},
		{"not a size", "send_chunk = \"2MB\"\n", `FILE:1: key "send_chunk": not a size like 2097152 or "2MiB": "2MB"`},
		{"negative size", "\nsend_chunk = -65536\n", `FILE:2: key "send_chunk": negative size -65536`},

		// Unknown keys, each on its own line of the error.
		{"unknown", "workers = 2\nworkerz = 3\n", `FILE:2: unknown key "workerz"`},
		{"unknown after a multi-line array", "listen = [\n  \"127.0.0.1:1\",\n]\n\nlisten_on = 1\n", `FILE:5: unknown key "listen_on"`},
		{"unknown in a table", "workers = 1\n\n[tls]\ncert = \"c\"\n", "FILE:3: unknown key \"tls\"\nFILE:4: unknown key \"tls.cert\""},
		{"unknown tables", "[[mount]]\npath = \"/a\"\n\n[[mount]]\npath = \"/b\"\n", "FILE:4: unknown key \"mount\"\nFILE:5: unknown key \"mount.path\""},
		{"unknown in an inline table", "\nfoo = { bar = 1 }\n", "FILE:2: unknown key \"foo\"\nFILE:2: unknown key \"foo.bar\""},
		{"unknown dotted", "\n\nlimits.rate = 5\n", `FILE:3: unknown key "limits.rate"`},
		{"implied table", "[a.b]\nc = 1\n", "FILE:1: unknown key \"a.b\"\nFILE:2: unknown key \"a.b.c\""},
		{"type error first", "workerz = 1\nworkers = \"x\"\n", `FILE:2: key "workers": incompatible types: TOML value has type string; destination has type integer`},

		// One key twice, spelled in different cases: keys match fields
		// regardless of case, so the file sets it twice.
		{"case twice", "root = \"/a\"\n\nRoot = \"/b\"\n", `FILE:3: key "Root" is key "root" again (FILE:1): keys are matched regardless of case`},
		{"case twice upper first", "ROOT = \"/a\"\nworkers = 1\nroot = \"/b\"\n", `FILE:3: key "root" is key "ROOT" again (FILE:1): keys are matched regardless of case`},
		{"case three times", "Workers = 1\nworkers = 2\nWORKERS = 3\n", "FILE:2: key \"workers\" is key \"Workers\" again (FILE:1): keys are matched regardless of case\nFILE:3: key \"WORKERS\" is key \"Workers\" again (FILE:1): keys are matched regardless of case"},
		{"case twice quoted", "\"zero_copy\" = \"copy\"\nZero_Copy = \"auto\"\n", `FILE:2: key "Zero_Copy" is key "zero_copy" again (FILE:1): keys are matched regardless of case`},
		{"case twice dotted", "workers = 1\nWorkers.x = 2\n", `FILE:2: key "Workers" is key "workers" again (FILE:1): keys are matched regardless of case`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "z.toml")
			if err := os.WriteFile(p, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Source{Path: p, Explicit: true}.Load()
			if err == nil {
				t.Fatal("accepted")
			}
			if got := strings.ReplaceAll(err.Error(), p, "FILE"); got != tt.want {
				t.Errorf("error\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestDecodeKeyLines: the lines decode gives validation errors, for keys
// written every way TOML allows.
func TestDecodeKeyLines(t *testing.T) {
	body := "# c\n" +
		"workers = 2\n" + // 2
		"listen = [\n" + // 3
		"  \"127.0.0.1:1\",\n" +
		"]\n" +
		"\"zero_copy\" = \"copy\"\n" + // 6
		"Max_Ranges = 3\n" + // 7: the library matches field names in any case
		"http = false # no\n" // 8
	c := Default()
	lines, err := decode("z.toml", []byte(body), c)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"workers": 2, "listen": 3, "zero_copy": 6, "max_ranges": 7, "http": 8}
	if len(lines) != len(want) {
		t.Errorf("lines = %v, want %v", lines, want)
	}
	for k, n := range want {
		if lines[k] != n {
			t.Errorf("line of %s = %d, want %d", k, lines[k], n)
		}
	}
	if c.Workers != 2 || c.ZeroCopy != ModeCopy || c.MaxRanges != 3 || c.HTTP || len(c.Listen) != 1 {
		t.Errorf("decoded %+v", c)
	}
}

// TestDecodeErrorsReview: lines and types the first cut of the
// position-based decoder got wrong. A multi-line string's position in the
// library is where the string ends, not the line of its key; a table in
// an array of inline tables had no line at all; and a table whose empty
// key ("" = 1) overwrote the library's record of its type was named an
// integer.
func TestDecodeErrorsReview(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"unknown with a multi-line string", "workers = 1\nfoo = \"\"\"\n\n\n\"\"\"\nbar = 1\n", "FILE:2: unknown key \"foo\"\nFILE:6: unknown key \"bar\""},
		{"unknown literal multi-line", "a = '''\nworkers = 1\n'''\n", `FILE:1: unknown key "a"`},
		{"type of a multi-line string", "\n\nworkers = \"\"\"\n3\"\"\"\n", `FILE:3: key "workers": incompatible types: TOML value has type string; destination has type integer`},
		{"validation of a multi-line string", "\nzero_copy = \"\"\"\nsendfile2\"\"\"\n", `FILE:2: key "zero_copy": `},
		{"field's own error in a multi-line string", "\ndrain_timeout = \"\"\"\nzz\"\"\"\n", `FILE:2: key "drain_timeout": not a duration like "30s" or "2m": "zz"`},
		{"unknown in an array of inline tables", "x = [\n  { workers = 1 },\n]\n", "FILE:1: unknown key \"x\"\nFILE:2: unknown key \"x.workers\""},
		{"array of tables with an empty key", "[[workers]]\nsend_chunk = 65536\n\"\" = 1\n", `key "workers": incompatible types: TOML value has type array of tables; destination has type integer`},
		{"dotted then plain", "workers.x = 1\nworkers = 2\n", `key "workers": incompatible types: TOML value has type table; destination has type integer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "z.toml")
			if err := os.WriteFile(p, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Source{Path: p, Explicit: true}.Load()
			if err == nil {
				t.Fatal("accepted")
			}
			got := strings.ReplaceAll(err.Error(), p, "FILE")
			if got != tt.want && !(strings.HasSuffix(tt.want, " ") && strings.HasPrefix(got, tt.want)) && !(!strings.HasPrefix(tt.want, "FILE") && strings.Contains(got, tt.want)) {
				t.Errorf("error\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestDecodeManyKeysLinear: finding the lines of a file's keys costs
// allocations in proportion to the keys, not to their square (the wrong
// file, with thousands of keys, took minutes to refuse: each key's line
// decoded its whole table again). Counted in allocations, which do not
// depend on the machine's speed.
func TestDecodeManyKeysLinear(t *testing.T) {
	allocs := func(n int, gen func(i int) string) float64 {
		var b strings.Builder
		for i := range n {
			b.WriteString(gen(i))
		}
		data := []byte(b.String())
		return testing.AllocsPerRun(1, func() {
			if _, err := decode("z.toml", data, Default()); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	for name, gen := range map[string]func(i int) string{
		"top":              func(i int) string { return fmt.Sprintf("k%d = 1\n", i) },
		"dotted":           func(i int) string { return fmt.Sprintf("x.k%d = 1\n", i) },
		"arrays of tables": func(i int) string { return fmt.Sprintf("[[t]]\nk%d = 1\n", i) },
	} {
		small, big := allocs(250, gen), allocs(1000, gen)
		if big > 8*small { // 4 times the keys: 4 times the allocations if linear, 16 if quadratic
			t.Errorf("%s: %.0f allocations for 250 keys, %.0f for 1000", name, small, big)
		}
	}
}

// TestDecodeOtherCase: a key spelled only in another case sets its field
// as the lower-case key would, relative paths included, and validation
// errors name its line.
func TestDecodeOtherCase(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "z.toml")
	if err := os.WriteFile(p, []byte("ROOT = \"www\"\nWorkers = 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Source{Path: p, Explicit: true}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != filepath.Join(dir, "www") || c.Workers != 3 {
		t.Errorf("root %q workers %d, want %q and 3", c.Root, c.Workers, filepath.Join(dir, "www"))
	}
	if err := os.WriteFile(p, []byte("\nZERO_COPY = \"auto\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Source{Path: p, Explicit: true, Overrides: Overrides{Root: dir}}.Load()
	if want := p + `:2: key "zero_copy": `; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %v, want it to start %s", err, want)
	}
}
