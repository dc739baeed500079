package fetch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zfs-serve/zfs-serve/wire"
)

// A job whose destination is another job's temporary file runs after it;
// the others run together.
func TestPlanOrder(t *testing.T) {
	for _, c := range []struct {
		dsts  []string
		waves string
		after string
	}{
		{[]string{"a", "b", "c"}, "[[0 1 2]]", "[[] [] []]"},
		{[]string{"d/x.part", "d/x", "d/y"}, "[[1 2] [0]]", "[[1] [] []]"},
		{[]string{"x.part.part", "x.part", "x", "x.part.state", "x.part.state.tmp"}, "[[2] [1 3 4] [0]]", "[[1] [2] [] [2] [2]]"},
		{[]string{"x", "./x.part"}, "[[0] [1]]", "[[] [0]]"},
		{[]string{"x.partial", "x"}, "[[0 1]]", "[[] []]"},
		{[]string{"x.tmp", "x.state", "x"}, "[[0 1 2]]", "[[] [] []]"},
		{[]string{""}, "[[0]]", "[[]]"}, // a stream (Job.Out)
	} {
		var p Plan
		for _, d := range c.dsts {
			if _, err := p.Add(Job{Dst: d}, -1); err != nil {
				t.Fatal(err)
			}
		}
		waves, after := p.Order()
		if got := fmt.Sprint(waves); got != c.waves {
			t.Errorf("%q: waves %s, want %s", c.dsts, got, c.waves)
		}
		if got := fmt.Sprint(after); got != c.after {
			t.Errorf("%q: after %s, want %s", c.dsts, got, c.after)
		}
	}
}

func TestPlanAdd(t *testing.T) {
	var p Plan
	a := Target{Addr: "h:1", Path: "/a/x"}
	b := Target{Addr: "h:1", Path: "/b/x"}
	if id, err := p.Add(Job{Src: a, Dst: "d/x"}, 7); err != nil || id != 0 {
		t.Fatalf("Add = %d, %v", id, err)
	}
	if id, err := p.Add(Job{Src: a, Out: os.Stdout, Name: "-"}, -1); err != nil || id != 1 {
		t.Fatalf("Add of a stream = %d, %v", id, err)
	}
	_, err := p.Add(Job{Src: b, Dst: "d/./x"}, -1)
	var ce *ConflictError
	if !errors.As(err, &ce) || err.Error() != "zfs://h:1/a/x and zfs://h:1/b/x would both be written to d/./x" {
		t.Fatalf("a second job to d/x: %v", err)
	}
	if len(p.Jobs) != 2 || p.Jobs[0].ID != 0 || p.Jobs[0].Name != "d/x" || p.Jobs[1].ID != 1 || p.Jobs[1].Name != "-" ||
		!slices.Equal(p.Sizes, []int64{7, -1}) {
		t.Fatalf("plan %+v", p)
	}
}

// TempNames are the names a download writes besides its destination: the
// ones an interrupted download leaves, and the resume state's temporary.
func TestTempNames(t *testing.T) {
	if got := TempNames("d/x"); !slices.Equal(got, []string{"d/x.part", "d/x.part.state", "d/x.part.state.tmp"}) {
		t.Fatalf("TempNames = %q", got)
	}
	s := newFakeServer(t)
	s.put("/f", randBytes(3*MinSplit, 1), mtime1)
	s.hook = func(n int, q wire.Request) fault {
		if q.Op == wire.OpGet {
			return fault{status: wire.StatusForbidden}
		}
		return fault{}
	}
	c, _ := testClient(t, Options{Conns: 2}) // preallocated: a state is written
	dir := t.TempDir()
	dst := filepath.Join(dir, "f")
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), Dst: dst}); err == nil {
		t.Fatal("fetched a refused file")
	}
	names := TempNames(dst)
	es, _ := os.ReadDir(dir)
	var left []string
	for _, e := range es {
		p := filepath.Join(dir, e.Name())
		left = append(left, p)
		if !slices.Contains(names, p) {
			t.Errorf("the download wrote %s, which is not in TempNames %q", p, names)
		}
	}
	if !slices.Equal(left, names[:2]) {
		t.Errorf("left %q, want the .part and its state", left)
	}
	// The state's temporary: make it a directory, and writing the state
	// fails on that very name.
	if err := os.Mkdir(names[2], 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(names[2], "x"), nil, 0o644)
	var le *LocalError
	if err := writeState(names[1], &State{}); !errors.As(err, &le) || le.Path != names[2] {
		t.Fatalf("writeState with %s a directory: %v", names[2], err)
	}
}

