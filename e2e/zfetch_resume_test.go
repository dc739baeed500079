package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestZfetchResumeSendsOnlyTheRest: a download killed mid-file (SIGSTOP,
// then SIGKILL), rerun with -c, completes byte-exact, and the server's own
// byte counter shows that only the missing part was sent again.
func TestZfetchResumeSendsOnlyTheRest(t *testing.T) {
	const size = 64 << 20
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), size)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	for _, v := range []struct {
		name string
		args []string
	}{
		{"splice", []string{"--recv", "splice"}},
		{"mmap", []string{"--recv", "mmap"}},
		{"x4", []string{"-x", "4"}},
	} {
		t.Run(v.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "big.bin")
			args := append(append([]string{}, v.args...), "-o", dst, d.URL("/big.bin"))
			b := startZfetch(t, append([]string{"-q", "--limit-rate", "16M"}, args...)...)
			waitProgress(t, b, dst, 8<<20)
			b.signal(syscall.SIGSTOP)
			b.signal(syscall.SIGKILL)
			b.wait(t, 10*time.Second)
			had := progressOf(dst)
			before := noTransfers(t, d)

			r := Zfetch(t, append([]string{"-c", "--json"}, args...)...)
			if r.Code != 0 {
				t.Fatalf("zfetch -c: exit %d: %s", r.Code, r.Stderr)
			}
			if got := FileSHA256(t, dst); got != sum {
				t.Fatalf("resumed file sha256 %s, want %s", got, sum)
			}
			start := eventsOf(jsonEvents(t, r.Stdout), "start")
			if len(start) != 1 {
				t.Fatalf("start events: %v", start)
			}
			resumed := num(start[0]["resumed"])
			if resumed < 8<<20 || resumed < had {
				t.Fatalf("resumed at %d; the .part had %d", resumed, had)
			}
			want := uint64(size - resumed)
			st := d.WaitStatus(10*time.Second, "the resume's bytes counted", func(st *ctlStatus) bool {
				return st.Totals.BytesSent-before >= want && len(st.Transfers) == 0
			})
			if sent := st.Totals.BytesSent - before; sent != want {
				t.Fatalf("the server sent %d bytes for the resume; the missing part is %d", sent, want)
			}
			t.Logf("%s: killed at %d bytes, resume sent exactly the other %d", v.name, resumed, want)
		})
	}
}

// TestZfetchRetriesAcrossWorkerCrash: kill -9 the worker serving a download;
// zfetch retries, resumes from the bytes it has, and finishes byte-exact.
func TestZfetchRetriesAcrossWorkerCrash(t *testing.T) {
	const size = 64 << 20
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), size)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	dst := filepath.Join(t.TempDir(), "big.bin")
	b := startZfetch(t, "--json", "--limit-rate", "24M", "-o", dst, d.URL("/big.bin"))
	st := inFlight(t, d, "/big.bin", 4<<20)
	victim, _ := transferOf(st, "/big.bin")
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The next attempt asks for the rest, not the whole file.
	st = d.WaitStatus(20*time.Second, "the resumed transfer", func(st *ctlStatus) bool {
		pid, off := transferOf(st, "/big.bin")
		return pid != 0 && pid != victim && off > 0
	})
	_, off := transferOf(st, "/big.bin")
	r := b.wait(t, 60*time.Second)
	if r.Code != 0 {
		t.Fatalf("zfetch: exit %d: %s", r.Code, r.Stderr)
	}
	if got := FileSHA256(t, dst); got != sum {
		t.Fatalf("sha256 %s, want %s", got, sum)
	}
	evs := jsonEvents(t, r.Stdout)
	retries := eventsOf(evs, "retry")
	if len(retries) == 0 || len(eventsOf(evs, "restart")) != 0 {
		t.Fatalf("want retries and no restart: %v", evs)
	}
	t.Logf("worker %d killed; zfetch retried (%v) and resumed at offset %d", victim, retries[0]["reason"], off)
}

