package serve

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TestOpenErrorKeepsCause: an open that fails for a reason the protocol
// has no status for is an internal error whose cause stays in the chain.
func TestOpenErrorKeepsCause(t *testing.T) {
	err := openError("/f", unix.EIO)
	var re *reqError
	if !errors.As(err, &re) || re.status != wire.StatusInternal {
		t.Fatalf("openError(EIO) = %v, want an internal reqError", err)
	}
	if !errors.Is(err, unix.EIO) {
		t.Errorf("openError(EIO) = %v: EIO is not in the chain", err)
	}
}
