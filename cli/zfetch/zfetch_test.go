package zfetch

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/wire"
)

func TestParse(t *testing.T) {
	o, urls, err := parse([]string{"h/a", "-c", "-x", "4", "--recv", "splice", "h/b", "--retry-for", "5m", "--limit-rate", "20M", "--", "-weird"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(urls, " ") != "h/a h/b -weird" || !o.resume || o.conns != 4 || o.recv != "splice" ||
		o.retryFor != 5*time.Minute || o.retries != -1 || o.limit != 20<<20 {
		t.Fatalf("parsed %+v %v", o, urls)
	}
	o, _, err = parse([]string{"h/a"}, io.Discard)
	if err != nil || o.retries != -1 || o.retryFor != fetch.DefaultRetryFor || o.recv != string(fetch.DefaultRecv) || o.jobs != 4 ||
		o.speedLimit != 0 || o.speedTime != 0 || o.maxTime != 0 {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	// The default budget is time, and outlasts a server's default drain
	// (new connections are answered "draining" meanwhile) and a restart.
	if drain := config.Default().DrainTimeout.D(); o.retryFor < drain+20*time.Second {
		t.Errorf("default --retry-for %v: a client would give up during a default drain (%v) and restart", o.retryFor, drain)
	}
	// A speed floor: both given, or one with the other's default (as curl).
	for _, c := range []struct {
		args  []string
		limit int64
		time  time.Duration
	}{
		{[]string{"--speed-limit", "10K", "--speed-time", "5s"}, 10 << 10, 5 * time.Second},
		{[]string{"--speed-limit", "1M"}, 1 << 20, 30 * time.Second},
		{[]string{"--speed-time", "1m"}, 1, time.Minute},
	} {
		o, _, err := parse(append(c.args, "--max-time", "90s", "h/a"), io.Discard)
		if err != nil || o.speedLimit != c.limit || o.speedTime != c.time || o.maxTime != 90*time.Second {
			t.Errorf("%q: %+v %v", c.args, o, err)
		}
	}
	o, urls, err = parse([]string{"http://a/f", "--mirror", "https://b/f", "--mirror", "zfs://c/f", "-k", "--no-verify"}, io.Discard)
	if err != nil || len(urls) != 1 || strings.Join(o.mirrors, " ") != "https://b/f zfs://c/f" || !o.insecure || !o.noVerify {
		t.Fatalf("mirrors: %+v %v %v", o, urls, err)
	}
	o, _, err = parse([]string{"--insecure", "--cacert", "", "https://a/f"}, io.Discard)
	if err != nil || !o.insecure {
		t.Fatalf("--insecure: %+v %v", o, err)
	}
	for _, arg := range []string{"--help", "-h"} {
		var stdout bytes.Buffer
		if _, _, err := parse([]string{"h/a", arg}, &stdout); !errors.Is(err, flag.ErrHelp) || !strings.HasPrefix(stdout.String(), "Usage: zfetch ") {
			t.Fatalf("%s: %v, stdout %q; want flag.ErrHelp and the usage on stdout", arg, err, stdout.String())
		}
	}
	// --retries: 0 is no retry; given with --retry-for, it still counts.
	o, _, err = parse([]string{"--retries", "0", "h/a"}, io.Discard)
	if err != nil || o.retries != 0 {
		t.Fatalf("--retries 0: %+v %v", o, err)
	}
	o, _, err = parse([]string{"--retries", "3", "--retry-for", "1m", "h/a"}, io.Discard)
	if err != nil || o.retries != 3 || o.retryFor != time.Minute {
		t.Fatalf("--retries 3 --retry-for 1m: %+v %v", o, err)
	}
	bad := [][]string{
		{},
		{"-o", "x", "-O", "d", "h/a"},
		{"-o", "x", "h/a", "h/b"},
		{"-x", "0", "h/a"},
		{"-x", "65", "h/a"},
		{"-j", "0", "h/a"},
		{"--retries", "-3", "h/a"},
		{"--retries", "-2", "h/a"},
		{"--retries", "-1", "h/a"},
		{"--retries", "-1", "--retry-for", "1m", "h/a"},
		{"--retry-for", "0", "h/a"},
		{"--retry-for", "-1s", "h/a"},
		{"--limit-rate", "0", "h/a"},
		{"--limit-rate", "-5M", "h/a"},
		{"-j", "-1", "h/a"},
		{"-j", "65", "h/a"},
		{"-x", "-1", "h/a"},
		{"-q", "--json", "h/a"},
		{"-o", "-", "-r", "h/a"},
		{"-o", "-", "-c", "h/a"},
		{"-o", "-", "-x", "2", "h/a"},
		{"--recv", "sendfile", "h/a"},
		{"--sha256", "xyz", "h/a"},
		{"--sha256", strings.Repeat("a", 64), "h/a", "h/b"},
		{"--limit-rate", "fast", "h/a"},
		{"--speed-limit", "0", "h/a"},
		{"--speed-limit", "slow", "h/a"},
		{"--speed-time", "0", "h/a"},
		{"--speed-time", "-1s", "h/a"},
		{"--max-time", "0", "h/a"},
		{"--max-time", "-5m", "h/a"},
		{"--nope", "h/a"},
		{"--mirror", "h/b", "h/a", "h/c"},
		{"--mirror", "h/b", "-r", "h/a"},
		{"--no-verify", "--sha256", strings.Repeat("a", 64), "h/a"},
		{"--cacert", "x.pem", "-k", "https://h/a"},
	}
	for _, args := range bad {
		var stdout bytes.Buffer
		_, _, err := parse(args, &stdout)
		var ue *cli.UsageError
		if !errors.As(err, &ue) || strings.Contains(err.Error(), "\n") || stdout.Len() != 0 {
			t.Errorf("parse(%q) = %v, stdout %q; want a one-line usage error and no output", args, err, stdout.String())
		}
	}
}

func TestExitCode(t *testing.T) {
	cases := []struct {
		err  error
		code int
	}{
		{nil, 0},
		{fmt.Errorf("interrupted: %w", context.Canceled), ExitInterrupted},
		{fmt.Errorf("stopped: %w", &maxTimeError{time.Minute}), ExitMaxTime},
		{cli.Usagef("x"), cli.ExitUsage},
		{&fetch.StatusError{Status: wire.StatusNotFound}, ExitRefused},
		{&fetch.StatusError{Status: wire.StatusForbidden}, ExitRefused},
		{&fetch.StatusError{Status: wire.StatusDraining}, ExitConnection},
		{&fetch.GiveUpError{Attempts: 3, Err: &fetch.StatusError{Status: wire.StatusBusy}}, ExitConnection},
		{&fetch.GiveUpError{Attempts: 3, Err: syscall.ECONNREFUSED}, ExitConnection},
		{fmt.Errorf("GET: %w", &wire.Error{Msg: "bad magic"}), cli.ExitError},
		{&fetch.VerifyError{Msg: "x"}, ExitVerify},
		{&fetch.LocalError{Op: "write", Path: "p", Err: syscall.ENOSPC}, ExitLocalIO},
		{fmt.Errorf("x: %w", &fetch.CertError{Host: "h", Err: errors.New("unknown authority")}), ExitTLS},
		{&fetch.StatusError{Status: wire.StatusBusy, HTTP: 503}, ExitConnection},
		{&fetch.StatusError{Status: wire.StatusNotFound, HTTP: 404}, ExitRefused},
		{&fetch.StatusError{Status: wire.StatusForbidden, HTTP: 403}, ExitRefused},
		{errors.New("something else"), cli.ExitError},
	}
	for _, c := range cases {
		if got := ExitCode(c.err); got != c.code {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.code)
		}
	}
	e := &exitErr{code: 3, err: errors.New("x"), reported: true}
	if !Reported(fmt.Errorf("wrapped: %w", e)) || cli.Code(e) != 3 || Reported(errors.New("x")) {
		t.Error("exitErr does not carry its code or reported flag")
	}
}

func TestResumeHint(t *testing.T) {
	var b bytes.Buffer
	resumeHint(&b, "interrupted", []string{"-o", "my file.bin", "--limit-rate", "1M", "h:1/a b"}, []string{"", "my file.bin.part"})
	want := "zfetch: interrupted; partial download kept in my file.bin.part\n" +
		"zfetch: resume with: zfetch -c -o 'my file.bin' --limit-rate 1M 'h:1/a b'\n"
	if b.String() != want {
		t.Fatalf("hint:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	resumeHint(&b, "stopped by --max-time 1m0s", []string{"-c", "h/a"}, []string{"a.part", "b.part"})
	if !strings.Contains(b.String(), "zfetch: stopped by --max-time 1m0s; partial download kept in a.part and 1 more") || !strings.Contains(b.String(), "resume with: zfetch -c h/a\n") {
		t.Fatalf("hint with -c: %s", b.String())
	}
	b.Reset()
	resumeHint(&b, "interrupted", []string{"h/a"}, []string{""})
	if b.Len() != 0 {
		t.Fatalf("hint without a .part: %q", b.String())
	}
	if got := shellQuote("it's"); got != `'it'\''s'` {
		t.Fatalf("shellQuote: %s", got)
	}
}

func TestExitCodeUnresolvedHost(t *testing.T) {
	err := fmt.Errorf("x: %w", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "nowhere.invalid", IsNotFound: true}})
	if got := ExitCode(err); got != ExitConnection {
		t.Fatalf("ExitCode(%v) = %d, want %d", err, got, ExitConnection)
	}
}

// TestBadNames: a URL whose path has a ".." (percent-encoded or not), or
// whose last name, used for the local one, is "." or "..", is a usage
// error found before anything is asked of the server or written (the
// closed port would otherwise make it a connection error).
func TestBadNames(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for _, args := range [][]string{
		{"zfs://127.0.0.1:1/a/%2e%2e"},
		{"zfs://127.0.0.1:1/a/%2E%2E"},
		{"127.0.0.1:1/a/.."},
		{"127.0.0.1:1/a/../b"},
		{"-o", "OUT/x", "127.0.0.1:1/%2e%2e/etc/passwd"},
		{"-r", "127.0.0.1:1/a/%2e%2e"},
		{"-r", "127.0.0.1:1/a/."},
		{"-r", "127.0.0.1:1/."},
		{"127.0.0.1:1/a/."},
		{"http://127.0.0.1:1/a/%2e%2e"},
		{"http://127.0.0.1:1/a/../b"},
		{"-r", "https://127.0.0.1:1/a/."},
		{"http://127.0.0.1:1/a", "--mirror", "http://127.0.0.1:1/%2e%2e/x"},
		{"http://127.0.0.1:1/"},
		{"http://u:p@127.0.0.1:1/a"},
	} {
		dir := t.TempDir()
		out := filepath.Join(dir, "out")
		full := []string{"-q", "--retries", "0"}
		if args[0] != "-o" {
			full = append(full, "-O", out)
		}
		for _, a := range args {
			full = append(full, strings.Replace(a, "OUT", out, 1))
		}
		err := Run(context.Background(), full, null, null)
		if code := ExitCode(err); code != cli.ExitUsage {
			t.Errorf("%q: exit %d (%v), want %d", args, code, err, cli.ExitUsage)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 0 {
			t.Errorf("%q: wrote %v", args, entries)
		}
	}
}
