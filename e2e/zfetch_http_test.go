package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// zfetch against real HTTP servers: nginx (plain and TLS, one and two
// mirrors) and zfs-serve's own HTTP port. Bytes are checked by sha256; what
// the server sent is read from nginx's access log ($bytes_sent and
// $body_bytes_sent per response).

// lastGET is the access log's last GET of uri.
func lastGET(n *Nginx, uri string) (accessLine, bool) {
	var last accessLine
	found := false
	for _, a := range n.Access() {
		if a.Method == "GET" && a.URI == uri {
			last, found = a, true
		}
	}
	return last, found
}

// waitLogged waits until nginx has logged count GETs of uri (it logs a
// response when it ends, also one cut by the client).
func waitLogged(t *testing.T, n *Nginx, uri string, count int) {
	t.Helper()
	ok := waitFor(10*time.Second, func() bool {
		k := 0
		for _, a := range n.Access() {
			if a.Method == "GET" && a.URI == uri {
				k++
			}
		}
		return k >= count
	})
	if !ok {
		t.Fatalf("nginx did not log %d GETs of %s:\n%v", count, uri, n.Access())
	}
}

func countGET(n *Nginx, uri string) int {
	k := 0
	for _, a := range n.Access() {
		if a.Method == "GET" && a.URI == uri {
			k++
		}
	}
	return k
}

// TestZfetchHTTPNginx: plain downloads from nginx, byte-exact: one
// connection in every receive mode, -x 4, to stdout, and -r through
// nginx's JSON autoindex.
func TestZfetchHTTPNginx(t *testing.T) {
	const size = 40<<20 + 123
	n := StartNginx(t, NginxOpts{})
	sum := WriteRandom(t, filepath.Join(n.Root, "big.bin"), size)
	out := t.TempDir()
	for _, args := range [][]string{{"--recv", "copy"}, {"--recv", "splice"}, {"--recv", "mmap"}, {"-x", "4"}, {"-x", "4", "--recv", "mmap"}} {
		dst := filepath.Join(out, "big-"+strings.Join(args, ""))
		r := Zfetch(t, append(append([]string{"-q"}, args...), "-o", dst, n.URL("http", "/big.bin"))...)
		if r.Code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.Code, r.Stderr)
		}
		if got := FileSHA256(t, dst); got != sum {
			t.Fatalf("%v: sha256 %s, want %s", args, got, sum)
		}
	}
	if a, _ := lastGET(n, "/big.bin"); a.Range == "" {
		t.Errorf("-x 4 asked no ranges: %+v", n.Access())
	}
	// To stdout.
	r := Zfetch(t, "-q", "-o", "-", n.URL("http", "/big.bin"))
	if r.Code != 0 || len(r.Stdout) != size {
		t.Fatalf("-o -: exit %d, %d bytes: %s", r.Code, len(r.Stdout), r.Stderr)
	}
	// A tree, from nginx's autoindex_format json.
	want := map[string]string{}
	for _, p := range []string{"tree/a.bin", "tree/sub/b.bin", "tree/sub/deeper/c d.bin"} {
		full := filepath.Join(n.Root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		want[p] = WriteRandom(t, full, 100000+int64(len(p)))
	}
	os.MkdirAll(filepath.Join(n.Root, "tree/empty"), 0o755)
	r = Zfetch(t, "-q", "-r", "-O", out, n.URL("http", "/tree/"))
	if r.Code != 0 {
		t.Fatalf("-r: exit %d: %s", r.Code, r.Stderr)
	}
	for p, s := range want {
		if got := FileSHA256(t, filepath.Join(out, p)); got != s {
			t.Errorf("-r: %s: sha256 %s, want %s", p, got, s)
		}
	}
	if fi, err := os.Stat(filepath.Join(out, "tree/empty")); err != nil || !fi.IsDir() {
		t.Errorf("-r: the empty directory was not made: %v", err)
	}
}

