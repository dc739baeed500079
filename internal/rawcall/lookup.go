package rawcall

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Lookup revalidates a path the caller looked up moments ago: openat2(2)
// of path beneath dirfd with how (which must ask for O_PATH, so nothing is
// opened for reading and no atime changes), fstat(2) of the result into
// st, and close(2). It is raw, so it holds the caller's P throughout: use
// it only on a local file system, with RESOLVE_NO_XDEV in how so that the
// walk cannot leave that file system, and with RESOLVE_CACHED where the
// kernel has it (5.12), so that a dentry evicted meanwhile by memory
// pressure fails the walk with EAGAIN instead of reading a directory
// block while the caller's other goroutines wait. (Without it, that read
// is the one wait, as an nginx worker waits for every open.) A lookup of
// cached dentries and an fstat of an in-memory inode do not wait. Any
// error is returned as is, for the caller to take the ordinary path.
func Lookup(dirfd int, path string, how *unix.OpenHow, st *unix.Stat_t) error {
	fd, err := lookup(dirfd, path, how, st)
	if err != nil {
		return err
	}
	Close(fd)
	return nil
}

// lookup is Lookup and OpenCached's walk: openat2(2) of path beneath dirfd
// with how, and fstat(2) of the result into st. It returns the
// descriptor, for the caller to close; on an error nothing is left open.
func lookup(dirfd int, path string, how *unix.OpenHow, st *unix.Stat_t) (int, error) {
	var buf [256]byte
	p, err := cString(&buf, path)
	if err != nil {
		return -1, err
	}
	r, _, e := unix.RawSyscall6(unix.SYS_OPENAT2, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(how)), unsafe.Sizeof(*how), 0, 0)
	if e != 0 {
		return -1, e
	}
	fd := int(r)
	if err := Fstat(fd, st); err != nil {
		Close(fd)
		return -1, err
	}
	return fd, nil
}

// Local reports whether the file system of fd is one whose lookups of
// cached dentries never wait (Lookup): ext4, XFS, Btrfs, F2FS, tmpfs,
// ramfs. Network and FUSE file systems revalidate dentries with their
// server, and others are not known here: false.
func Local(fd int) bool {
	var st unix.Statfs_t
	if unix.Fstatfs(fd, &st) != nil {
		return false
	}
	switch uint32(st.Type) {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.F2FS_SUPER_MAGIC, unix.TMPFS_MAGIC, unix.RAMFS_MAGIC:
		return true
	}
	return false
}
