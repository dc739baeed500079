package fetch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TestTreeDirVanishes: a folder that its parent's LIST named but that is
// gone, or no longer a folder, when zfetch lists it itself (a tree being
// written to: a build's scratch folder, a folder replaced by a file) is
// skipped with a note, as a file or link that vanished between the
// listing and its own request costs only itself: the rest of the tree is
// still fetched. It used to end the whole -r before any file.
func TestTreeDirVanishes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		gone   string              // what is then at out/gone: nothing, or the file
		change func(s *fakeServer) // what is then at out/gone: nothing, or the file
	}{
		{"removed", "", func(s *fakeServer) {
			delete(s.dirs, "/t/gone")
			delete(s.files, "/t/gone/x")
		}},
		{"replaced by a file", "now a file", func(s *fakeServer) {
			delete(s.dirs, "/t/gone")
			delete(s.files, "/t/gone/x")
			s.files["/t/gone"] = &fakeFile{data: []byte("now a file"), mtime: mtime1}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeServer(t)
			s.mkdir("/t", mtime1)
			s.put("/t/a", []byte("a"), mtime1)
			s.put("/t/gone/x", []byte("x"), mtime1)
			s.put("/t/z", []byte("z"), mtime1)
			s.hook = func(n int, q wire.Request) fault {
				if q.Op == wire.OpList && q.Path == "/t" {
					return fault{after: func() {
						s.mu.Lock()
						defer s.mu.Unlock()
						tc.change(s)
					}}
				}
				return fault{}
			}
			c, _ := testClient(t, Options{})
			root := filepath.Join(t.TempDir(), "out")
			var p Plan
			if err := p.AddTree(context.Background(), c, Tree{Src: s.target("/t"), Root: root}); err != nil {
				t.Fatalf("one folder gone ended the whole tree: %v", err)
			}
			// Removed: skipped with a note. Replaced by a file: that file.
			if tc.gone == "" && (len(p.Skipped) != 1 || !strings.HasSuffix(p.Skipped[0].Src.Path, "/gone")) ||
				tc.gone != "" && len(p.Skipped) != 0 {
				t.Fatalf("skipped %+v", p.Skipped)
			}
			_, errs := c.FetchPlan(context.Background(), &p, 2)
			for i, err := range errs {
				if err != nil {
					t.Errorf("%s: %v", p.Jobs[i].Dst, err)
				}
			}
			got, err := os.ReadFile(filepath.Join(root, "gone"))
			if tc.gone == "" && err == nil || tc.gone != "" && string(got) != tc.gone {
				t.Errorf("out/gone: %q %v, want %q", got, err, tc.gone)
			}
			for _, name := range []string{"a", "z"} {
				if got, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(got) != name {
					t.Errorf("%s: %q %v", name, got, err)
				}
			}
		})
	}
}
