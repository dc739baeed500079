package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
	"github.com/zfs-serve/zfs-serve/wire/wiretest"
)

// Digests end to end: Repr-Digest over HTTP after one background pass,
// kept across a restart in the on-disk cache, renewed for a file changed
// in place, warmed by zctl digest, and in native STAT/GET responses.

// sha256sum runs the system's sha256sum on path and returns the hex digest.
func sha256sum(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		t.Fatalf("sha256sum: %v", err)
	}
	return strings.Fields(string(out))[0]
}

// reprDigest is the Repr-Digest value for a hex SHA-256.
func reprDigest(t *testing.T, hexSum string) string {
	t.Helper()
	b, err := hex.DecodeString(hexSum)
	if err != nil {
		t.Fatal(err)
	}
	return "sha-256=:" + base64.StdEncoding.EncodeToString(b) + ":"
}

// plainHTTP makes a new connection per request, so that requests spread
// over the workers.
var plainHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}

// headDigest returns the Repr-Digest of a HEAD of path.
func headDigest(t *testing.T, d *Daemon, path string) string {
	t.Helper()
	resp, err := plainHTTP.Head("http://" + d.Addr + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("HEAD %s: %s", path, resp.Status)
	}
	return resp.Header.Get("Repr-Digest")
}

// waitDigest polls with HEAD until path's Repr-Digest is want; every
// value seen meanwhile must be none or want (never another file's or an
// older version's). It returns how long that took.
func waitDigest(t *testing.T, d *Daemon, path, want string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := headDigest(t, d, path)
		if got == want {
			return time.Since(start)
		}
		if got != "" {
			t.Fatalf("HEAD %s: Repr-Digest %q, want %q (or none yet)", path, got, want)
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("HEAD %s: no Repr-Digest after %v\n%s", path, time.Since(start), tail(d.Log(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpGetSHA(t *testing.T, d *Daemon, path string) (string, http.Header) {
	t.Helper()
	resp, err := plainHTTP.Get("http://" + d.Addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s, %v", path, resp.Status, err)
	}
	return hex.EncodeToString(h.Sum(nil)), resp.Header
}

// TestDigestHTTPAndRestart: a file downloaded once gets its Repr-Digest
// after one hash (the second worker loads it from the on-disk cache in
// $CACHE_DIRECTORY, as under systemd), and a restarted daemon serves it
// from that cache without hashing again.
func TestDigestHTTPAndRestart(t *testing.T) {
	cacheDir := shortTempDir(t)
	root := filepath.Join(shortTempDir(t), "root")
	sum := WriteRandom(t, filepath.Join(root, "rel", "big.bin"), 5<<20+123)
	if s := sha256sum(t, filepath.Join(root, "rel", "big.bin")); s != sum {
		t.Fatalf("sha256sum %s, written %s", s, sum)
	}
	want := reprDigest(t, sum)
	opts := DaemonOpts{Root: root, Workers: 2, Config: "log_level = \"debug\"\n", Env: []string{"CACHE_DIRECTORY=" + cacheDir}}
	d := StartDaemon(t, opts)
	if got, _ := httpGetSHA(t, d, "/rel/big.bin"); got != sum {
		t.Fatalf("GET: sha256 %s, want %s", got, sum)
	}
	took := waitDigest(t, d, "/rel/big.bin", want)
	t.Logf("Repr-Digest after %v", took)
	// Both workers answer with it (each HEAD is a new connection), and
	// the file was hashed once: the other worker loaded the digest.
	for range 8 {
		if got := headDigest(t, d, "/rel/big.bin"); got != "" && got != want {
			t.Fatalf("Repr-Digest %q, want %q", got, want)
		}
	}
	_, hdr := httpGetSHA(t, d, "/rel/big.bin")
	if hdr.Get("Repr-Digest") != "" && hdr.Get("Repr-Digest") != want {
		t.Fatalf("GET: Repr-Digest %q", hdr.Get("Repr-Digest"))
	}
	st := d.MustStatus()
	if st.Totals.DigestsHashed != 1 {
		t.Fatalf("digests_hashed = %d across the workers, want 1 (one pass)", st.Totals.DigestsHashed)
	}
	d.LogHas(5*time.Second, "digest computed")
	if n := strings.Count(d.Log(), "digest computed"); n != 1 {
		t.Fatalf("%d \"digest computed\" log lines, want 1", n)
	}
	ents, _ := os.ReadDir(filepath.Join(cacheDir, "sha256"))
	if len(ents) != 3 { // the entry, .lock and .pruned
		t.Fatalf("cache directory holds %d files, want the entry, the lock file and the prune stamp", len(ents))
	}

	d.Zctl("drain")
	if code := d.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("drain: exit %d", code)
	}
	d2 := StartDaemon(t, opts)
	took = waitDigest(t, d2, "/rel/big.bin", want)
	t.Logf("after the restart: Repr-Digest after %v", took)
	st = d2.MustStatus()
	if st.Totals.DigestsHashed != 0 || st.Totals.DigestsLoaded == 0 {
		t.Fatalf("after the restart: digests_hashed %d, digests_loaded %d; want 0 and at least 1", st.Totals.DigestsHashed, st.Totals.DigestsLoaded)
	}
	d2.LogHas(5*time.Second, "digest loaded from the cache")
	if log := d2.Log(); strings.Contains(log, "digest computed") || !strings.Contains(log, "digest loaded from the cache") {
		t.Fatalf("after the restart the file was hashed again, or not loaded:\n%s", tail(log, 30))
	}
}

// TestDigestModifiedInPlace: a file rewritten in place (same inode, same
// size) loses its digest at once, and gets the new one after a pass; the
// old one is never served for the new content.
func TestDigestModifiedInPlace(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Workers: 2, Config: "digest_cache = \"memory\"\n"})
	p := filepath.Join(d.Root, "f.bin")
	old := WriteRandom(t, p, 1<<20)
	httpGetSHA(t, d, "/f.bin")
	waitDigest(t, d, "/f.bin", reprDigest(t, old))
	var ino uint64
	if fi, err := os.Stat(p); err == nil {
		ino = fi.Sys().(*syscall.Stat_t).Ino
	}
	b := make([]byte, 1<<20)
	rand.Read(b)
	f, err := os.OpenFile(p, os.O_WRONLY, 0) // in place: no truncation, same size
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(p); fi.Sys().(*syscall.Stat_t).Ino != ino || fi.Size() != 1<<20 {
		t.Fatal("the rewrite changed the inode or the size")
	}
	newSum := sha256sum(t, p)
	// Every response from now on carries no digest, or the new one:
	// waitDigest fails on any other value.
	took := waitDigest(t, d, "/f.bin", reprDigest(t, newSum))
	t.Logf("new Repr-Digest after %v", took)
	if got, hdr := httpGetSHA(t, d, "/f.bin"); got != newSum || (hdr.Get("Repr-Digest") != "" && hdr.Get("Repr-Digest") != reprDigest(t, newSum)) {
		t.Fatalf("GET after the change: sha256 %s, Repr-Digest %q", got, hdr.Get("Repr-Digest"))
	}
}

// TestZctlDigest: zctl digest hashes a file nobody has requested and
// prints it as sha256sum does; every worker then announces it at once,
// over HTTP and to a native STAT/GET with FlagDigest; an old (version 1)
// client and zfetch see nothing new.
func TestZctlDigest(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Workers: 2, Config: "digest_cache = \"memory\"\n"})
	p := filepath.Join(d.Root, "pub", "new.iso")
	sum := WriteRandom(t, p, 3<<20+5)
	start := time.Now()
	r := d.Zctl("digest", "--timeout", "60s", "/pub/new.iso")
	t.Logf("zctl digest took %v", time.Since(start))
	if r.Code != 0 || r.Stdout != sum+"  /pub/new.iso\n" || sha256sum(t, p) != sum {
		t.Fatalf("zctl digest: exit %d\nstdout %q\nstderr %s", r.Code, r.Stdout, r.Stderr)
	}
	// Both workers know it now (one hashed it, the other was told).
	for range 8 {
		if got := headDigest(t, d, "/pub/new.iso"); got != reprDigest(t, sum) {
			t.Fatalf("HEAD after zctl digest: Repr-Digest %q, want %q", got, reprDigest(t, sum))
		}
	}
	if st := d.MustStatus(); st.Totals.DigestsHashed != 1 {
		t.Fatalf("digests_hashed %d, want 1", st.Totals.DigestsHashed)
	}
	// Native, at the wire level: version 2 with FlagDigest gets it...
	c := dial(t, d.Addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for _, q := range []wire.Request{
		{Op: wire.OpStat, Path: "/pub/new.iso", Flags: wire.FlagDigest},
		{Op: wire.OpGet, Path: "/pub/new.iso", Flags: wire.FlagDigest},
		{Op: wire.OpGet, Path: "/pub/new.iso", Offset: 1000, Length: 10, Flags: wire.FlagDigest},
	} {
		if err := wire.WriteRequest(c, &q); err != nil {
			t.Fatal(err)
		}
		resp, err := wire.ReadResponse(br)
		if err != nil || resp.Status != wire.StatusOK {
			t.Fatalf("%v: %+v, %v", q.Op, resp, err)
		}
		if resp.Flags&wire.FlagDigest == 0 || hex.EncodeToString(resp.Digest[:]) != sum {
			t.Fatalf("%v: flags %d, digest %x; want %s", q.Op, resp.Flags, resp.Digest, sum)
		}
		h := sha256.New()
		if _, err := io.CopyN(h, br, resp.BodyLen); err != nil {
			t.Fatal(err)
		}
		if q.Op == wire.OpGet && q.Offset == 0 && hex.EncodeToString(h.Sum(nil)) != sum {
			t.Fatal("GET body does not match the digest")
		}
	}
	// ...and an old client on the same connection gets version 1 frames.
	c.Write(wiretest.AppendRequestV1(nil, &wiretest.Request{Op: 2, Path: "/pub/new.iso"}))
	if old, err := wiretest.ReadResponseV1(br); err != nil || old.Status != 0 || old.Size != 3<<20+5 {
		t.Fatalf("old client: %+v, %v", old, err)
	}
	// zfetch (version 1 requests) downloads it as before.
	out := filepath.Join(t.TempDir(), "got.iso")
	if r := Zfetch(t, "-q", "-o", out, d.URL("/pub/new.iso")); r.Code != 0 || FileSHA256(t, out) != sum {
		t.Fatalf("zfetch: exit %d: %s", r.Code, r.Stderr)
	}

	// Files that cannot be hashed: exit 1, a line each on stderr, the
	// others printed.
	r = d.Zctl("digest", "/pub/new.iso", "/missing", "/../etc/passwd", "/pub")
	if r.Code != 1 || r.Stdout != sum+"  /pub/new.iso\n" || strings.Count(r.Stderr, "\n") != 4 ||
		!strings.Contains(r.Stderr, "not found: /missing") || !strings.Contains(r.Stderr, "3 of 4 files could not be hashed") {
		t.Fatalf("zctl digest with bad paths: exit %d\nstdout %q\nstderr %s", r.Code, r.Stdout, r.Stderr)
	}
}

// TestDigestsOff: digests = false announces nothing and refuses zctl digest.
func TestDigestsOff(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Workers: 1, Config: "digests = false\n"})
	WriteRandom(t, filepath.Join(d.Root, "f"), 1000)
	r := d.Zctl("digest", "/f")
	if r.Code != 1 || !strings.Contains(r.Stderr, "digests are turned off") {
		t.Fatalf("zctl digest: exit %d: %s", r.Code, r.Stderr)
	}
	if got := headDigest(t, d, "/f"); got != "" {
		t.Fatalf("Repr-Digest %q with digests = false", got)
	}
}
