package serve

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/internal/rawcall"
	"github.com/zfs-serve/zfs-serve/wire"
)

// TestInlineRawReadKeepsAtime: a small file's bytes are read raw only
// where the read leaves its access time as it is; a read that updates it
// writes the inode (a journal handle on ext4) and is made the ordinary way.
func TestInlineRawReadKeepsAtime(t *testing.T) {
	settleNow(t)
	if err := rawcall.ProbeCachestat(); err != nil {
		t.Skipf("no raw reads without cachestat: %v", err)
	}
	now := time.Now()
	for _, c := range []struct {
		name         string
		atime, mtime time.Time
		raw          bool
	}{
		{"read since its last change", now.Add(time.Minute), now.Add(-time.Hour), true},
		{"changed since read", now.Add(-time.Hour), now.Add(-time.Minute), false},
		{"read a day ago", now.Add(-25 * time.Hour), now.Add(-48 * time.Hour), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc, root, _ := testCache(t, 0)
			if !root.fs().local || root.fs().atime != atimeRelative {
				t.Skipf("the root is not on a local relatime mount (rule %d)", root.fs().atime)
			}
			fc.inlineMax, fc.now = 1<<10, time.Now
			p := filepath.Join(root.r.Name(), "f")
			if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, c.atime, c.mtime); err != nil {
				t.Fatal(err)
			}
			fd, _, e, err := fc.open(root, "/f", nil)
			if err != nil {
				t.Fatal(err)
			}
			fc.release(fd, e)
			if e == nil || string(e.body) != "hello" {
				t.Fatalf("entry %v: the file's bytes not kept", e != nil)
			}
			if n := fc.rawReads.Load(); (n > 0) != c.raw {
				t.Errorf("%d raw reads, want raw %v", n, c.raw)
			}
		})
	}
}

// TestAtimeStays: the kernel's relatime rule, to the second.
func TestAtimeStays(t *testing.T) {
	ts := func(sec, nsec int64) unix.Timespec { return unix.Timespec{Sec: sec, Nsec: nsec} }
	const day = 24 * 60 * 60
	for _, c := range []struct {
		name  string
		rule  atimeRule
		st    unix.Stat_t
		now   time.Time
		stays bool
	}{
		{"noatime", atimeNever, unix.Stat_t{Atim: ts(1, 0), Mtim: ts(5, 0), Ctim: ts(5, 0)}, time.Unix(10*day, 0), true},
		{"strictatime", atimeStrict, unix.Stat_t{Atim: ts(9, 0), Mtim: ts(5, 0), Ctim: ts(5, 0)}, time.Unix(10, 0), false},
		{"read since the change", atimeRelative, unix.Stat_t{Atim: ts(9, 0), Mtim: ts(5, 0), Ctim: ts(5, 0)}, time.Unix(10, 0), true},
		{"changed since read", atimeRelative, unix.Stat_t{Atim: ts(9, 0), Mtim: ts(9, 1), Ctim: ts(5, 0)}, time.Unix(10, 0), false},
		{"ctime as new", atimeRelative, unix.Stat_t{Atim: ts(9, 5), Mtim: ts(5, 0), Ctim: ts(9, 5)}, time.Unix(10, 0), false},
		{"a day old by the seconds", atimeRelative, unix.Stat_t{Atim: ts(100, 900_000_000), Mtim: ts(5, 0), Ctim: ts(5, 0)}, time.Unix(100+day, 500_000_000), false},
		{"under a day", atimeRelative, unix.Stat_t{Atim: ts(100, 0), Mtim: ts(5, 0), Ctim: ts(5, 0)}, time.Unix(99+day, 999_999_999), true},
	} {
		root := &rootFS{atime: c.rule}
		if got := atimeStays(root, &c.st, c.now); got != c.stays {
			t.Errorf("%s: atimeStays %v, want %v", c.name, got, c.stays)
		}
	}
}

// TestSendfileRawKeepsAtime: a body's sendfile is raw only where reading
// the file leaves its access time as it is; where the read updates it (a
// write of the inode), the first call is made the ordinary way, and the
// rest of the body, the access time then fresh, raw again.
func TestSendfileRawKeepsAtime(t *testing.T) {
	if err := rawcall.ProbeCachestat(); err != nil {
		t.Skipf("no raw sendfile without cachestat: %v", err)
	}
	now := time.Now()
	for _, c := range []struct {
		name         string
		atime, mtime time.Time
		raw          bool // the first call
	}{
		{"read since its last change", now.Add(time.Minute), now.Add(-time.Hour), true},
		{"changed since read", now.Add(-time.Hour), now.Add(-time.Minute), false},
		{"read a day ago", now.Add(-25 * time.Hour), now.Add(-48 * time.Hour), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts := newTestServer(t, config.ModeSendfile)
			if !ts.srv.root.fs().local || ts.srv.root.fs().atime != atimeRelative {
				t.Skipf("the root is not on a local relatime mount (rule %d)", ts.srv.root.fs().atime)
			}
			data := random(3 * int(ts.srv.opts.Chunk)) // three chunks, more than a small file
			ts.write(t, "f", data)
			p := filepath.Join(ts.root, "f")
			os.ReadFile(p) // its pages in the cache
			if err := os.Chtimes(p, c.atime, c.mtime); err != nil {
				t.Fatal(err)
			}
			r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
			if r.Status != wire.StatusOK || !bytes.Equal(body, data) {
				t.Fatalf("status %v, %d bytes: want the file", r.Status, len(body))
			}
			raw, plain := ts.srv.rawSendfiles.Load(), ts.srv.plainSendfiles.Load()
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			updated := st.Atim.Sec != c.atime.Unix()
			switch {
			case c.raw && (plain != 0 || raw == 0 || updated):
				t.Errorf("sendfile calls: %d raw, %d ordinary; access time updated %v: want all raw, the access time as it was", raw, plain, updated)
			case !c.raw && (plain != 1 || raw == 0 || !updated):
				t.Errorf("sendfile calls: %d raw, %d ordinary; access time updated %v: want the first ordinary and the rest raw, the access time updated", raw, plain, updated)
			}
		})
	}
}

