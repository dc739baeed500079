package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	rootfsCacheDir = "/var/cache/zfs-serve-e2e"
	rootfsSuite    = "bookworm"
)

// rootfsArgs are debootstrap's arguments before the target and mirror;
// they and rootfsPrune key the cache.
var rootfsArgs = []string{"--variant=minbase", "--include=systemd,systemd-sysv,dbus,procps", rootfsSuite}

// rootfsPrune makes the tree smaller and mirror-free once debootstrap is
// done. Changing it changes the cache key.
const rootfsPrune = `set -e
rm -f var/cache/apt/archives/*.deb var/cache/apt/*.bin var/log/bootstrap.log
find var/lib/apt/lists -maxdepth 1 -type f -delete
: > etc/apt/sources.list
rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/locale/*
`

// rootfsCache is the cached tarball's path for the current arguments.
func rootfsCache() string {
	h := sha256.New()
	fmt.Fprintf(h, "%q\n%s", rootfsArgs, rootfsPrune)
	return filepath.Join(rootfsCacheDir, fmt.Sprintf("rootfs-%s-%s.tar.zst", rootfsSuite, hex.EncodeToString(h.Sum(nil))[:16]))
}

// aptMirror is the first Debian mirror in the host's apt sources.
func aptMirror() (string, error) {
	if f, err := os.Open("/etc/apt/sources.list.d/debian.sources"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "URIs:"); ok {
				if fs := strings.Fields(v); len(fs) > 0 {
					return fs[0], nil
				}
			}
		}
	}
	b, err := os.ReadFile("/etc/apt/sources.list")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if fs := strings.Fields(line); len(fs) >= 3 && fs[0] == "deb" {
				if strings.HasPrefix(fs[1], "[") { // deb [options] URI
					for i, f := range fs {
						if strings.HasSuffix(f, "]") && i+1 < len(fs) {
							return fs[i+1], nil
						}
					}
					continue
				}
				return fs[1], nil
			}
		}
	}
	return "", errors.New("no mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list")
}

// ensureRootfs returns the cached root filesystem tarball, making it with
// debootstrap first if needed (under a lock: concurrent test runs on one
// machine build it once). A failed debootstrap (no network, no mirror)
// skips the test: it is the machine that cannot, not the code.
func ensureRootfs(t *testing.T) string {
	t.Helper()
	cache := rootfsCache()
	if err := os.MkdirAll(rootfsCacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(rootfsCacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(cache); err == nil {
		return cache
	}
	mirror, err := aptMirror()
	if err != nil {
		t.Skipf("cannot make the container's root filesystem: %v", err)
	}
	start := time.Now()
	work, err := os.MkdirTemp(rootfsCacheDir, "build-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)
	dir := filepath.Join(work, "rootfs")
	args := append(append([]string{}, rootfsArgs...), dir, mirror)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "debootstrap", args...).CombinedOutput()
	if err != nil {
		t.Skipf("debootstrap %s failed (%v); no container test on this machine:\n%s", strings.Join(rootfsArgs, " "), err, tail(string(out), 15))
	}
	prune := exec.Command("sh", "-c", rootfsPrune)
	prune.Dir = dir
	if out, err := prune.CombinedOutput(); err != nil {
		t.Fatalf("pruning the root filesystem: %v\n%s", err, out)
	}
	tmp := cache + ".tmp"
	pack := exec.Command("sh", "-c", `tar --numeric-owner --xattrs --xattrs-include='*' -C "$1" -cf - . | zstd -3 -q -T0 -f -o "$2"`, "sh", dir, tmp)
	if out, err := pack.CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("packing the root filesystem: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, cache); err != nil {
		t.Fatal(err)
	}
	t.Logf("made the container root filesystem %s in %v (cached for later runs)", cache, time.Since(start).Round(time.Second))
	return cache
}
