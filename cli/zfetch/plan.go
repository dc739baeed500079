package zfetch

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/fetch/progress"
	"github.com/zfs-serve/zfs-serve/wire"
)

// plan is the batch of files to fetch.
type plan struct {
	jobs  []fetch.Job
	files []progress.File
	dirs  []dirMTime // -r: directories to give their server mtime at the end
}

type dirMTime struct {
	path  string
	mtime int64
}

func (p *plan) add(j fetch.Job, size int64) {
	j.ID = len(p.jobs)
	p.jobs = append(p.jobs, j)
	p.files = append(p.files, progress.File{Name: j.Name, Size: size})
}

// failedBefore returns the first of jobs that failed, or -1.
func failedBefore(jobs []int, results []error) int {
	for _, k := range jobs {
		if results[k] != nil {
			return k
		}
	}
	return -1
}

// tempNames are the files a download of dst writes besides dst itself.
func tempNames(dst string) []string {
	part := dst + ".part"
	state := part + fetch.StateSuffix
	return []string{part, state, state + ".tmp"}
}

// order puts the jobs into waves, batches run one after the other (the
// jobs of a batch at once, -j at a time). A job whose destination is one
// of another job's temporary files ("x.part" in a tree that also has "x")
// runs after that job is over: run together, one would overwrite the
// other's file, and the last rename would put the wrong content in place.
// Its own temporary files are longer names, so the order has no cycles.
// after[i] lists the jobs whose temporary files job i's destination is:
// if one of those fails, its .part stays for a later -c, and job i must
// not replace it.
func (p *plan) order() (waves [][]int, after [][]int) {
	after = make([][]int, len(p.jobs))
	idx := map[string]int{}
	for i, j := range p.jobs {
		if j.Dst != "" {
			idx[filepath.Clean(j.Dst)] = i
		}
	}
	wave := make([]int, len(p.jobs))
	order := make([]int, len(p.jobs))
	for i := range order {
		order[i] = i
	}
	// Shorter destinations first: a job's wave depends only on the waves
	// of jobs with shorter names.
	sort.SliceStable(order, func(a, b int) bool { return len(p.jobs[order[a]].Dst) < len(p.jobs[order[b]].Dst) })
	n := 1
	for _, i := range order {
		if p.jobs[i].Dst == "" {
			continue
		}
		for _, t := range tempNames(filepath.Clean(p.jobs[i].Dst)) {
			k, ok := idx[t]
			if !ok {
				continue
			}
			after[k] = append(after[k], i)
			if wave[k] <= wave[i] {
				wave[k] = wave[i] + 1
				n = max(n, wave[k]+1)
			}
		}
	}
	waves = make([][]int, n)
	for i, w := range wave {
		waves[w] = append(waves[w], i)
	}
	return waves, after
}

// makePlan turns the URLs into jobs: one per URL, or, with -r, one per file
// of each tree (creating its directories).
func makePlan(ctx context.Context, o *options, targets, mirrors []fetch.Target, c *fetch.Client, rend *progress.Renderer, stdout *os.File) (*plan, error) {
	p := &plan{}
	dir := o.dir
	if dir == "" {
		dir = "."
	}
	if o.dir != "" {
		if err := os.MkdirAll(o.dir, 0o755); err != nil {
			return nil, &fetch.LocalError{Op: "create directory", Path: o.dir, Err: err}
		}
	}
	seen := map[string]string{}
	claim := func(dst string, t fetch.Target) error {
		key := filepath.Clean(dst)
		if prev, ok := seen[key]; ok {
			return cli.Usagef("%s and %s would both be written to %s; use -O or -o", prev, t, dst)
		}
		seen[key] = t.String()
		return nil
	}
	for _, t := range targets {
		if o.recursive {
			if err := planTree(ctx, o, t, dir, c, rend, p, claim); err != nil {
				return nil, err
			}
			continue
		}
		j := fetch.Job{Src: t, Resume: o.resume, SHA256: o.sha256, Mirrors: mirrors}
		switch {
		case o.stdoutIsOutput:
			j.Out, j.Name = stdout, "-"
		case o.output != "":
			j.Dst = o.output
		default:
			name := path.Base(t.Path)
			if strings.HasSuffix(t.Path, "/") || name == "/" || name == "." || name == ".." {
				return nil, cli.Usagef("%s names no file; use -o FILE, or -r for a directory", t)
			}
			j.Dst = filepath.Join(dir, name)
		}
		if j.Name == "" {
			j.Name = j.Dst
			if err := claim(j.Dst, t); err != nil {
				return nil, err
			}
		}
		p.add(j, -1)
	}
	return p, nil
}

func planTree(ctx context.Context, o *options, t fetch.Target, dir string, c *fetch.Client, rend *progress.Renderer, p *plan, claim func(string, fetch.Target) error) error {
	root := o.output
	if root == "" {
		switch base := path.Base(t.Path); base {
		case "/":
			root = dir
		case ".", "..":
			// "dir/." would be the tree of dir written into DIR itself.
			return cli.Usagef("%s: its last name is %q, which names no directory to create; use -o DIR", t, base)
		default:
			root = filepath.Join(dir, base)
		}
	}
	var rootMTime int64
	if !t.IsHTTP() {
		// Over HTTP the listing itself tells (a file has none).
		st, err := c.Stat(ctx, t)
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		if st.Kind != wire.KindDir {
			return &fetch.StatusError{Status: wire.StatusNotDirectory, Path: t.Path,
				Message: fmt.Sprintf("not a directory: %s (drop -r to fetch a file)", t.Path)}
		}
		rootMTime = st.MTime
	}
	entries, err := c.Walk(ctx, t, rend.Event)
	if err != nil {
		return fmt.Errorf("listing %s: %w", t, err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return &fetch.LocalError{Op: "create directory", Path: root, Err: err}
	}
	var dirs []dirMTime
	for _, e := range entries {
		local := filepath.Join(root, filepath.FromSlash(e.Rel))
		switch e.Kind {
		case wire.KindDir:
			if err := os.MkdirAll(local, 0o755); err != nil {
				return &fetch.LocalError{Op: "create directory", Path: local, Err: err}
			}
			if e.MTime != 0 {
				dirs = append(dirs, dirMTime{local, e.MTime})
			}
		case wire.KindFile:
			src := t.Join(e.Rel)
			if err := claim(local, src); err != nil {
				return err
			}
			p.add(fetch.Job{Src: src, Dst: local, Name: local, Resume: o.resume}, e.Size)
		case wire.KindSymlink:
			rend.Note(time.Now(), fmt.Sprintf("skipping %s: a symlink to a directory", t.Join(e.Rel)))
		default:
			rend.Note(time.Now(), fmt.Sprintf("skipping %s: not a regular file", t.Join(e.Rel)))
		}
	}
	// Deepest first, so setting a child's mtime does not change its
	// parent's after. The root too, unless it is the -O directory itself.
	for i := len(dirs) - 1; i >= 0; i-- {
		p.dirs = append(p.dirs, dirs[i])
	}
	if root != dir && rootMTime != 0 {
		p.dirs = append(p.dirs, dirMTime{root, rootMTime})
	}
	return nil
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
