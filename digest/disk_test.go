package digest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func openTestDisk(t *testing.T, dir string) *Disk {
	t.Helper()
	d, err := OpenDisk(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestDiskRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	d := openTestDisk(t, dir)
	k := Key{Dev: 0x803, Ino: 12345, Size: 99, MTime: 1e18, CTime: 1e18 + 5}
	s := Sum{0xab, 31: 0xcd}
	if _, ok, err := d.Load(k); ok || err != nil {
		t.Fatalf("empty cache: ok=%v, err=%v", ok, err)
	}
	if err := d.Store(k, s); err != nil {
		t.Fatal(err)
	}
	// A second process (here: a second Disk) reads what the first wrote.
	d2 := openTestDisk(t, dir)
	if got, ok, err := d2.Load(k); !ok || err != nil || got != s {
		t.Fatalf("Load = %v, %v, %v", got, ok, err)
	}
	for _, other := range []Key{{0x803, 12345, 100, 1e18, 1e18 + 5}, {0x803, 12345, 99, 1e18, 1e18 + 6}} {
		if _, ok, err := d2.Load(other); ok || err != nil {
			t.Errorf("another version %+v: ok=%v, err=%v", other, ok, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != ".lock" || names[1] != "803-3039.sha256" {
		t.Errorf("directory holds %q", names)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v", st.Mode())
	}
}

// TestDiskDamaged: an entry that is not what Store writes is a miss (with
// an error), and hashing replaces it.
func TestDiskDamaged(t *testing.T) {
	k := Key{Dev: 1, Ino: 2, Size: 3, MTime: 4, CTime: 5}
	good := appendEntry(nil, k, Sum{7})
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	for name, b := range map[string][]byte{
		"empty":     {},
		"truncated": good[:entryLen-1],
		"longer":    append(bytes.Clone(good), 0),
		"magic":     flip(0),
		"version":   flip(3),
		"key bit":   flip(20),
		"sum bit":   flip(50),
		"crc":       flip(entryLen - 1),
		"text":      []byte("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  f\n"),
	} {
		t.Run(name, func(t *testing.T) {
			d := openTestDisk(t, t.TempDir())
			if err := os.WriteFile(d.name(k), b, 0o600); err != nil {
				t.Fatal(err)
			}
			if s, ok, err := d.Load(k); ok || err == nil {
				t.Fatalf("Load = %v, %v, %v; want a miss with an error", s, ok, err)
			}
		})
	}
	// Through a Cache: the damaged entry is ignored and overwritten.
	dir := t.TempDir()
	d := openTestDisk(t, filepath.Join(dir, "cache"))
	p, want := writeFile(t, dir, 5000)
	st := statPath(t, p)
	if err := os.WriteFile(d.name(KeyOf(&st)), flip(50)[:entryLen], 0o600); err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t, d)
	if r := compute(t, c, p); r.Err != nil || r.Sum != want {
		t.Fatalf("Compute = %v, %v", r.Sum, r.Err)
	}
	if s := c.Stats(); s.Hashed != 1 || s.Loaded != 0 {
		t.Errorf("stats %+v, want one hash", s)
	}
	if got, ok, err := d.Load(KeyOf(&st)); !ok || err != nil || got != want {
		t.Errorf("entry after the hash: %v, %v, %v", got, ok, err)
	}
}

// TestDiskSurvivesRestart: a new Cache on the same directory (a restarted
// worker) loads the digest instead of hashing.
func TestDiskSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	p, want := writeFile(t, dir, 3*chunk)
	c1 := New(Options{Disk: openTestDisk(t, filepath.Join(dir, "cache")), Open: openPlain, Settle: testSettle})
	r := compute(t, c1, p)
	c1.Close()
	if r.Err != nil || r.Sum != want || c1.Stats().Hashed != 1 {
		t.Fatalf("first run: %v, %v, %+v", r.Sum, r.Err, c1.Stats())
	}
	c2 := newTestCache(t, openTestDisk(t, filepath.Join(dir, "cache")))
	fd, err := openPlain(p)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	st := statPath(t, p)
	if _, ok := c2.Lookup(fd, &st, p); ok {
		t.Fatal("a new cache hit before loading anything")
	}
	waitStats(t, c2, "the load", func(s Stats) bool { return s.Loaded == 1 })
	if got, ok := c2.Lookup(fd, &st, p); !ok || got != want {
		t.Fatalf("after the load: %v, %v", got, ok)
	}
	if s := c2.Stats(); s.Hashed != 0 {
		t.Errorf("restarted cache hashed: %+v", s)
	}
}

// TestDiskLock: one process at a time hashes a file; another that finds
// it locked leaves it (in the background) or waits and loads the result
// (Compute).
func TestDiskLock(t *testing.T) {
	dir := t.TempDir()
	cdir := filepath.Join(dir, "cache")
	d1, d2 := openTestDisk(t, cdir), openTestDisk(t, cdir)
	p, want := writeFile(t, dir, 1000)
	st := statPath(t, p)
	k := KeyOf(&st)
	unlock, ok, err := d1.TryLock(k)
	if !ok || err != nil {
		t.Fatalf("first lock: %v, %v", ok, err)
	}
	if _, ok, err := d2.TryLock(k); ok || err != nil {
		t.Fatalf("second lock while the first is held: %v, %v", ok, err)
	}
	if _, ok, err := d2.TryLock(Key{Dev: k.Dev, Ino: k.Ino + 1}); !ok || err != nil {
		t.Fatalf("another file's lock: %v, %v", ok, err)
	}
	c2 := newTestCache(t, d2)
	fd, err := openPlain(p)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	time.Sleep(time.Until(time.Unix(0, k.CTime).Add(testSettle))) // old enough to hash
	c2.Lookup(fd, &st, p)
	waitStats(t, c2, "the queue to empty", func(Stats) bool { return len(c2.jobs) == 0 && pendingLen(c2) == 0 })
	if s := c2.Stats(); s.Hashed != 0 {
		t.Fatalf("hashed a file locked by another process: %+v", s)
	}
	// The holder stores the digest and unlocks; Compute, waiting, loads it.
	res := make(chan Result, 1)
	go func() { res <- compute(t, c2, p) }()
	if err := d1.Store(k, want); err != nil {
		t.Fatal(err)
	}
	unlock()
	r := <-res
	if r.Err != nil || r.Sum != want {
		t.Fatalf("Compute = %v, %v", r.Sum, r.Err)
	}
	if s := c2.Stats(); s.Hashed != 0 || s.Loaded != 1 {
		t.Errorf("stats %+v, want the digest loaded, not hashed", s)
	}
}

func TestOpenDiskRefuses(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	link := filepath.Join(dir, "link")
	os.Mkdir(filepath.Join(dir, "real"), 0o700)
	os.Symlink("real", link)
	cases := map[string]string{"writable by others": open, "a file": file, "a symlink": link}
	if os.Geteuid() == 0 {
		other := filepath.Join(dir, "other")
		os.Mkdir(other, 0o700)
		os.Chown(other, 65534, 65534)
		cases["owned by another user"] = other
	}
	for name, p := range cases {
		if d, err := OpenDisk(p); err == nil {
			d.Close()
			t.Errorf("%s: OpenDisk accepted it", name)
		}
	}
}

func TestStaleTemps(t *testing.T) {
	dir := t.TempDir()
	d := openTestDisk(t, dir)
	old, fresh := filepath.Join(dir, ".tmp-1"), filepath.Join(dir, ".tmp-2")
	os.WriteFile(old, nil, 0o600)
	os.WriteFile(fresh, nil, 0o600)
	past := time.Now().Add(-2 * staleTemp)
	os.Chtimes(old, past, past)
	d.removeStaleTemps(time.Now())
	if _, err := os.Stat(old); err == nil {
		t.Error("stale temporary file kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("fresh temporary file (another process's write in progress) removed")
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(appendEntry(nil, Key{Dev: 1, Ino: 2, Size: 3, MTime: 4, CTime: 5}, Sum{6}))
	f.Add([]byte("ZSD\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, s, err := decodeEntry(b)
		if err != nil {
			return
		}
		if k.Size < 0 || !bytes.Equal(appendEntry(nil, k, s), b) {
			t.Fatalf("accepted %x as %+v %v", b, k, s)
		}
	})
}
