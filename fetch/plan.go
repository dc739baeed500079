package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/zfs-serve/zfs-serve/wire"
)

// A download to dst writes dst.part (or Job.Part), its resume state
// dst.part.state (StateSuffix), and the state's next version
// dst.part.state.tmp, which replaces it by a rename. These are the only
// names it writes besides dst.

func partName(dst string) string       { return dst + ".part" }
func stateName(part string) string     { return part + StateSuffix }
func stateTmpName(state string) string { return state + ".tmp" }

// TempNames returns the files a download to dst writes besides dst itself
// (with Job.Part unset): its .part, the .part's resume state and the
// state's temporary file.
func TempNames(dst string) []string { return tempNames(partName(dst)) }

func tempNames(part string) []string {
	state := stateName(part)
	return []string{part, state, stateTmpName(state)}
}

// PartName is the file j downloads into: j.Part, else Dst+".part".
func (j *Job) PartName() string {
	if j.Part != "" {
		return j.Part
	}
	return partName(j.Dst)
}

// TempNames returns the files j writes besides j.Dst (see TempNames).
func (j *Job) TempNames() []string { return tempNames(j.PartName()) }

// A Plan is a batch of downloads: files added one by one (Add) and the
// files of directory trees (AddTree). Client.FetchPlan runs it in the
// order Order gives. The zero value is an empty plan.
type Plan struct {
	// Jobs are the downloads, in the order they were added; Jobs[i].ID is i.
	Jobs []Job
	// Sizes[i] is the size of Jobs[i]'s file as a listing gave it, -1 when
	// it is known only once fetched.
	Sizes []int64
	// Dirs are the directories of trees that get the server's mtime once
	// every job is over, deepest first (setting a directory's mtime after
	// its parent's would change the parent's).
	Dirs []DirMTime
	// Skipped are the entries of trees that cannot be fetched.
	Skipped []Skip

	dsts map[string]Target // filepath.Clean(Dst) -> the URL written there
}

// DirMTime is a local directory and the mtime its server gives it.
type DirMTime struct {
	Path  string
	MTime int64 // Unix nanoseconds
}

// Skip is an entry of a tree that a Plan leaves out, and why: a symlink to
// a directory (which could loop), or what is not a regular file (a FIFO, a
// device, a broken link).
type Skip struct {
	Src Target
	Why string
}

// ConflictError is two URLs of a Plan that would be written to one file.
type ConflictError struct {
	Dst        string
	Prev, Next Target
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s and %s would both be written to %s", e.Prev, e.Next, e.Dst)
}

// Add adds j to the plan and returns its ID (which it sets). size is the
// file's size if known, else -1. j.Name defaults to j.Dst. A j.Dst that
// another job of the plan writes already is a *ConflictError.
func (p *Plan) Add(j Job, size int64) (int, error) {
	if j.Dst != "" {
		key := filepath.Clean(j.Dst)
		if prev, ok := p.dsts[key]; ok {
			return -1, &ConflictError{Dst: j.Dst, Prev: prev, Next: j.Src}
		}
		if p.dsts == nil {
			p.dsts = map[string]Target{}
		}
		p.dsts[key] = j.Src
	}
	if j.Name == "" {
		j.Name = j.Dst
	}
	j.ID = len(p.Jobs)
	p.Jobs = append(p.Jobs, j)
	p.Sizes = append(p.Sizes, size)
	return j.ID, nil
}

// Tree is a directory on a server to fetch with everything below it.
type Tree struct {
	Src    Target // the directory
	Root   string // the local directory it is written to (created)
	Resume bool   // Job.Resume of its files
	// KeepRootMTime leaves Root's own mtime alone (a directory of the
	// user's, such as the one zfetch -O names): only the directories below
	// it get the server's.
	KeepRootMTime bool
}