// TestZfetchRetriesAcrossDrainAndRestart: the daemon drains (cutting the
// download at its drain timeout) and exits; a new one starts on the same
// port; zfetch, retrying through "connection refused", finishes, and the
// new daemon sent only what was missing.
func TestZfetchRetriesAcrossDrainAndRestart(t *testing.T) {
	const size = 64 << 20
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), size)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	dst := filepath.Join(t.TempDir(), "big.bin")
	b := startZfetch(t, "--json", "--retries", "30", "--limit-rate", "24M", "-o", dst, d.URL("/big.bin"))
	inFlight(t, d, "/big.bin", 4<<20)
	if r := d.Zctl("drain", "--timeout", "300ms"); r.Code != 0 {
		t.Fatalf("zctl drain: %d %s", r.Code, r.Stderr)
	}
	d.WaitExit(20 * time.Second)
	// zfetch is retrying now; wait until it has been refused at least once.
	if !waitFor(30*time.Second, func() bool { return strings.Contains(readFile(b.stdout), `"reason":"connection refused"`) }) {
		t.Fatalf("zfetch was not refused while the daemon was down; stdout:\n%s\nstderr:\n%s", readFile(b.stdout), b.readStderr())
	}
	d2 := StartDaemon(t, DaemonOpts{Root: root, Workers: 2, Listen: d.Addr})
	r := b.wait(t, 60*time.Second)
	if r.Code != 0 {
		t.Fatalf("zfetch: exit %d: %s", r.Code, r.Stderr)
	}
	if got := FileSHA256(t, dst); got != sum {
		t.Fatalf("sha256 %s, want %s", got, sum)
	}
	evs := jsonEvents(t, r.Stdout)
	retries := eventsOf(evs, "retry")
	reasons := map[any]bool{}
	for _, e := range retries {
		reasons[e["reason"]] = true
	}
	if !reasons["connection refused"] {
		t.Fatalf("retry reasons %v", reasons)
	}
	last := num(retries[len(retries)-1]["done"])
	if last <= 0 || last >= size {
		t.Fatalf("last retry at %d bytes of %d", last, size)
	}
	// (The retry's done was once the last progress event's, up to 250 ms
	// older than the failure: this test then saw the new daemon send "too
	// little", once in ~10 runs.) Wait for the count to reach what was
	// missing rather than for the first status without transfers: one in
	// which a worker did not answer lists none of its transfers and counts
	// its bytes from the supervisor's batched reports.
	want := uint64(size - last)
	st := d2.WaitStatus(10*time.Second, "the missing bytes counted", func(st *ctlStatus) bool {
		return st.Totals.BytesSent >= want && len(st.Transfers) == 0
	})
	if sent := st.Totals.BytesSent; sent != want {
		t.Fatalf("the new daemon sent %d bytes; zfetch had %d of %d before it", sent, last, size)
	}
	t.Logf("retried through %v; the restarted daemon sent the missing %d bytes", reasons, want)
}

// TestZfetchAcrossReload: a reload while a download is in flight (the old
// generation cut off by a short drain_timeout) costs the download nothing.
func TestZfetchAcrossReload(t *testing.T) {
	const size = 64 << 20
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), size)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2, Config: "drain_timeout = \"300ms\"\n"})
	dst := filepath.Join(t.TempDir(), "big.bin")
	b := startZfetch(t, "--json", "--limit-rate", "24M", "-o", dst, d.URL("/big.bin"))
	inFlight(t, d, "/big.bin", 4<<20)
	if r := d.Zctl("reload"); r.Code != 0 {
		t.Fatalf("zctl reload: %d %s %s", r.Code, r.Stdout, r.Stderr)
	}
	r := b.wait(t, 60*time.Second)
	if r.Code != 0 {
		t.Fatalf("zfetch: exit %d: %s", r.Code, r.Stderr)
	}
	if got := FileSHA256(t, dst); got != sum {
		t.Fatalf("sha256 %s, want %s", got, sum)
	}
	t.Logf("retries during the reload: %d", len(eventsOf(jsonEvents(t, r.Stdout), "retry")))
}

// TestZfetchChangedFileStartsOver: a file replaced on the server between
// attempts is fetched fresh, never joined to the old bytes: between two
// runs (-c), and between two attempts of one run.
func TestZfetchChangedFileStartsOver(t *testing.T) {
	const size = 32 << 20
	root := shortTempDir(t)
	src := filepath.Join(root, "big.bin")
	WriteRandom(t, src, size)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})

	t.Run("between runs", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "big.bin")
		b := startZfetch(t, "-q", "--limit-rate", "16M", "-o", dst, d.URL("/big.bin"))
		waitProgress(t, b, dst, 4<<20)
		b.signal(syscall.SIGSTOP)
		b.signal(syscall.SIGKILL)
		b.wait(t, 10*time.Second)
		sum2 := replaceFile(t, src, size) // same size, new content and mtime
		r := Zfetch(t, "-c", "--json", "-o", dst, d.URL("/big.bin"))
		if r.Code != 0 {
			t.Fatalf("zfetch -c: exit %d: %s", r.Code, r.Stderr)
		}
		if got := FileSHA256(t, dst); got != sum2 {
			t.Fatalf("sha256 %s, want the new version's %s", got, sum2)
		}
		restarts := eventsOf(jsonEvents(t, r.Stdout), "restart")
		if len(restarts) != 1 || !strings.Contains(restarts[0]["reason"].(string), "changed on the server") {
			t.Fatalf("restart events %v", restarts)
		}
	})

	t.Run("between attempts", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "big.bin")
		b := startZfetch(t, "--json", "--limit-rate", "16M", "-o", dst, d.URL("/big.bin"))
		st := inFlight(t, d, "/big.bin", 4<<20)
		victim, _ := transferOf(st, "/big.bin")
		b.signal(syscall.SIGSTOP)
		sum2 := replaceFile(t, src, size)
		syscall.Kill(victim, syscall.SIGKILL)
		b.signal(syscall.SIGCONT)
		r := b.wait(t, 60*time.Second)
		if r.Code != 0 {
			t.Fatalf("zfetch: exit %d: %s", r.Code, r.Stderr)
		}
		if got := FileSHA256(t, dst); got != sum2 {
			t.Fatalf("sha256 %s, want the new version's %s", got, sum2)
		}
		if restarts := eventsOf(jsonEvents(t, r.Stdout), "restart"); len(restarts) != 1 {
			t.Fatalf("restart events %v", restarts)
		}
	})
}