// A tree: its files are jobs below the root with their listed sizes, its
// directories made and given the server's mtimes (deepest first, the root
// last unless KeepRootMTime), what cannot be fetched skipped; FetchPlan
// fetches "x" before "x.part" (x's temporary), and not "x.part" at all
// once "x" failed, which leaves x's partial download for a resume.
func TestPlanTree(t *testing.T) {
	xData, partData := randBytes(5000, 3), randBytes(4000, 4)
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("KeepRootMTime=%v", keep), func(t *testing.T) {
			s := treeServer(t, xData, partData)
			c, rec := testClient(t, Options{})
			root := filepath.Join(t.TempDir(), "out")
			var p Plan
			if err := p.AddTree(context.Background(), c, Tree{Src: s.target("/tree"), Root: root, Resume: true, KeepRootMTime: keep}); err != nil {
				t.Fatal(err)
			}
			var jobs []string
			for i, j := range p.Jobs {
				rel, _ := filepath.Rel(root, j.Dst)
				jobs = append(jobs, fmt.Sprintf("%s %s %d %v", j.Src.Path, rel, p.Sizes[i], j.Resume))
			}
			want := []string{"/tree/a a 3 true", "/tree/sub/deeper/b sub/deeper/b 1000 true", "/tree/x x 5000 true", "/tree/x.part x.part 4000 true"}
			if !slices.Equal(jobs, want) {
				t.Fatalf("jobs:\n%s\nwant:\n%s", strings.Join(jobs, "\n"), strings.Join(want, "\n"))
			}
			var dirs []string
			for _, d := range p.Dirs {
				rel, _ := filepath.Rel(root, d.Path)
				dirs = append(dirs, fmt.Sprintf("%s %d", rel, d.MTime-mtime1))
			}
			wantDirs := []string{"sub/deeper 3", "sub 2"}
			if !keep {
				wantDirs = append(wantDirs, ". 1")
			}
			if !slices.Equal(dirs, wantDirs) {
				t.Fatalf("dirs %q, want %q", dirs, wantDirs)
			}
			if fmt.Sprint(p.Skipped) != fmt.Sprintf("[{%s not a regular file} {%s a symlink to a directory}]", s.target("/tree/dangling"), s.target("/tree/link-to-dir")) {
				t.Fatalf("skipped %v", p.Skipped)
			}

			_, errs := c.FetchPlan(context.Background(), &p, 4)
			for i, err := range errs {
				if err != nil {
					t.Fatalf("%s: %v", p.Jobs[i].Dst, err)
				}
			}
			for name, want := range map[string][]byte{"x": xData, "x.part": partData} {
				got, _ := os.ReadFile(filepath.Join(root, name))
				if string(got) != string(want) {
					t.Fatalf("%s is not the server's %s", name, name)
				}
			}
			var order []string
			for _, q := range s.getLog() {
				order = append(order, q.Path)
			}
			if i, k := slices.Index(order, "/tree/x.part"), slices.Index(order, "/tree/x"); k < 0 || i < k || slices.Contains(order[i:], "/tree/x") {
				t.Fatalf("GETs in the order %q: x.part not after x", order)
			}
			for _, d := range wantDirs {
				rel, n, _ := strings.Cut(d, " ")
				fi, err := os.Stat(filepath.Join(root, rel))
				if err != nil || fmt.Sprint(fi.ModTime().UnixNano()-mtime1) != n {
					t.Errorf("%s: mtime %v, want mtime1+%s", rel, fi.ModTime().UnixNano()-mtime1, n)
				}
			}
			if keep {
				if fi, _ := os.Stat(root); fi.ModTime().UnixNano() == mtime1+1 {
					t.Error("KeepRootMTime: the root got the server's mtime")
				}
			}
			if len(rec.kinds(EventError)) != 0 {
				t.Fatalf("errors %+v", rec.kinds(EventError))
			}
		})
	}

	t.Run("x fails", func(t *testing.T) {
		s := treeServer(t, xData, partData)
		s.hook = func(n int, q wire.Request) fault {
			if q.Op == wire.OpGet && q.Path == "/tree/x" {
				return fault{status: wire.StatusForbidden}
			}
			return fault{}
		}
		c, rec := testClient(t, Options{})
		root := filepath.Join(t.TempDir(), "out")
		var p Plan
		if err := p.AddTree(context.Background(), c, Tree{Src: s.target("/tree"), Root: root}); err != nil {
			t.Fatal(err)
		}
		results, errs := c.FetchPlan(context.Background(), &p, 4)
		for i, j := range p.Jobs {
			switch rel, _ := filepath.Rel(root, j.Dst); rel {
			case "x":
				if errs[i] == nil || results[i].Part != filepath.Join(root, "x.part") {
					t.Fatalf("x: %v, part %q; want an error and its .part kept", errs[i], results[i].Part)
				}
			case "x.part":
				if errs[i] == nil || !strings.Contains(errs[i].Error(), "not fetched: it would replace the partial download of "+filepath.Join(root, "x")) {
					t.Fatalf("x.part: %v", errs[i])
				}
			default:
				if errs[i] != nil {
					t.Fatalf("%s: %v", rel, errs[i])
				}
			}
		}
		if fi, err := os.Stat(filepath.Join(root, "x.part")); err != nil || fi.Size() == int64(len(partData)) {
			t.Fatalf("x.part: %v; want x's partial download left", err)
		}
		var files []string
		for _, e := range rec.kinds(EventError) {
			files = append(files, e.Name)
		}
		if !slices.Equal(files, []string{filepath.Join(root, "x"), filepath.Join(root, "x.part")}) {
			t.Fatalf("error events for %q", files)
		}
	})
}