// AddTree lists t.Src (Client.Walk), creates its directories below t.Root
// and adds a job per file, of unknown size until listed (the listing's),
// without digest or mirrors. Entries it cannot fetch go to p.Skipped. Over
// the native protocol t.Src is asked for first (STAT): one that is not a
// directory is a *StatusError with StatusNotDirectory. Retries of the
// listing go to Options.Events with File -1, like Client.Stat's.
func (p *Plan) AddTree(ctx context.Context, c *Client, t Tree) error {
	var rootMTime int64
	if !t.Src.IsHTTP() {
		// Over HTTP the listing itself tells (a file has none).
		st, err := c.Stat(ctx, t.Src)
		if err != nil {
			return fmt.Errorf("%s: %w", t.Src, err)
		}
		if st.Kind != wire.KindDir {
			return &StatusError{Status: wire.StatusNotDirectory, Path: t.Src.Path,
				Message: fmt.Sprintf("not a directory: %s (drop -r to fetch a file)", t.Src.Path)}
		}
		rootMTime = st.MTime
	}
	entries, err := c.Walk(ctx, t.Src, c.emit)
	if err != nil {
		return fmt.Errorf("listing %s: %w", t.Src, err)
	}
	if err := os.MkdirAll(t.Root, 0o755); err != nil {
		return &LocalError{Op: "create directory", Path: t.Root, Err: err}
	}
	var dirs []DirMTime
	first := len(p.Jobs)
	for _, e := range entries {
		if e.Omitted > 0 {
			p.Skipped = append(p.Skipped, Skip{t.Src.Join(e.Rel), fmt.Sprintf(
				"the server left %d name(s) out of this directory's listing (not valid UTF-8: no URL can name them)", e.Omitted)})
			continue
		}
		local := filepath.Join(t.Root, filepath.FromSlash(e.Rel))
		if err := noLinkBelow(t.Root, e.Rel); err != nil {
			return err
		}
		switch e.Kind {
		case wire.KindDir:
			if err := os.MkdirAll(local, 0o755); err != nil {
				return &LocalError{Op: "create directory", Path: local, Err: err}
			}
			if e.MTime != 0 {
				dirs = append(dirs, DirMTime{local, e.MTime})
			}
		case wire.KindFile:
			if _, err := p.Add(Job{Src: t.Src.Join(e.Rel), Dst: local, Resume: t.Resume}, e.Size); err != nil {
				return err
			}
		case wire.KindSymlink:
			p.Skipped = append(p.Skipped, Skip{t.Src.Join(e.Rel), "a symlink to a directory"})
		case wire.KindOther:
			if e.Vanished {
				p.Skipped = append(p.Skipped, Skip{t.Src.Join(e.Rel), "a directory gone, or no longer one, when listed after its parent (the tree changed meanwhile)"})
				continue
			}
			p.Skipped = append(p.Skipped, Skip{t.Src.Join(e.Rel), "not a regular file"})
		default:
			p.Skipped = append(p.Skipped, Skip{t.Src.Join(e.Rel), "not a regular file"})
		}
	}
	// Walk lists a directory before its contents: backwards is deepest
	// first. The root last.
	for i := len(dirs) - 1; i >= 0; i-- {
		p.Dirs = append(p.Dirs, dirs[i])
	}
	if !t.KeepRootMTime && rootMTime != 0 {
		p.Dirs = append(p.Dirs, DirMTime{t.Root, rootMTime})
	}
	movePartsOffDirs(p.Jobs[first:], t.Root, entries)
	return nil
}

// movePartsOffDirs gives each of jobs (a tree's, below root) whose
// temporary files (TempNames) include a directory of the tree another
// .part: x.1.part, x.2.part... the first whose names, and its state's, are
// neither an entry of the tree nor another job's temporary file. With
// x.part a directory, x could not be fetched at all. The choice depends
// only on the listing, so a later zfetch -c of the same tree resumes the
// same file. (A file of the tree named as another's temporary file needs
// no new name: Plan.Order fetches it after.)
func movePartsOffDirs(jobs []Job, root string, entries []TreeEntry) {
	dirs, taken := map[string]bool{}, map[string]bool{}
	for _, e := range entries {
		local := filepath.Join(root, filepath.FromSlash(e.Rel))
		taken[local] = true
		if e.Kind == wire.KindDir {
			dirs[local] = true
		}
	}
	for i := range jobs {
		for _, n := range jobs[i].TempNames() {
			taken[filepath.Clean(n)] = true
		}
	}
	for i := range jobs {
		j := &jobs[i]
		if !slices.ContainsFunc(j.TempNames(), func(n string) bool { return dirs[filepath.Clean(n)] }) {
			continue
		}
		for n := 1; ; n++ {
			part := fmt.Sprintf("%s.%d.part", j.Dst, n)
			names := tempNames(part)
			if slices.ContainsFunc(names, func(n string) bool { return taken[filepath.Clean(n)] }) {
				continue
			}
			for _, n := range names {
				taken[filepath.Clean(n)] = true
			}
			j.Part = part
			break
		}
	}
}

