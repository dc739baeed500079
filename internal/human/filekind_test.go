package human

import (
	"os"
	"testing"
)

func TestFileKind(t *testing.T) {
	for m, want := range map[os.FileMode]string{
		0o644:                             "a regular file",
		os.ModeDir | 0o755:                "a directory",
		os.ModeSymlink | 0o777:            "a symbolic link",
		os.ModeNamedPipe | 0o644:          "a FIFO",
		os.ModeSocket | 0o755:             "a socket",
		os.ModeDevice | os.ModeCharDevice: "a character device",
		os.ModeDevice | 0o660:             "a block device",
		os.ModeIrregular | 0o644:          "mode ?rw-r--r--",
	} {
		if got := FileKind(m); got != want {
			t.Errorf("FileKind(%v) = %q, want %q", m, got, want)
		}
	}
}
