package daemon

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openAccessLog opens g's access_log_path for its workers (accessLogFD):
// once per generation, so that after logrotate renames the file a reload
// has the new workers write a new one while the old finish into the old,
// as nginx reopens its logs. The supervisor opens it, so workers running
// as another user (user =) need no right to the folder.
//
// Appending (O_APPEND) to a regular file makes each worker's write whole
// whatever its size (logbuf.NewAppend), so the file is refused if it is
// anything else: a FIFO or a device (opened without waiting for a reader),
// or a symbolic link, which whoever may write the folder could point at
// any file the supervisor may write. Links among the folders above it
// are followed (as nginx does): those are root's or the service's.
func openAccessLog(g *generation) error {
	c := g.cfg
	if !c.AccessLog || c.AccessLogPath == "" {
		return nil
	}
	fd, err := unix.Open(c.AccessLogPath, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o640)
	if err == unix.ELOOP || err == unix.ENXIO {
		// ELOOP: the last component is a link (O_NOFOLLOW), or links in
		// the folders loop. ENXIO: a FIFO no one reads (O_NONBLOCK), or
		// a device that is not there.
		var st unix.Stat_t
		if unix.Lstat(c.AccessLogPath, &st) == nil {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFLNK:
				return fmt.Errorf("access_log_path: %s is a symbolic link", c.AccessLogPath)
			case unix.S_IFIFO:
				return fmt.Errorf("access_log_path: %s is a FIFO (with no reader), not a regular file", c.AccessLogPath)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("access_log_path: open %s: %w", c.AccessLogPath, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return fmt.Errorf("access_log_path: %s is not a regular file", c.AccessLogPath)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return fmt.Errorf("access_log_path: %w", err)
	}
	g.access = os.NewFile(uintptr(fd), c.AccessLogPath)
	return nil
}