// TestSendfileRawAtimeOtherRules: on a strictatime mount every read updates
// the access time, the body's first as much as its later ones, so none of
// a body's sendfile is raw; and a file on another file system under the
// root goes by its own mount's rule, not the root's, so none of its
// sendfile is raw either (here a strictatime tmpfs under a relatime root,
// whose file's access time is fresh by relatime's rule).
func TestSendfileRawAtimeOtherRules(t *testing.T) {
	if err := rawcall.ProbeCachestat(); err != nil {
		t.Skipf("no raw sendfile without cachestat: %v", err)
	}
	mountStrict := func(t *testing.T, dir string) {
		t.Helper()
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_STRICTATIME, "size=16m"); err != nil {
			t.Skipf("mount a tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	}
	for _, c := range []struct {
		name string
		// setup mounts what it needs and returns the server and the
		// file's directory under its root ("" for the root).
		setup func(t *testing.T) (*testServer, string)
	}{
		{"strictatime root", func(t *testing.T) (*testServer, string) {
			dir := t.TempDir()
			mountStrict(t, dir)
			ts := newTestServer(t, config.ModeSendfile, func(o *Options) { o.Root = dir })
			ts.root = dir
			if ts.srv.root.fs().atime != atimeStrict {
				t.Skipf("the tmpfs root's rule is %d, not strict", ts.srv.root.fs().atime)
			}
			return ts, ""
		}},
		{"strictatime mount under a relatime root", func(t *testing.T) (*testServer, string) {
			ts := newTestServer(t, config.ModeSendfile)
			if ts.srv.root.fs().atime != atimeRelative {
				t.Skipf("the root is not on a relatime mount (rule %d)", ts.srv.root.fs().atime)
			}
			sub := filepath.Join(ts.root, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			mountStrict(t, sub)
			return ts, "sub"
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts, dir := c.setup(t)
			data := random(3 * int(ts.srv.opts.Chunk))
			p := filepath.Join(ts.root, dir, "f")
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			// Read since its last change: relatime's rule would keep it.
			if err := os.Chtimes(p, now.Add(time.Minute), now.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/" + filepath.ToSlash(filepath.Join(dir, "f"))})
			if r.Status != wire.StatusOK || !bytes.Equal(body, data) {
				t.Fatalf("status %v, %d bytes: want the file", r.Status, len(body))
			}
			if raw, plain := ts.srv.rawSendfiles.Load(), ts.srv.plainSendfiles.Load(); raw != 0 || plain == 0 {
				t.Errorf("sendfile calls: %d raw, %d ordinary: want none raw", raw, plain)
			}
		})
	}
}

// TestSendfileRawFutureMtime: on a relatime mount a file whose mtime is in
// the future (an archive's, another machine's clock) has its access time
// updated by every read, since the read's access time is never later than
// that mtime: no call of its body is raw, not even after the first.
func TestSendfileRawFutureMtime(t *testing.T) {
	if err := rawcall.ProbeCachestat(); err != nil {
		t.Skipf("no raw sendfile without cachestat: %v", err)
	}
	ts := newTestServer(t, config.ModeSendfile)
	if ts.srv.root.fs().atime != atimeRelative {
		t.Skipf("the root is not on a relatime mount (rule %d)", ts.srv.root.fs().atime)
	}
	data := random(3 * int(ts.srv.opts.Chunk))
	ts.write(t, "f", data)
	p := filepath.Join(ts.root, "f")
	os.ReadFile(p) // its pages in the cache
	now := time.Now()
	if err := os.Chtimes(p, now.Add(-time.Hour), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r, body := ts.do(t, wire.Request{Op: wire.OpGet, Path: "/f"})
	if r.Status != wire.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("status %v, %d bytes: want the file", r.Status, len(body))
	}
	if raw, plain := ts.srv.rawSendfiles.Load(), ts.srv.plainSendfiles.Load(); raw != 0 || plain == 0 {
		t.Errorf("sendfile calls: %d raw, %d ordinary: want none raw", raw, plain)
	}
}