func treeServer(t *testing.T, xData, partData []byte) *fakeServer {
	s := newFakeServer(t)
	s.mkdir("/tree", mtime1+1)
	s.put("/tree/a", []byte("aaa"), mtime1)
	s.mkdir("/tree/sub", mtime1+2)
	s.mkdir("/tree/sub/deeper", mtime1+3)
	s.put("/tree/sub/deeper/b", randBytes(1000, 2), mtime1)
	s.put("/tree/x", xData, mtime1)
	s.put("/tree/x.part", partData, mtime1)
	s.put("/elsewhere/f", []byte("f"), mtime1)
	s.links["/tree/link-to-dir"] = "/elsewhere"
	s.links["/tree/dangling"] = "/nowhere"
	return s
}

// A tree over the native protocol must be a directory.
func TestPlanTreeOfAFile(t *testing.T) {
	s := newFakeServer(t)
	s.put("/f", []byte("f"), mtime1)
	c, _ := testClient(t, Options{})
	var p Plan
	err := p.AddTree(context.Background(), c, Tree{Src: s.target("/f"), Root: filepath.Join(t.TempDir(), "out")})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != wire.StatusNotDirectory || len(p.Jobs) != 0 {
		t.Fatalf("AddTree of a file: %v, %d jobs", err, len(p.Jobs))
	}
}

