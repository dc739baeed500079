package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
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
