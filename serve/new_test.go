package serve

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

// TestNewUnsearchableRoot: a root the worker may read but not search fails
// New with an error that keeps the refusal in its chain, so a caller can
// tell why (errors.As), not only print it. Root may search anything, so
// New runs in a child process (this test binary) as nobody.
func TestNewUnsearchableRoot(t *testing.T) {
	if root := os.Getenv("ZFS_SERVE_TEST_UNSEARCHABLE_ROOT"); root != "" {
		_, err := New(Options{Root: root, Mode: config.ModeCopy}, slog.New(slog.DiscardHandler))
		var re *reqError
		if !errors.As(err, &re) || re.status != wire.StatusForbidden {
			fmt.Printf("New = %v; want a forbidden *reqError in its chain\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run New as nobody")
	}
	// nobody must reach the copy of this binary and the root.
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(dir, "serve.test")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyTestBinary(t, self, exe)
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o444); err != nil { // readable, not searchable
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestNewUnsearchableRoot$")
	cmd.Env = append(os.Environ(), "ZFS_SERVE_TEST_UNSEARCHABLE_ROOT="+root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

func copyTestBinary(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