// Order puts the jobs into waves, batches run one after the other (the
// jobs of a wave at once). A job whose destination is one of another
// job's temporary files (TempNames: "x.part" in a tree that also has "x")
// runs after that job is over: run together, one would overwrite the
// other's file, and the last rename would put the wrong content in place.
// A job's temporary files are longer names than its destination, so the
// order has no cycles. after[k] lists the jobs whose temporary files job
// k's destination is: if one of those fails, its .part stays for a later
// resume, and job k must not replace it.
func (p *Plan) Order() (waves [][]int, after [][]int) {
	after = make([][]int, len(p.Jobs))
	idx := map[string]int{}
	clean := make([]string, len(p.Jobs)) // the names temporary files are matched on
	for i, j := range p.Jobs {
		if j.Dst != "" {
			clean[i] = filepath.Clean(j.Dst)
			idx[clean[i]] = i
		}
	}
	temps := func(i int) []string {
		if p.Jobs[i].Part == "" {
			return TempNames(clean[i])
		}
		ts := p.Jobs[i].TempNames()
		for k := range ts {
			ts[k] = filepath.Clean(ts[k])
		}
		return ts
	}
	wave := make([]int, len(p.Jobs))
	order := make([]int, len(p.Jobs))
	for i := range order {
		order[i] = i
	}
	// Shorter destinations first: a job's wave depends only on the waves
	// of jobs with shorter names (cleaned, as they are matched: "./d/../x"
	// is x, shorter than x.part).
	sort.SliceStable(order, func(a, b int) bool { return len(clean[order[a]]) < len(clean[order[b]]) })
	n := 1
	for _, i := range order {
		if p.Jobs[i].Dst == "" {
			continue
		}
		for _, t := range temps(i) {
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

// FetchPlan fetches p's jobs, wave after wave (Plan.Order), at most
// parallel at once. A job that would replace the partial download of a
// job that failed is not fetched (its EventError says why); one not
// started because ctx is done fails with ctx.Err() and no event. Once
// every job is over, p.Dirs get their mtimes. results[i] and errs[i] are
// p.Jobs[i]'s.
func (c *Client) FetchPlan(ctx context.Context, p *Plan, parallel int) (results []Result, errs []error) {
	results = make([]Result, len(p.Jobs))
	errs = make([]error, len(p.Jobs))
	sem := make(chan struct{}, max(parallel, 1))
	waves, after := p.Order()
	for _, wave := range waves {
		var wg sync.WaitGroup
		for _, i := range wave {
			j := p.Jobs[i]
			if ctx.Err() != nil {
				errs[i] = ctx.Err()
				continue
			}
			if k := failedBefore(after[i], errs); k >= 0 {
				err := fmt.Errorf("not fetched: it would replace the partial download of %s; fetch that one first (zfetch -c)", p.Jobs[k].Dst)
				errs[i] = err
				c.emit(Event{Kind: EventError, Time: c.opts.Now(), File: j.ID, Name: j.Name, Source: j.Src.String(), Total: -1, Err: err})
				continue
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				results[i], errs[i] = c.Fetch(ctx, j)
			})
		}
		wg.Wait()
	}
	for _, d := range p.Dirs {
		setMTime(d.Path, d.MTime) // cosmetic: a failure here loses nothing
	}
	return results, errs
}

// failedBefore returns the first of jobs that failed, or -1.
func failedBefore(jobs []int, errs []error) int {
	for _, k := range jobs {
		if errs[k] != nil {
			return k
		}
	}
	return -1
}

// noLinkBelow refuses a tree entry rel (slash-separated, below root) when
// one of the directories above it in the local tree is a symbolic link:
// MkdirAll and the .part's open would follow it, and the files below
// would be written wherever it leads, outside the tree (a link planted in
// a folder others can write to). root itself may be a link: the user
// named it. The entry's own name is not looked at: a file's is replaced
// by the rename, a directory's is checked as its children's parent.
func noLinkBelow(root, rel string) error {
	dir := root
	for _, c := range strings.Split(path.Dir(rel), "/") {
		if c == "." || c == "" {
			continue
		}
		dir = filepath.Join(dir, c)
		fi, err := os.Lstat(dir)
		if err != nil {
			continue // made by MkdirAll for an earlier entry, or not yet
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return &LocalError{Op: "write into", Path: dir, Err: errors.New("it is a symbolic link, and zfetch writes a tree only into directories, never where a link leads (remove the link)")}
		}
	}
	return nil
}