// TestZfetchHTTPResume: a download interrupted (Ctrl-C) and continued with
// -c asks nginx for the rest with a Range and If-Range on the ETag, and
// nginx's access log shows that only the rest was sent. A file replaced
// on the server between the two runs is fetched again from the start.
func TestZfetchHTTPResume(t *testing.T) {
	const size = 48 << 20
	n := StartNginx(t, NginxOpts{})
	path := filepath.Join(n.Root, "big.bin")
	sum := WriteRandom(t, path, size)
	for _, replaced := range []bool{false, true} {
		name := map[bool]string{false: "same", true: "replaced"}[replaced]
		t.Run(name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "big.bin")
			url := n.URL("http", "/big.bin")
			b := startZfetch(t, "-q", "--limit-rate", "16M", "-o", dst, url)
			waitProgress(t, b, dst, 8<<20)
			b.signal(syscall.SIGINT)
			if r := b.wait(t, 10*time.Second); r.Code != 130 {
				t.Fatalf("interrupted run: exit %d: %s", r.Code, r.Stderr)
			}
			had := progressOf(dst)
			gets := countGET(n, "/big.bin")
			waitLogged(t, n, "/big.bin", gets)
			want := sum
			if replaced {
				want = replaceFile(t, path, size)
				sum = want // for the next subtest
			}
			r := Zfetch(t, "-c", "--json", "-o", dst, url)
			if r.Code != 0 {
				t.Fatalf("zfetch -c: exit %d: %s", r.Code, r.Stderr)
			}
			if got := FileSHA256(t, dst); got != want {
				t.Fatalf("sha256 %s, want %s", got, want)
			}
			waitLogged(t, n, "/big.bin", gets+1)
			a, _ := lastGET(n, "/big.bin")
			evs := jsonEvents(t, r.Stdout)
			if !replaced {
				if a.Status != 206 || a.Range != "bytes="+itoa(had)+"-"+itoa(size-1) || a.IfRange == "" || a.BodySent != size-had {
					t.Fatalf("resume: %s; the .part had %d of %d bytes", a.raw, had, size)
				}
				t.Logf("interrupted at %d bytes; nginx sent the other %d (%s)", had, a.BodySent, a.raw)
				return
			}
			if a.Status != 200 || a.BodySent != size {
				t.Fatalf("replaced: %s, want the whole new file", a.raw)
			}
			if rs := eventsOf(evs, "restart"); len(rs) != 1 || !strings.Contains(rs[0]["reason"].(string), "changed on the server") {
				t.Fatalf("restart events: %v", rs)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestZfetchHTTPS: nginx with a self-signed certificate made by the test:
// refused by default (exit 8, nothing written), fetched with --cacert and
// with -k, over one and three connections.
func TestZfetchHTTPS(t *testing.T) {
	dir := shortTempDir(t)
	cert, key := selfSigned(t, dir)
	n := StartNginx(t, NginxOpts{CertFile: cert, KeyFile: key})
	sum := WriteRandom(t, filepath.Join(n.Root, "f.bin"), 20<<20+5)
	url := n.URL("https", "/f.bin")
	out := t.TempDir()

	r := Zfetch(t, "-q", "-O", out, url)
	if r.Code != 8 || !strings.Contains(r.Stderr, "certificate") || !strings.Contains(r.Stderr, "--cacert") {
		t.Fatalf("untrusted: exit %d: %s", r.Code, r.Stderr)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Fatalf("untrusted: wrote %v", ents)
	}
	for i, args := range [][]string{{"--cacert", cert}, {"-k"}, {"--cacert", cert, "-x", "3"}} {
		dst := filepath.Join(out, "f"+itoa(int64(i)))
		r := Zfetch(t, append(append([]string{"-q"}, args...), "-o", dst, url)...)
		if r.Code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.Code, r.Stderr)
		}
		if got := FileSHA256(t, dst); got != sum {
			t.Fatalf("%v: sha256 %s, want %s", args, got, sum)
		}
	}
	// http:// to nginx's TLS port: nginx answers 400 ("plain HTTP request
	// sent to HTTPS port"), a refusal (status 3), not retried for 90 s.
	r = Zfetch(t, "-q", "-O", out, n.URL("http", "/f.bin"))
	if r.Code != 3 {
		t.Fatalf("http to a TLS port: exit %d, want 3: %s", r.Code, r.Stderr)
	}
}

// TestZfetchNativeAtHTTPServer: a bare HOST:PORT/PATH (the native
// protocol) at an HTTP server's port is a protocol violation, as a
// malformed HTTP response is: status 1 at once, not retried, nothing
// written, and the message says which URL would work.
func TestZfetchNativeAtHTTPServer(t *testing.T) {
	n := StartNginx(t, NginxOpts{})
	WriteRandom(t, filepath.Join(n.Root, "f.bin"), 1000)
	out := t.TempDir()
	r := Zfetch(t, "-O", out, n.Addr+"/f.bin")
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1: %s", r.Code, r.Stderr)
	}
	if !strings.Contains(r.Stderr, "answered in HTTP") || !strings.Contains(r.Stderr, "http:// or https:// URL") || strings.Contains(r.Stderr, "retrying") {
		t.Fatalf("stderr: %s", r.Stderr)
	}
	if es, _ := os.ReadDir(out); len(es) != 0 {
		t.Fatalf("wrote %v", es)
	}
}

