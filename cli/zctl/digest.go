package zctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/internal/human"
)

// digest asks the daemon for the SHA-256 of files, hashing those it does
// not know yet, and prints them as sha256sum does.
func (e *env) digest(args []string) error {
	fs := e.subFlags("digest", "digest [--timeout DUR] PATH...")
	timeout := fs.Duration("timeout", ctl.DefaultDigestTimeout, "give up on files not hashed by then (the daemon finishes a hash it has begun, and keeps it)")
	usage := fs.Usage
	if err := cli.ParseFlags(fs, args, nil, func(_ io.Writer) { usage() }); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return cli.Usagef("digest needs the paths of files, as clients request them (relative to the served root)")
	}
	if *timeout <= 0 {
		return cli.Usagef("--timeout wants a positive duration such as 30s or 5m, not %s", timeout)
	}
	paths := fs.Args()
	deadline := time.Now().Add(*timeout)
	failed := 0
	for len(paths) > 0 {
		batch := paths[:nextBatch(paths)]
		paths = paths[len(batch):]
		left := time.Until(deadline)
		if left <= 0 {
			for _, p := range batch {
				fmt.Fprintf(e.stderr, "zctl: %s: not hashed within %v\n", human.Printable(p), *timeout)
			}
			failed += len(batch)
			continue
		}
		r, err := e.do(ctl.Request{Cmd: ctl.CmdDigest, Paths: batch, Timeout: left.String()}, nil)
		if err != nil {
			return fmt.Errorf("digest: %w", err)
		}
		for i, d := range r.Digests {
			if d.Error != "" || d.SHA256 == "" {
				fmt.Fprintf(e.stderr, "zctl: %s\n", human.Printable(d.Error))
				failed++
				continue
			}
			fmt.Fprintln(e.stdout, sumLine(d.SHA256, batch[i]))
		}
		if len(r.Digests) != len(batch) {
			return fmt.Errorf("digest: the daemon answered %d digests for %d paths", len(r.Digests), len(batch))
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d files could not be hashed", failed, fs.NArg())
	}
	return nil
}

// nextBatch is how many of paths (at least one) go in the next request:
// at most ctl.MaxDigestPaths, and few enough that the request line stays
// within ctl.MaxLine.
func nextBatch(paths []string) int {
	const room = ctl.MaxLine - 1024 // for the rest of the request
	size := 0
	for i, p := range paths {
		b, _ := json.Marshal(p)
		size += len(b) + 1
		if i == ctl.MaxDigestPaths || (i > 0 && size > room) {
			return i
		}
	}
	return len(paths)
}

// sumLine is a line of sha256sum's output: "SUM  NAME", or, for a name
// with a backslash or a line break, "\SUM  NAME" with those escaped.
func sumLine(sum, name string) string {
	if !strings.ContainsAny(name, "\\\n\r") {
		return sum + "  " + name
	}
	esc := strings.NewReplacer("\\", "\\\\", "\n", "\\n", "\r", "\\r").Replace(name)
	return "\\" + sum + "  " + esc
}
