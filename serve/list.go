package serve

import (
	"os"
	"path"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// list answers LIST with one directory's entries, sorted by name. Kinds
// come from lstat: symlinks are reported as such, and a client that wants
// what one points to asks with STAT or GET, which resolve it beneath the root.
func (c *conn) list(q *wire.Request) error {
	fd, st, err := openAt(c.s.root, q.Path, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		if re, ok := err.(*reqError); ok && re.status == wire.StatusNotFound {
			// openat2 says ENOTDIR for a file opened with O_DIRECTORY
			// (and for "file/", which is looked at without its slash).
			if st, serr := statPath(c.s.root, path.Clean("/"+q.Path)); serr == nil && kindOf(st) != wire.KindDir {
				return refuse(wire.StatusNotDirectory, "not a directory: %s", q.Path)
			}
		}
		return err
	}
	dir := os.NewFile(uintptr(fd), q.Path)
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return refuse(wire.StatusInternal, "internal error: list %s: %v", q.Path, err)
	}
	slices.Sort(names)
	body := make([]byte, 0, min(64*len(names), 1<<20))
	count := 0
	for _, name := range names {
		if !wire.ValidName(name) {
			continue
		}
		var est unix.Stat_t
		if err := unix.Fstatat(fd, name, &est, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // vanished since readdir
		}
		e := wire.Entry{Kind: kindOf(&est), Name: name, MTime: mtimeNanos(&est)}
		if e.Kind == wire.KindFile {
			e.Size = est.Size
		}
		if len(body)+wire.EntryHeaderLen+len(name) > wire.MaxListBody {
			return refuse(wire.StatusInternal, "internal error: %s has too many entries to list (limit %d bytes)", q.Path, wire.MaxListBody)
		}
		body = wire.AppendEntry(body, &e)
		count++
	}
	names = nil
	if n := int64(len(body)); c.s.listBytes.Add(n) > maxListBytes {
		c.s.listBytes.Add(-n)
		return refuse(wire.StatusBusy, "busy: too many large listings being sent, retry shortly")
	}
	defer c.s.listBytes.Add(-int64(len(body)))
	resp := wire.Response{Status: wire.StatusOK, Kind: wire.KindDir, Size: int64(count), MTime: mtimeNanos(st), BodyLen: int64(len(body))}
	if err := c.writeHeader(&resp, len(body) > 0); err != nil {
		return err
	}
	return c.write(body, false)
}