// TestZfetchMirrorsNginx: one file from two nginx servers at once; one of
// them is stopped mid-download, and the other finishes the file.
func TestZfetchMirrorsNginx(t *testing.T) {
	const size = 64 << 20
	a, b := StartNginx(t, NginxOpts{}), StartNginx(t, NginxOpts{})
	sum := WriteRandom(t, filepath.Join(a.Root, "big.bin"), size)
	data, err := os.ReadFile(filepath.Join(a.Root, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.Root, "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	mt := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, root := range []string{a.Root, b.Root} {
		if err := os.Chtimes(filepath.Join(root, "big.bin"), mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(t.TempDir(), "big.bin")
	z := startZfetch(t, "--json", "--limit-rate", "24M", "--retry-for", "5s", "-o", dst, a.URL("http", "/big.bin"), "--mirror", b.URL("http", "/big.bin"))
	waitProgress(t, z, dst, 12<<20)
	a.Stop()
	r := z.wait(t, 60*time.Second)
	if r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	if got := FileSHA256(t, dst); got != sum {
		t.Fatalf("sha256 %s, want %s", got, sum)
	}
	evs := jsonEvents(t, r.Stdout)
	done := eventsOf(evs, "done")
	if len(done) != 1 || num(done[0]["sources"]) != 2 {
		t.Fatalf("done: %v", done)
	}
	var bSent int64
	for _, l := range b.Access() {
		if l.Method == "GET" {
			bSent += l.BodySent
		}
	}
	if bSent == 0 {
		t.Fatalf("the second mirror sent nothing: %v", b.Access())
	}
	t.Logf("mirror b sent %d bytes; %d retry and %d source events", bSent, len(eventsOf(evs, "retry")), len(eventsOf(evs, "source")))
}

// TestZfetchHTTPZfsServe: zfetch over zfs-serve's HTTP port: a file with
// the digest the server announces (Repr-Digest, after zctl digest), and a
// tree through its JSON listing, index files included (the folders that
// have one are listed all the same: ?format=json).
func TestZfetchHTTPZfsServe(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "pub/big.bin"), 24<<20+1)
	tree := map[string]string{}
	for _, p := range []string{"pub/t/a.bin", "pub/t/s/b.bin", "pub/t/s/c d.bin", "pub/t/index.html", "pub/t/s/index.html"} {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		tree[p] = WriteRandom(t, full, 50000+int64(len(p)))
	}
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	if r := d.Zctl("digest", "--timeout", "60s", "/pub/big.bin"); r.Code != 0 {
		t.Fatalf("zctl digest: %d %s", r.Code, r.Stderr)
	}
	out := t.TempDir()
	for _, u := range []string{d.httpURL("/pub/big.bin"), d.URL("/pub/big.bin")} {
		for _, args := range [][]string{{}, {"-x", "3"}} {
			dst := filepath.Join(out, "big")
			os.Remove(dst)
			r := Zfetch(t, append(append([]string{"--json"}, args...), "-o", dst, u)...)
			if r.Code != 0 {
				t.Fatalf("%s %v: exit %d: %s", u, args, r.Code, r.Stderr)
			}
			if got := FileSHA256(t, dst); got != sum {
				t.Fatalf("%s %v: sha256 %s, want %s", u, args, got, sum)
			}
			if done := eventsOf(jsonEvents(t, r.Stdout), "done"); len(done) != 1 || done[0]["sha256"] != sum {
				t.Fatalf("%s %v: done %v: want the server's digest checked", u, args, done)
			}
		}
	}
	r := Zfetch(t, "-q", "-r", "-O", out, d.httpURL("/pub/t"))
	if r.Code != 0 {
		t.Fatalf("-r: exit %d: %s", r.Code, r.Stderr)
	}
	for p, s := range tree {
		if got := FileSHA256(t, filepath.Join(out, strings.TrimPrefix(p, "pub/"))); got != s {
			t.Errorf("-r: %s: sha256 %s, want %s", p, got, s)
		}
	}
}
