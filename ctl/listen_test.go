package ctl

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestListen(t *testing.T) {
	dir := shortDir(t)

	t.Run("mode and directory", func(t *testing.T) {
		path := filepath.Join(dir, "new", "c.sock")
		ln, err := Listen(path, -1)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Type() != os.ModeSocket || st.Mode().Perm() != 0o660 {
			t.Errorf("socket mode %v, want a socket with 0660", st.Mode())
		}
		ln.Close()
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file left after Close: %v", err)
		}
	})

	t.Run("another server answers", func(t *testing.T) {
		path := filepath.Join(dir, "busy.sock")
		ln, err := Listen(path, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, err = Listen(path, -1)
		if err == nil || !strings.Contains(err.Error(), "another zfs-serve is answering") {
			t.Fatalf("second Listen: %v", err)
		}
		// The first one still works.
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		c := rawDial(t, path)
		c.Close()
	})

	t.Run("stale socket", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false)
		old.Close() // as after a crash: the file stays, nobody listens
		if st, err := os.Lstat(path); err != nil || st.Mode().Type() != os.ModeSocket {
			t.Fatalf("stale socket not there: %v", err)
		}
		ln, err := Listen(path, -1)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		defer ln.Close()
		st, _ := os.Lstat(path)
		if st.Mode().Perm() != 0o660 {
			t.Errorf("replaced socket mode %v", st.Mode())
		}
	})

	for _, tt := range []struct {
		name string
		make func(string) error
	}{
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("precious"), 0o644) }},
		{"empty regular file", func(p string) error { return os.WriteFile(p, nil, 0o644) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"symlink to a file", func(p string) error {
			if err := os.WriteFile(p+".target", []byte("precious"), 0o644); err != nil {
				return err
			}
			return os.Symlink(filepath.Base(p)+".target", p)
		}},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
	} {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			if err := tt.make(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(path)
			ln, err := Listen(path, -1)
			if err == nil {
				ln.Close()
				t.Fatalf("Listen replaced a %s", tt.name)
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a socket") {
				t.Errorf("error %q does not say that %s is not a socket", err, path)
			}
			after, err := os.Lstat(path)
			if err != nil || !os.SameFile(before, after) {
				t.Errorf("the %s was removed or replaced: %v", tt.name, err)
			}
		})
	}
}

// TestListenDirectory checks the socket's directory: created when missing,
// refused when someone else could replace or remove the socket in it.
func TestListenDirectory(t *testing.T) {
	root := os.Geteuid() == 0
	mkdir := func(mode os.FileMode) func(t *testing.T, d string) string {
		return func(t *testing.T, d string) string {
			sub := filepath.Join(d, "sub")
			if err := os.Mkdir(sub, 0o700); err != nil {
				t.Fatal(err)
			}
			// Chmod, not Mkdir's mode: the umask would clear bits.
			if err := os.Chmod(sub, mode); err != nil {
				t.Fatal(err)
			}
			return sub
		}
	}
	chown := func(mode os.FileMode, uid int) func(t *testing.T, d string) string {
		return func(t *testing.T, d string) string {
			sub := mkdir(mode)(t, d)
			if err := os.Chown(sub, uid, uid); err != nil {
				t.Fatal(err)
			}
			return sub
		}
	}
	for _, tt := range []struct {
		name string
		// dir makes the socket's directory under d and returns it.
		dir func(t *testing.T, d string) string
		// needRoot: the case chowns to another uid.
		needRoot bool
		// wantErr are substrings of the error; none: Listen succeeds.
		wantErr []string
	}{
		{
			name: "missing is created",
			dir:  func(t *testing.T, d string) string { return filepath.Join(d, "a", "b") },
		},
		{name: "private", dir: mkdir(0o700)},
		{name: "traversable", dir: mkdir(0o755)},
		{
			name:    "other-writable without sticky",
			dir:     mkdir(0o777),
			wantErr: []string{"mode drwxrwxrwx) is writable by group or others and not sticky", "--control"},
		},
		{
			name:    "group-writable without sticky",
			dir:     mkdir(0o770),
			wantErr: []string{"mode drwxrwx---) is writable by group or others and not sticky"},
		},
		{name: "other-writable sticky", dir: mkdir(0o777 | os.ModeSticky)},
		{
			name: "symlink to a directory",
			dir: func(t *testing.T, d string) string {
				target := mkdir(0o700)(t, d)
				link := filepath.Join(d, "link")
				if err := os.Symlink(target, link); err != nil {
					t.Fatal(err)
				}
				return link
			},
			wantErr: []string{"mode Lrwxrwxrwx) is a symbolic link, not a directory", "--control"},
		},
		{
			name:     "owned by another uid",
			dir:      chown(0o755, 65534),
			needRoot: true,
			wantErr:  []string{"(owner uid 65534, mode drwxr-xr-x) is owned by uid 65534", "--control"},
		},
		{
			name:     "owned by another uid, sticky",
			dir:      chown(0o777|os.ModeSticky, 65534),
			needRoot: true,
			wantErr:  []string{"owned by uid 65534", "--control"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needRoot && !root {
				t.Skip("chown of the directory to uid 65534 needs root")
			}
			dir := tt.dir(t, shortDir(t))
			path := filepath.Join(dir, "c.sock")
			ln, err := Listen(path, -1)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Listen: %v", err)
				}
				defer ln.Close()
				st, err := os.Lstat(dir)
				if err != nil || !st.IsDir() {
					t.Fatalf("socket directory %s: %v, %v", dir, st, err)
				}
				if st, err := os.Lstat(path); err != nil || st.Mode().Type() != os.ModeSocket {
					t.Errorf("no socket at %s: %v", path, err)
				}
				return
			}
			if err == nil {
				ln.Close()
				t.Fatalf("Listen accepted the directory %s", dir)
			}
			t.Logf("refused: %v", err)
			for _, want := range append([]string{dir}, tt.wantErr...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			// Nothing was created, here or through the link.
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket created despite the error: %v", err)
			}
		})
	}
}

// TestListenSocketMode checks the socket's mode and group.
func TestListenSocketMode(t *testing.T) {
	// A group to give the socket: as root any; else one of ours that is
	// not the default (or the chown would prove nothing).
	otherGID := -1
	if os.Geteuid() == 0 {
		otherGID = 65534
	} else if groups, err := os.Getgroups(); err == nil {
		for _, g := range groups {
			if g != os.Getegid() {
				otherGID = g
				break
			}
		}
	}
	for _, tt := range []struct {
		name string
		gid  int // -2: otherGID
	}{
		{"no group", -1},
		{"group", -2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			gid := tt.gid
			if gid == -2 {
				if otherGID < 0 {
					t.Skip("not root and no supplementary group: cannot give the socket another group")
				}
				gid = otherGID
			}
			path := filepath.Join(shortDir(t), "c.sock")
			ln, err := Listen(path, gid)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			st, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			m := st.Mode()
			if m.Type() != os.ModeSocket || m&^os.ModeType != 0o660 {
				t.Errorf("socket mode %v, want srw-rw----", m)
			}
			if gid >= 0 {
				if got := st.Sys().(*syscall.Stat_t).Gid; int(got) != gid {
					t.Errorf("socket group %d, want %d", got, gid)
				}
			}
		})
	}
}
