package zfsserve

import (
	"context"
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zfs-serve/zfs-serve/cli"
)

func run(args ...string) (string, string, error) {
	var out, errOut strings.Builder
	err := Run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		out, errOut, err := run(arg)
		if !errors.Is(err, flag.ErrHelp) || cli.Code(err) != 0 || !strings.HasPrefix(out, "Usage: zfs-serve ") || errOut != "" {
			t.Errorf("%s: %v (exit %d), stdout %q, stderr %q; want the usage on stdout, exit 0", arg, err, cli.Code(err), out, errOut)
		}
	}
}

func TestCommandLineErrors(t *testing.T) {
	root := t.TempDir()
	long := "/" + strings.Repeat("d", 100) + "/control.sock"
	check := []string{"--check", "--config", "/dev/null", "--root", root, "--control", filepath.Join(root, "c.sock")}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "flag provided but not defined: -bogus (see --help)"},
		{[]string{"--workers", "many"}, `invalid value "many" for flag -workers`},
		{append(check, "--workers", "-1"), `--workers: key "workers": must be between 0 (one per CPU) and 1024, not -1`},
		{append(check, "--workers", "-5"), `--workers: key "workers": must be between 0 (one per CPU) and 1024, not -5`},
		{append(check, "--workers", "1025"), `--workers: key "workers": must be between 0 (one per CPU) and 1024, not 1025`},
		{append(check, "--control", long), `--control: key "control": socket path ` + long + " is 114 bytes long; a unix socket path can have at most 107"},
		{append(check, "--root", ""), "--root wants a path, not an empty string"},
		{[]string{"--check", "--config", ""}, "--config wants a path, not an empty string"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{append(check, "--metrics", "9100"), `--metrics: key "metrics_listen": bad address "9100"`},
	}
	for _, tt := range tests {
		out, errOut, err := run(tt.args...)
		if cli.Code(err) != cli.ExitUsage || err == nil || err.Error() != tt.want && !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("zfs-serve %q: %v (exit %d); want exit 2 and %q", tt.args, err, cli.Code(err), tt.want)
		}
		// The message is printed once, by cli.Report, not by the flag package too.
		if out != "" || errOut != "" {
			t.Errorf("zfs-serve %q printed stdout %q, stderr %q; want nothing before cli.Report", tt.args, out, errOut)
		}
	}
	// --workers 0 means one per CPU; a value within range is taken.
	for _, n := range []string{"0", "3"} {
		if out, _, err := run(append(check, "--workers", n)...); err != nil || !strings.Contains(out, "configuration OK") {
			t.Errorf("--workers %s: %v %q", n, err, out)
		}
	}
	// --metrics ADDR turns metrics on; --metrics "" turns them off.
	for _, tt := range []struct{ addr, want string }{{"127.0.0.1:9100", ", metrics 127.0.0.1:9100\n"}, {"", "control " + filepath.Join(root, "c.sock") + "\n"}} {
		if out, _, err := run(append(check, "--metrics", tt.addr)...); err != nil || !strings.HasSuffix(out, tt.want) {
			t.Errorf("--metrics %q: %v %q, want it to end with %q", tt.addr, err, out, tt.want)
		}
	}
}
