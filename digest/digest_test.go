package digest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testSettle is long enough for any file system timestamp granularity the
// tests run on (a jiffy) and short enough not to slow them.
const testSettle = 50 * time.Millisecond

func openPlain(p string) (int, error) { return unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0) }

func newTestCache(t *testing.T, d *Disk) *Cache {
	t.Helper()
	c := New(Options{Disk: d, Open: openPlain, Settle: testSettle})
	t.Cleanup(c.Close)
	return c
}

// writeFile writes n random bytes and returns the path and their SHA-256.
func writeFile(t *testing.T, dir string, n int) (string, Sum) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, sha256.Sum256(b)
}

func statPath(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func compute(t *testing.T, c *Cache, p string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Compute(ctx, p)
}

// waitStats polls c's totals until cond holds (the hashing goroutine
// works in the background).
func waitStats(t *testing.T, c *Cache, what string, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := c.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stats %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMemoryKeys(t *testing.T) {
	k := Key{Dev: 1, Ino: 2, Size: 3, MTime: 4, CTime: 5}
	s := Sum{1}
	m := memory{max: 8, index: map[fileID]int32{}}
	m.put(k, s)
	for _, tc := range []struct {
		name string
		k    Key
		hit  bool
	}{
		{"same", k, true},
		{"size", Key{1, 2, 4, 4, 5}, false},
		{"mtime", Key{1, 2, 3, 9, 5}, false},
		{"ctime", Key{1, 2, 3, 4, 6}, false},
		{"inode", Key{1, 3, 3, 4, 5}, false},
		{"device", Key{2, 2, 3, 4, 5}, false},
	} {
		if got, ok := m.get(tc.k); ok != tc.hit || (ok && got != s) {
			t.Errorf("%s: get = %v, %v; want hit=%v", tc.name, got, ok, tc.hit)
		}
	}
	// A new version of the file replaces the old one.
	k2 := k
	k2.CTime++
	m.put(k2, Sum{2})
	if _, ok := m.get(k); ok || m.len() != 1 {
		t.Errorf("old version still served, or %d entries", m.len())
	}
}

func TestMemoryClock(t *testing.T) {
	m := memory{max: 4, index: map[fileID]int32{}}
	key := func(i int) Key { return Key{Ino: uint64(i)} }
	for i := range 4 {
		m.put(key(i), Sum{byte(i)})
	}
	// Every entry is referenced: the hand clears them all and evicts the
	// first; then the one used since survives the next eviction.
	m.put(key(4), Sum{4})
	if _, ok := m.get(key(0)); ok {
		t.Fatal("key 0 not evicted")
	}
	m.get(key(1))
	m.put(key(5), Sum{5})
	if _, ok := m.get(key(1)); !ok {
		t.Error("recently used key 1 evicted")
	}
	if _, ok := m.get(key(2)); ok {
		t.Error("key 2, unused since the hand passed, kept")
	}
	if m.len() != 4 {
		t.Errorf("%d entries, max 4", m.len())
	}
}

// TestMemorySize backs the documented bound: DefaultEntries digests take
// about 5 MiB.
func TestMemorySize(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := memory{max: DefaultEntries, index: map[fileID]int32{}}
	for i := range DefaultEntries {
		m.put(Key{Ino: uint64(i)}, Sum{})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d entries: %.1f MiB (%d bytes each)", m.len(), float64(used)/(1<<20), used/int64(m.len()))
	if used > 8<<20 {
		t.Errorf("%d entries take %d bytes", m.len(), used)
	}
	runtime.KeepAlive(&m)
}

func TestLookupHit(t *testing.T) {
	c := newTestCache(t, nil)
	p, want := writeFile(t, t.TempDir(), 3*chunk+7)
	fd, err := openPlain(p)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	st := statPath(t, p)
	if _, ok := c.Lookup(fd, &st, p); ok {
		t.Fatal("hit before any hash")
	}
	// As requests do: each miss queues the file (a fresh one is left for a
	// request after testSettle).
	waitStats(t, c, "the background hash", func(s Stats) bool { c.Lookup(fd, &st, p); return s.Hashed == 1 })
	got, ok := c.Lookup(fd, &st, p)
	if !ok || got != want {
		t.Fatalf("Lookup = %v, %v; want %v", got, ok, want)
	}
	if s := c.Stats(); s.HashedBytes != uint64(st.Size) {
		t.Errorf("hashed %d bytes, the file has %d", s.HashedBytes, st.Size)
	}
	if n := testing.AllocsPerRun(100, func() { c.Lookup(fd, &st, p) }); n != 0 {
		t.Errorf("a hit allocates %.0f times", n)
	}
}

// TestIdentityChange: a file changed in place (same size) is a miss until
// it is hashed again, and the old digest is never returned for it.
func TestIdentityChange(t *testing.T) {
	c := newTestCache(t, nil)
	dir := t.TempDir()
	p, old := writeFile(t, dir, 1000)
	if r := compute(t, c, p); r.Err != nil || r.Sum != old {
		t.Fatalf("first version: %v, %v", r.Sum, r.Err)
	}
	b := make([]byte, 1000)
	rand.Read(b)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	st := statPath(t, p)
	if s, ok := c.Known(&st); ok {
		t.Fatalf("changed file: Known = %v (the old digest is %v)", s, old)
	}
	r := compute(t, c, p)
	if r.Err != nil || r.Sum != sha256.Sum256(b) {
		t.Fatalf("second version: %v, %v", r.Sum, r.Err)
	}
	if s, ok := c.Known(&st); !ok || s != r.Sum {
		t.Fatalf("Known after the new hash = %v, %v", s, ok)
	}
}

// TestChangeWhileHashing: a file written in place (same size) while it is
// hashed gets no digest for either version in the background...
func TestChangeWhileHashing(t *testing.T) {
	c := newTestCache(t, nil)
	p, _ := writeFile(t, t.TempDir(), 4*chunk)
	before := statPath(t, p)
	fd, err := openPlain(p)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	hashing := make(chan struct{})
	changed := make(chan struct{})
	var once sync.Once
	c.afterChunk = func() { once.Do(func() { close(hashing); <-changed }) }
	// Old enough to be hashed at once.
	time.Sleep(time.Until(time.Unix(0, KeyOf(&before).CTime).Add(testSettle)))
	c.Lookup(fd, &before, p)
	<-hashing
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteAt([]byte("changed"), 0)
	w.Close()
	close(changed)
	waitStats(t, c, "the failed hash", func(s Stats) bool { return s.Failed == 1 })
	after := statPath(t, p)
	if KeyOf(&after) == KeyOf(&before) {
		t.Fatal("the write did not change the key")
	}
	for _, st := range []*unix.Stat_t{&before, &after} {
		if s, ok := c.Known(st); ok {
			t.Errorf("digest %v recorded for a file that changed while hashed", s)
		}
	}
	if s := c.Stats(); s.Hashed != 0 {
		t.Errorf("stats %+v", s)
	}
}

// ...and Compute, which wants an answer, hashes the new version.
func TestComputeAfterChange(t *testing.T) {
	c := newTestCache(t, nil)
	p, _ := writeFile(t, t.TempDir(), 4*chunk)
	once := false
	c.afterChunk = func() {
		if !once {
			once = true
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				return
			}
			w.WriteAt([]byte("changed"), 0)
			w.Close()
		}
	}
	r := compute(t, c, p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if r.Err != nil || r.Sum != sha256.Sum256(b) {
		t.Fatalf("Compute = %v, %v; want the new content's %x", r.Sum, r.Err, sha256.Sum256(b))
	}
	if s := c.Stats(); s.Failed != 1 || s.Hashed != 1 {
		t.Errorf("stats %+v, want one failed pass and one hash", s)
	}
}

// TestSettle: nothing is hashed until its last change is Settle old.
func TestSettle(t *testing.T) {
	for _, tc := range []struct {
		age  time.Duration
		want bool
	}{
		{-time.Second, false}, // ctime in the future (clock stepped back)
		{0, false},
		{testSettle - 1, false},
		{testSettle, true},
		{time.Hour, true},
	} {
		now := time.Unix(1000, 0)
		k := Key{CTime: now.Add(-tc.age).UnixNano()}
		if got := settled(k, now, testSettle); got != tc.want {
			t.Errorf("age %v: settled = %v, want %v", tc.age, got, tc.want)
		}
	}
	c := New(Options{Open: openPlain, Settle: 300 * time.Millisecond})
	defer c.Close()
	p, want := writeFile(t, t.TempDir(), 10)
	st := statPath(t, p)
	fd, err := openPlain(p)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if time.Since(time.Unix(0, KeyOf(&st).CTime)) < 300*time.Millisecond {
		// The background pass leaves a fresh file for a later request.
		c.Lookup(fd, &st, p)
		waitStats(t, c, "the queue to empty", func(Stats) bool { return len(c.jobs) == 0 && pendingLen(c) == 0 })
		if _, ok := c.Known(&st); ok && time.Since(time.Unix(0, KeyOf(&st).CTime)) < 300*time.Millisecond {
			t.Fatal("a fresh file was hashed")
		}
	}
	r := compute(t, c, p)
	done := time.Now()
	if r.Err != nil || r.Sum != want {
		t.Fatalf("Compute = %v, %v", r.Sum, r.Err)
	}
	if age := done.Sub(time.Unix(0, r.Key.CTime)); age < 300*time.Millisecond {
		t.Fatalf("hashed %v after the file's last change, settle is 300ms", age)
	}
}

func pendingLen(c *Cache) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

func TestComputeErrors(t *testing.T) {
	c := newTestCache(t, nil)
	dir := t.TempDir()
	if r := compute(t, c, filepath.Join(dir, "missing")); r.Err == nil {
		t.Error("missing file: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := c.Compute(ctx, filepath.Join(dir, "x")); r.Err == nil {
		t.Error("cancelled context: no error")
	}
}

func TestClose(t *testing.T) {
	c := New(Options{Open: openPlain, Settle: testSettle})
	p, _ := writeFile(t, t.TempDir(), 100)
	fd, err := openPlain(p)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	st := statPath(t, p)
	c.Lookup(fd, &st, p)
	c.Close()
	if r := compute(t, c, p); r.Err != ErrClosed {
		t.Errorf("Compute after Close: %v", r.Err)
	}
}

// BenchmarkLookupHit is what a response of a file whose digest is known
// pays for it.
func BenchmarkLookupHit(b *testing.B) {
	c := New(Options{Open: openPlain})
	defer c.Close()
	var st unix.Stat_t
	st.Ino, st.Size = 7, 100
	c.Learn(KeyOf(&st), Sum{1})
	for i := range 10000 { // a table that is not trivially small
		c.Learn(Key{Ino: uint64(100 + i)}, Sum{})
	}
	for b.Loop() {
		if _, ok := c.Lookup(-1, &st, "/f"); !ok {
			b.Fatal("miss")
		}
	}
}
