package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
)

type codeErr struct{}

func (codeErr) Error() string { return "with a code" }
func (codeErr) ExitCode() int { return 7 }

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		err  error
		out  string
		code int
	}{
		{nil, "", ExitOK},
		{flag.ErrHelp, "", ExitOK},
		{errors.New("boom"), "prog: boom\n", ExitError},
		{Usagef("bad -x %d", 3), "prog: bad -x 3\n", ExitUsage},
		{fmt.Errorf("wrapped: %w", codeErr{}), "prog: wrapped: with a code\n", 7},
		// A server's message: no escape reaches the terminal, and every
		// line says whose it is.
		{fmt.Errorf("listing zfs://h/d: %w", errors.New("\x1b[2J\x1b[31mYOUR DISK IS FULL\x1b[0m\nprog: fake second line\r")),
			"prog: listing zfs://h/d: ?[2J?[31mYOUR DISK IS FULL?[0m\nprog: prog: fake second line?\n", ExitError},
		{errors.New("f.toml:3: unknown key \"a\"\nf.toml:4: unknown key \"b\""), "prog: f.toml:3: unknown key \"a\"\nprog: f.toml:4: unknown key \"b\"\n", ExitError},
		{errors.New("bad\xffutf8 \u202eevil\u0085 ü ✓"), "prog: bad?utf8 ?evil? ü ✓\n", ExitError},
	} {
		var b bytes.Buffer
		if code := Report(&b, "prog", tc.err); code != tc.code || b.String() != tc.out {
			t.Errorf("Report(%q) printed %q, returned %d; want %q, %d", tc.err, b.String(), code, tc.out, tc.code)
		}
	}
}

func TestParseFlags(t *testing.T) {
	newFS := func() (*flag.FlagSet, *int) {
		fs := flag.NewFlagSet("prog", flag.ContinueOnError)
		return fs, fs.Int("n", 7, "")
	}
	usage := func(w io.Writer) { fmt.Fprint(w, "Usage: prog\n") }
	for _, help := range []string{"-h", "--help", "-help"} {
		fs, _ := newFS()
		var stdout bytes.Buffer
		err := ParseFlags(fs, []string{help}, &stdout, usage)
		if !errors.Is(err, flag.ErrHelp) || stdout.String() != "Usage: prog\n" || Code(err) != ExitOK {
			t.Errorf("%s: err %v (exit %d), stdout %q; want flag.ErrHelp, exit 0 and the usage", help, err, Code(err), stdout.String())
		}
	}
	// A bad flag: nothing printed by the flag package (its output and
	// Usage are silenced), one line printed by Report, exit 2.
	for _, args := range [][]string{{"--bogus"}, {"-n", "many"}, {"-n"}} {
		fs, _ := newFS()
		var stdout bytes.Buffer
		err := ParseFlags(fs, args, &stdout, usage)
		var ue *UsageError
		if !errors.As(err, &ue) || stdout.Len() != 0 {
			t.Errorf("%q: err %v, stdout %q; want a UsageError and no output", args, err, stdout.String())
			continue
		}
		var stderr bytes.Buffer
		if code := Report(&stderr, "prog", err); code != ExitUsage || strings.Count(stderr.String(), "\n") != 1 ||
			!strings.HasSuffix(stderr.String(), "(see --help)\n") {
			t.Errorf("%q: Report printed %q, exit %d; want one line and exit 2", args, stderr.String(), code)
		}
	}
	fs, n := newFS()
	if err := ParseFlags(fs, []string{"-n", "-1", "rest"}, io.Discard, usage); err != nil || *n != -1 || fs.Arg(0) != "rest" {
		t.Fatalf("good flags: %v, n %d, args %q", err, *n, fs.Args())
	}
	if !Given(fs, "n") {
		t.Error("Given(n) = false after -n -1")
	}
	fs, _ = newFS()
	ParseFlags(fs, nil, io.Discard, usage)
	if Given(fs, "n") {
		t.Error("Given(n) = true without -n")
	}
}
