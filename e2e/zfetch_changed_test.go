package e2e

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// This file tests what zfetch makes of a file changed in place on the
// server while it downloads it, and its limits on slow servers and time.

// TestZfetchFileModifiedWhileFetched: a file written in place during a
// rate-limited download, as by dd conv=notrunc (1 MiB at 2 MiB, which
// zfetch already has, and 1 MiB near the end, which it has not), or
// rewritten as cp does (truncate, then write the new content), never
// leaves zfetch exiting 0 with bytes of neither version: it ends with the
// new version, byte-exact, or fails. After dd it must start over and get
// the new version; the server logs the bodies it cut short.
func TestZfetchFileModifiedWhileFetched(t *testing.T) {
	const size = 32 << 20
	changes := []struct {
		name   string
		change func(t *testing.T, src string) (sum string)
	}{
		{"dd", func(t *testing.T, src string) string {
			zeroAt(t, src, 2<<20, 1<<20)
			zeroAt(t, src, size-4<<20, 1<<20)
			return FileSHA256(t, src)
		}},
		{"cp", func(t *testing.T, src string) string {
			tmp := filepath.Join(t.TempDir(), "new")
			sum := WriteRandom(t, tmp, size)
			in, err := os.Open(tmp)
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			out, err := os.OpenFile(src, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(out, in); err != nil {
				t.Fatal(err)
			}
			if err := out.Close(); err != nil {
				t.Fatal(err)
			}
			return sum
		}},
	}
	for _, mode := range []struct {
		name string
		args []string
	}{
		{"default", nil},
		{"x4", []string{"-x", "4"}},
		{"mmap", []string{"--recv", "mmap"}},
	} {
		for _, ch := range changes {
			t.Run(mode.name+"/"+ch.name, func(t *testing.T) {
				// In parallel: each has its own daemon and spends its
				// seconds in zfetch's rate limit.
				t.Parallel()
				root := shortTempDir(t)
				src := filepath.Join(root, "big.bin")
				old := WriteRandom(t, src, size)
				// An hour back, so each change moves the mtime whatever the
				// file system's timestamp granularity.
				back := time.Now().Add(-time.Hour)
				if err := os.Chtimes(src, back, back); err != nil {
					t.Fatal(err)
				}
				d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
				dst := filepath.Join(t.TempDir(), "big.bin")
				args := append([]string{"--json", "--limit-rate", "16M"}, mode.args...)
				b := startZfetch(t, append(args, "-o", dst, d.URL("/big.bin"))...)
				waitProgress(t, b, dst, 8<<20)
				sum := ch.change(t, src)
				start := time.Now()
				r := b.wait(t, 2*time.Minute)
				restarts := eventsOf(jsonEvents(t, r.Stdout), "restart")
				t.Logf("exit %d %s after the change; %d restart(s); server log lines about it: %d",
					r.Code, time.Since(start).Round(time.Millisecond), len(restarts), strings.Count(d.Log(), "file changed while being sent"))
				if r.Code != 0 {
					if ch.name == "dd" {
						t.Fatalf("zfetch: exit %d after an in-place change; want the new version: %s", r.Code, r.Stderr)
					}
					if _, err := os.Stat(dst); err == nil {
						t.Fatalf("zfetch failed (exit %d) but %s exists", r.Code, dst)
					}
					return
				}
				switch got := FileSHA256(t, dst); got {
				case sum:
				case old:
					t.Fatalf("exit 0 with the old version, though the file changed during the download")
				default:
					t.Fatalf("exit 0 with bytes of neither version (sha256 %s)", got)
				}
				if len(restarts) == 0 || !strings.Contains(restarts[0]["reason"].(string), "changed on the server") {
					t.Fatalf("restart events %v", restarts)
				}
			})
		}
	}
}

// zeroAt writes n zero bytes at off in place, as dd if=/dev/zero
// conv=notrunc does.
func zeroAt(t *testing.T, path string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestZfetchSpeedLimitAndMaxTime: --speed-limit ends attempts that stay
// slower than the floor and gives up once they have used the retries
// (exit 4); --max-time stops the whole run (exit 7), keeping the .part,
// which -c then completes.
func TestZfetchSpeedLimitAndMaxTime(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 64<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 2})
	dir := t.TempDir()

	// zfetch's own --limit-rate makes the transfer slower than the floor.
	start := time.Now()
	r := Zfetch(t, "-q", "--limit-rate", "64K", "--speed-limit", "1M", "--speed-time", "1s", "--retries", "1",
		"-o", filepath.Join(dir, "slow"), d.URL("/big.bin"))
	el := time.Since(start)
	t.Logf("--speed-limit: exit %d after %v: %s", r.Code, el.Round(time.Millisecond), strings.TrimSpace(r.Stderr))
	if r.Code != 4 || !strings.Contains(r.Stderr, "slower than 1.00 MiB/s for 1s (gave up after 2 attempts)") {
		t.Fatalf("--speed-limit: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if el < 2*time.Second {
		t.Fatalf("gave up after %v, before two attempts of --speed-time 1s", el)
	}

	dst := filepath.Join(dir, "big.bin")
	start = time.Now()
	r = Zfetch(t, "--limit-rate", "4M", "--max-time", "1s", "-o", dst, d.URL("/big.bin"))
	el = time.Since(start)
	t.Logf("--max-time: exit %d after %v", r.Code, el.Round(time.Millisecond))
	if r.Code != 7 || !strings.Contains(r.Stderr, "big.bin: stopped: --max-time 1s reached") ||
		!strings.Contains(r.Stderr, "zfetch: stopped by --max-time 1s; partial download kept in "+dst+".part") ||
		!strings.Contains(r.Stderr, "resume with: zfetch -c ") {
		t.Fatalf("--max-time: exit %d, stderr:\n%s", r.Code, r.Stderr)
	}
	if el > 30*time.Second {
		t.Fatalf("--max-time 1s took %v", el)
	}
	if progressOf(dst) == 0 {
		t.Fatal("no partial download kept")
	}
	if r := Zfetch(t, "-q", "-c", "-o", dst, d.URL("/big.bin")); r.Code != 0 || FileSHA256(t, dst) != sum {
		t.Fatalf("-c after --max-time: exit %d: %s", r.Code, r.Stderr)
	}
}