// Order ranks jobs by their cleaned destination, the names it matches
// temporary files on: ranked by the name as given, "./d/../x" came after
// "x.part" and before "x.part.part", x.part's wave was raised after
// x.part.part's had been computed from it, and the two ran together.
func TestPlanOrderUncleanNames(t *testing.T) {
	var p Plan
	for _, d := range []string{"x.part.part", "x.part", "./d/../x"} {
		if _, err := p.Add(Job{Dst: d}, -1); err != nil {
			t.Fatal(err)
		}
	}
	waves, after := p.Order()
	if got, want := fmt.Sprint(waves), "[[2] [1] [0]]"; got != want {
		t.Errorf("waves %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(after), "[[1] [2] []]"; got != want {
		t.Errorf("after %s, want %s", got, want)
	}
}

// A tree with a file x and a directory x.part (or x.part.state...): x
// cannot be downloaded into x.part, a directory of the tree, so it gets
// the first x.N.part whose names (and its state's) no entry of the tree
// has, and both are fetched. A failed x keeps that .part for -c.
func TestPlanTreeTempNameIsADirectory(t *testing.T) {
	aData, cData := randBytes(3000, 5), randBytes(2000, 6)
	server := func() *fakeServer {
		s := newFakeServer(t)
		s.mkdir("/t", mtime1)
		s.put("/t/a", aData, mtime1)
		s.mkdir("/t/a.part", mtime1)
		s.put("/t/a.part/b", []byte("b"), mtime1)
		s.put("/t/a.1.part", []byte("a1"), mtime1)
		s.put("/t/c", cData, mtime1)
		s.mkdir("/t/c.part.state.tmp", mtime1)
		s.put("/t/c.part.state.tmp/e", []byte("e"), mtime1)
		return s
	}
	s := server()
	c, rec := testClient(t, Options{})
	root := filepath.Join(t.TempDir(), "out")
	var p Plan
	if err := p.AddTree(context.Background(), c, Tree{Src: s.target("/t"), Root: root, Resume: true}); err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, j := range p.Jobs {
		rel, _ := filepath.Rel(root, j.Dst)
		part, _ := filepath.Rel(root, j.PartName())
		parts = append(parts, rel+" "+part)
	}
	want := []string{"a a.2.part", "a.1.part a.1.part.part", "a.part/b a.part/b.part", "c c.1.part", "c.part.state.tmp/e c.part.state.tmp/e.part"}
	if !slices.Equal(parts, want) {
		t.Fatalf("jobs and their .part:\n%s\nwant:\n%s", strings.Join(parts, "\n"), strings.Join(want, "\n"))
	}
	_, errs := c.FetchPlan(context.Background(), &p, 4)
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", p.Jobs[i].Dst, err)
		}
	}
	for name, want := range map[string][]byte{"a": aData, "a.part/b": []byte("b"), "a.1.part": []byte("a1"), "c": cData, "c.part.state.tmp/e": []byte("e")} {
		if got, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(got) != string(want) {
			t.Errorf("%s is not the server's: %v", name, err)
		}
	}
	if len(rec.kinds(EventError)) != 0 {
		t.Errorf("errors %+v", rec.kinds(EventError))
	}

	t.Run("a fails", func(t *testing.T) {
		s := server()
		s.hook = func(n int, q wire.Request) fault {
			if q.Op == wire.OpGet && q.Path == "/t/a" {
				return fault{status: wire.StatusForbidden}
			}
			return fault{}
		}
		c, _ := testClient(t, Options{})
		root := filepath.Join(t.TempDir(), "out")
		var p Plan
		if err := p.AddTree(context.Background(), c, Tree{Src: s.target("/t"), Root: root}); err != nil {
			t.Fatal(err)
		}
		results, errs := c.FetchPlan(context.Background(), &p, 4)
		for i, j := range p.Jobs {
			if j.Dst == filepath.Join(root, "a") {
				if errs[i] == nil || results[i].Part != filepath.Join(root, "a.2.part") {
					t.Fatalf("a: %v, part %q; want an error and a.2.part kept", errs[i], results[i].Part)
				}
			} else if errs[i] != nil {
				t.Errorf("%s: %v", j.Dst, errs[i])
			}
		}
	})
}
