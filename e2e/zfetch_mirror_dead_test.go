package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestZfetchMirrorDeadOrSilent: one file from a zfs-serve, with two
// mirrors that never answer: one whose port refuses connections (a mirror
// that is down) and one that accepts and says nothing. The good source
// has every byte within moments, and zfetch is then done: it neither
// waits for the silent mirror's stall timeout (before or after the
// download) nor goes on asking the dead one, in a loop with no delay,
// until --retry-for runs out (which it did, thousands of connections a
// second, printing a retry line for each).
func TestZfetchMirrorDeadOrSilent(t *testing.T) {
	root := shortTempDir(t)
	sum := WriteRandom(t, filepath.Join(root, "big.bin"), 3<<20)
	d := StartDaemon(t, DaemonOpts{Root: root, Workers: 1})
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	dead := fmt.Sprintf("zfs://127.0.0.1:%d/big.bin", freePort(t))
	for _, args := range [][]string{{}, {"-x", "2"}} {
		dst := filepath.Join(t.TempDir(), "big.bin")
		start := time.Now()
		r := Zfetch(t, append(args, "--json", "--retry-for", "20s", "-o", dst,
			d.URL("/big.bin"), "--mirror", dead, "--mirror", "zfs://"+silent.Addr().String()+"/big.bin")...)
		took := time.Since(start)
		if r.Code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.Code, r.Stderr)
		}
		if got := FileSHA256(t, dst); got != sum {
			t.Fatalf("%v: sha256 %s, want %s", args, got, sum)
		}
		retries := eventsOf(jsonEvents(t, r.Stdout), "retry")
		t.Logf("%v: %v, %d retry events", args, took, len(retries))
		if took > 10*time.Second || len(retries) > 20 {
			t.Fatalf("%v: took %v with %d retry events; the good source had it all at once", args, took, len(retries))
		}
	}
}
