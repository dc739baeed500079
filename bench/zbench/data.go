package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// makeData writes the benchmark's files: one big file, NSmall files of
// 4 KiB and NMid files of 1 MiB, random bytes (nothing compresses or
// dedups them), fsynced so that no writeback runs during the measurements,
// then read once so every page is in the page cache. It returns a line
// for the report saying how much of it is resident.
func (b *bench) makeData() (string, error) {
	if err := os.MkdirAll(filepath.Join(b.data, "small"), 0o755); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(b.data, "mid"), 0o755); err != nil {
		return "", err
	}
	rng := rand.NewChaCha8([32]byte{'z', 'f', 's'})
	buf := make([]byte, 1<<20)
	write := func(name string, size int64) error {
		f, err := os.Create(name)
		if err != nil {
			return err
		}
		defer f.Close()
		for left := size; left > 0; {
			n := min(left, int64(len(buf)))
			rng.Read(buf[:n])
			if _, err := f.Write(buf[:n]); err != nil {
				return err
			}
			left -= n
		}
		if err := f.Sync(); err != nil {
			return err
		}
		return f.Close()
	}
	files := []string{filepath.Join(b.data, "big.bin")}
	if err := write(files[0], b.p.BigSize); err != nil {
		return "", err
	}
	for i := range b.p.NSmall {
		name := filepath.Join(b.data, "small", fmt.Sprintf("%04d.bin", i))
		if err := write(name, 4096); err != nil {
			return "", err
		}
		files = append(files, name)
	}
	for i := range b.p.NMid {
		name := filepath.Join(b.data, "mid", fmt.Sprintf("%03d.bin", i))
		if err := write(name, 1<<20); err != nil {
			return "", err
		}
		files = append(files, name)
	}
	var total, resident int64
	for _, name := range files {
		t, r, err := cacheFile(name)
		if err != nil {
			return "", err
		}
		total += t
		resident += r
	}
	return fmt.Sprintf("%d files, %.1f MiB, %.1f%% resident in the page cache (mincore) after writing, fsync and one read",
		len(files), float64(total)/(1<<20), 100*float64(resident)/float64(max(total, 1))), nil
}

// cacheFile reads name once (so its pages are cached) and returns its size
// and how many of its bytes are resident, by mincore(2).
func cacheFile(name string) (size, resident int64, err error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0, 0, err
	}
	size = st.Size()
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, 0, err
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	var sum byte
	for i := 0; i < len(m); i += page {
		sum += m[i] // touch every page
	}
	_ = sum
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return 0, 0, fmt.Errorf("mincore %s: %w", name, e)
	}
	for i, v := range vec {
		if v&1 != 0 {
			resident += int64(min(page, len(m)-i*page))
		}
	}
	return size, resident, nil
}
