package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// digests: under the unit's sandbox (ProtectSystem=strict, a read-only
// served directory) the workers keep digests in CacheDirectory=, and a
// restarted service loads them from there instead of hashing again.
func (z *zfsContainer) digests(t *testing.T) {
	if out := z.Must("zctl", "digest", "/small.bin"); out != z.smallSHA+"  /small.bin\n" {
		t.Fatalf("zctl digest: %q, want %q", out, z.smallSHA+"  /small.bin\n")
	}
	dir := "/var/cache/zfs-serve/sha256"
	st, err := os.Stat(z.Path(dir))
	if err != nil {
		t.Fatalf("no digest cache: %v", err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("%s: mode %v, want 0700", dir, st.Mode())
	}
	uid := strings.Split(strings.TrimSpace(z.Must("getent", "passwd", "zfs-serve")), ":")[2]
	if owner := strings.TrimSpace(z.Must("stat", "-c", "%u", dir)); owner != uid {
		t.Errorf("%s is owned by uid %s, want zfs-serve (%s)", dir, owner, uid)
	}
	// small.bin's entry, named by device and inode (docs/DIGESTS.md).
	// Not a count: big.bin, fetched by earlier steps, is hashed in the
	// background too, not before 2 s after its last change and in a
	// worker that may have been stopped since: whether its entry is
	// there yet depends on the container's speed.
	var fst syscall.Stat_t
	if err := syscall.Stat(z.Path(servedDir+"/small.bin"), &fst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(z.Path(fmt.Sprintf("%s/%x-%x.sha256", dir, fst.Dev, fst.Ino))); err != nil {
		ents, _ := filepath.Glob(z.Path(dir + "/*.sha256"))
		t.Fatalf("no entry for small.bin in %s (%v); it holds %v", dir, err, ents)
	}
	z.Must("systemctl", "restart", unitService)
	if out := z.Must("zctl", "digest", "/small.bin"); out != z.smallSHA+"  /small.bin\n" {
		t.Fatalf("zctl digest after the restart: %q", out)
	}
	if tot := z.status(t).Totals; tot.DigestsHashed != 0 || tot.DigestsLoaded != 1 {
		t.Errorf("after the restart: digests_hashed %d, digests_loaded %d; want 0 and 1", tot.DigestsHashed, tot.DigestsLoaded)
	}
}
