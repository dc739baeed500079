package zfetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/fetch/progress"
)

// makePlan turns the URLs into a fetch.Plan: one job per URL, or, with -r,
// one per file of each tree (creating its directories). Where each goes is
// zfetch's choice (-o, -O, the URL's last name); the rest is fetch's.
func makePlan(ctx context.Context, o *options, targets, mirrors []fetch.Target, c *fetch.Client, rend *progress.Renderer, stdout *os.File) (*fetch.Plan, error) {
	p := &fetch.Plan{}
	dir := o.dir
	if dir == "" {
		dir = "."
	}
	if o.dir != "" {
		if err := os.MkdirAll(o.dir, 0o755); err != nil {
			return nil, &fetch.LocalError{Op: "create directory", Path: o.dir, Err: err}
		}
	}
	for _, t := range targets {
		if o.recursive {
			root, err := treeRoot(o, t, dir)
			if err != nil {
				return nil, err
			}
			skipped := len(p.Skipped)
			// The root's mtime is the server's, unless it is the -O
			// directory itself.
			err = p.AddTree(ctx, c, fetch.Tree{Src: t, Root: root, Resume: o.resume, KeepRootMTime: root == dir})
			for _, s := range p.Skipped[skipped:] {
				rend.Note(time.Now(), fmt.Sprintf("skipping %s: %s", s.Src, s.Why))
			}
			if err != nil {
				return nil, conflictUsage(err)
			}
			continue
		}
		j := fetch.Job{Src: t, Resume: o.resume, SHA256: o.sha256, Mirrors: mirrors}
		switch {
		case o.stdoutIsOutput:
			j.Out, j.Name = stdout, "-"
		case o.outputStream:
			o.stream = &lazyStream{name: o.output}
			j.OpenOut, j.Name = o.stream.open, o.output
		case o.outputFile != "":
			// -o is a symlink: the file it leads to is replaced, the
			// link stays.
			j.Dst, j.Name = o.outputFile, o.output
		case o.output != "":
			j.Dst = o.output
		default:
			name := path.Base(t.Path)
			if strings.HasSuffix(t.Path, "/") || name == "/" || name == "." || name == ".." {
				return nil, cli.Usagef("%s names no file; use -o FILE, or -r for a directory", t)
			}
			j.Dst = filepath.Join(dir, name)
		}
		if _, err := p.Add(j, -1); err != nil {
			return nil, conflictUsage(err)
		}
	}
	return p, nil
}

// conflictUsage makes two URLs written to one file a usage error, with the
// options that tell them apart.
func conflictUsage(err error) error {
	var ce *fetch.ConflictError
	if errors.As(err, &ce) {
		return cli.Usagef("%v; use -O or -o", ce)
	}
	return err
}

// treeRoot is where -r writes the tree t: -o DIR, else its last name in
// the -O directory (the directory itself for a server's root).
func treeRoot(o *options, t fetch.Target, dir string) (string, error) {
	if o.output != "" {
		return o.output, nil
	}
	switch base := path.Base(t.Path); base {
	case "/":
		return dir, nil
	case ".", "..":
		// "dir/." would be the tree of dir written into DIR itself.
		return "", cli.Usagef("%s: its last name is %q, which names no directory to create; use -o DIR", t, base)
	default:
		return filepath.Join(dir, base), nil
	}
}

// parseTarget parses a URL of the command line.
func parseTarget(u string) (fetch.Target, error) {
	t, err := fetch.ParseURL(u)
	if err != nil {
		return t, &cli.UsageError{Err: err}
	}
	if slices.Contains(strings.Split(t.Path, "/"), "..") {
		// The server refuses it too; say so before anything is written.
		return t, cli.Usagef("%s: a path with \"..\" in it names nothing on the server", t)
	}
	return t, nil
}
