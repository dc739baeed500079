package zfetch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/zfs-serve/zfs-serve/cli"
)

// linkedFile is where -o puts the download when it names a symlink ("" if
// name is no symlink): in place of the regular file fi the link leads to,
// or, for a dangling link (fi nil), of the missing name at its end; never
// in place of the link. Replacing a link by the file would break it for
// everyone else: zfetch -o /dev/stdout > out would leave a regular file in
// /dev/stdout's place, as -o /dev/null once did. A link whose file has no
// path to rename over (what /proc/self/fd/1 leads to for a deleted file or
// one of another mount namespace) is a usage error.
func linkedFile(name string, fi os.FileInfo) (string, error) {
	if lfi, err := os.Lstat(name); err != nil || lfi.Mode().Type() != os.ModeSymlink {
		return "", nil
	}
	var (
		file string
		err  error
	)
	if fi == nil {
		file, err = danglingEnd(name)
	} else if file, err = filepath.EvalSymlinks(name); err == nil {
		var ffi os.FileInfo
		if ffi, err = os.Stat(file); err == nil && !os.SameFile(fi, ffi) {
			err = fmt.Errorf("it leads to %s, which is another file", file)
		}
	}
	if err != nil {
		return "", cli.Usagef("-o %s is a symbolic link whose file has no path to put the download in place (%v); name the file itself, or use -o - with a redirection", name, err)
	}
	return file, nil
}

// danglingEnd follows the dangling symlink name, one link at a time, to
// the name at its end that does not exist.
func danglingEnd(name string) (string, error) {
	p := name
	for range 40 { // Linux's limit of links in a path
		t, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		p = t
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return p, nil
		case err != nil:
			return "", err
		case fi.Mode().Type() != os.ModeSymlink:
			return "", fmt.Errorf("%s exists now", p)
		}
	}
	return "", errors.New("too many levels of symbolic links")
}
