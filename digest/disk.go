package digest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Disk is the on-disk digest cache: a directory with one small file per
// hashed file, named DEV-INO.sha256 (hex), holding its key and digest.
// Entries are written to a temporary file and renamed into place, so a
// reader sees a whole entry or none, and validated on read (magic,
// version, length, CRC-32C, and the key must be the one asked for: an
// entry of an older version of the file is a miss, overwritten by the next
// hash). A damaged entry is a miss too, never a digest. Nothing is
// fsynced: after a crash an entry may be lost or damaged, and the file is
// hashed again.
//
// The lock file ".lock" carries one byte-range lock per file being hashed
// (open file description locks, F_OFD_SETLK), so that processes sharing
// the directory hash a file once; the kernel releases a dead process's
// locks.
//
// Entries of files since deleted or changed stay until the next prune
// (prune.go, once a day); any entry may be removed at any time, e.g.
// systemctl clean --what=cache zfs-serve while stopped.
type Disk struct {
	dir  string
	lock int // the lock file's descriptor
}

// entryLen is the size of an entry file: magic "ZSD" and version 1,
// dev, ino, size, mtime, ctime (8 bytes each), the digest, CRC-32C of
// everything before it.
const entryLen = 4 + 5*8 + 32 + 4

var entryMagic = [4]byte{'Z', 'S', 'D', 1}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// staleTemp is how old a temporary file must be before OpenDisk removes
// it (one left by a crash between create and rename).
const staleTemp = time.Hour

// OpenDisk opens (creating it, mode 0700, if missing) the cache directory
// dir. It must be a directory owned by this process's user and writable
// by nobody else: whoever can write there decides which digests clients
// are told.
func OpenDisk(dir string) (*Disk, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("digest cache: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return nil, fmt.Errorf("digest cache %s: %w", dir, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return nil, fmt.Errorf("digest cache %s is not a directory", dir)
	case int(st.Uid) != os.Geteuid():
		return nil, fmt.Errorf("digest cache %s is owned by uid %d, not by this process's uid %d", dir, st.Uid, os.Geteuid())
	case st.Mode&0o022 != 0:
		return nil, fmt.Errorf("digest cache %s is writable by group or others (mode %o)", dir, st.Mode&0o7777)
	}
	fd, err := unix.Open(filepath.Join(dir, ".lock"), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("digest cache: lock file: %w", err)
	}
	d := &Disk{dir: dir, lock: fd}
	d.removeStaleTemps(time.Now())
	return d, nil
}

// Dir is the cache directory.
func (d *Disk) Dir() string { return d.dir }

// Close closes the lock file (releasing this process's locks).
func (d *Disk) Close() error { return unix.Close(d.lock) }

func (d *Disk) name(k Key) string {
	return filepath.Join(d.dir, fmt.Sprintf("%x-%x.sha256", k.Dev, k.Ino))
}

// Load returns k's digest if the directory has an entry for exactly that
// version of the file. A damaged entry is an error (and a miss).
func (d *Disk) Load(k Key) (Sum, bool, error) {
	fd, err := unix.Open(d.name(k), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENOENT) {
		return Sum{}, false, nil
	}
	if err != nil {
		return Sum{}, false, fmt.Errorf("digest cache: %w", err)
	}
	f := os.NewFile(uintptr(fd), d.name(k))
	defer f.Close()
	var b [entryLen + 1]byte
	n, err := io.ReadFull(f, b[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return Sum{}, false, fmt.Errorf("digest cache: %w", err)
	}
	got, s, err := decodeEntry(b[:n])
	if err != nil {
		return Sum{}, false, fmt.Errorf("digest cache %s: %w", f.Name(), err)
	}
	if got != k {
		return Sum{}, false, nil // an older version of the file
	}
	return s, true, nil
}

// Store records k's digest, replacing the file's previous entry.
func (d *Disk) Store(k Key, s Sum) error {
	f, err := os.CreateTemp(d.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("digest cache: %w", err)
	}
	_, err = f.Write(appendEntry(make([]byte, 0, entryLen), k, s))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), d.name(k))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("digest cache: %w", err)
	}
	return nil
}

// TryLock takes k's file's lock unless another process (or another Disk
// on the same directory) holds it.
func (d *Disk) TryLock(k Key) (unlock func(), ok bool, err error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: lockOffset(k), Len: 1}
	for {
		err = unix.FcntlFlock(uintptr(d.lock), unix.F_OFD_SETLK, &lk)
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EAGAIN || err == unix.EACCES {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("digest cache: lock: %w", err)
	}
	return func() {
		un := lk
		un.Type = unix.F_UNLCK
		unix.FcntlFlock(uintptr(d.lock), unix.F_OFD_SETLK, &un)
	}, true, nil
}

// lockOffset is the byte of the lock file that stands for k's file. Two
// files sharing one (a 2^-62 chance) only wait for each other.
func lockOffset(k Key) int64 {
	h := fnv.New64a()
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], k.Dev)
	binary.BigEndian.PutUint64(b[8:], k.Ino)
	h.Write(b[:])
	return int64(h.Sum64() & (1<<62 - 1))
}

func (d *Disk) removeStaleTemps(now time.Time) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) > staleTemp {
			os.Remove(filepath.Join(d.dir, e.Name()))
		}
	}
}

func appendEntry(b []byte, k Key, s Sum) []byte {
	start := len(b)
	b = append(b, entryMagic[:]...)
	b = binary.BigEndian.AppendUint64(b, k.Dev)
	b = binary.BigEndian.AppendUint64(b, k.Ino)
	b = binary.BigEndian.AppendUint64(b, uint64(k.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(k.MTime))
	b = binary.BigEndian.AppendUint64(b, uint64(k.CTime))
	b = append(b, s[:]...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// errDamaged wraps every reason decodeEntry refuses an entry.
var errDamaged = errors.New("damaged entry")

func decodeEntry(b []byte) (Key, Sum, error) {
	var k Key
	var s Sum
	if len(b) != entryLen {
		return k, s, fmt.Errorf("%w: %d bytes, want %d", errDamaged, len(b), entryLen)
	}
	if [4]byte(b[:4]) != entryMagic {
		return k, s, fmt.Errorf("%w: bad magic or version %q", errDamaged, b[:4])
	}
	if crc32.Checksum(b[:entryLen-4], castagnoli) != binary.BigEndian.Uint32(b[entryLen-4:]) {
		return k, s, fmt.Errorf("%w: checksum mismatch", errDamaged)
	}
	k.Dev = binary.BigEndian.Uint64(b[4:])
	k.Ino = binary.BigEndian.Uint64(b[12:])
	k.Size = int64(binary.BigEndian.Uint64(b[20:]))
	k.MTime = int64(binary.BigEndian.Uint64(b[28:]))
	k.CTime = int64(binary.BigEndian.Uint64(b[36:]))
	if k.Size < 0 {
		return k, s, fmt.Errorf("%w: negative size", errDamaged)
	}
	copy(s[:], b[44:76])
	return k, s, nil
}
