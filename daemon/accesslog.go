package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/internal/accesslog"
	"github.com/zfs-serve/zfs-serve/internal/logbuf"
	"golang.org/x/sys/unix"
)

// openAccessLog opens c's access_log_path for a generation's workers
// (accessLogFD), nil if there is none: once per generation, so that after
// logrotate renames the file a reload has the new workers write a new one
// while the old finish into the old, as nginx reopens its logs. The
// supervisor opens it, so workers running as another user (user =) need
// no right to the folder. A reload opens it off the loop (reload.go).
//
// Appending (O_APPEND) to a regular file makes each worker's write whole
// whatever its size (logbuf.NewAppend), so the file is refused if it is
// anything else: a FIFO or a device (never opened, or opened without
// waiting for a reader if one replaces the file during the check),
// or a symbolic link, which whoever may write the folder could point at
// any file the supervisor may write. Links among the folders above it
// are followed (as nginx does): those are root's or the service's.
func openAccessLog(c *config.Config) (*os.File, error) {
	if !c.AccessLog || c.AccessLogPath == "" {
		return nil, nil
	}
	// What is there and not a regular file is refused before it is
	// opened (an open has effects on a FIFO's other end, or a device);
	// the open's O_NOFOLLOW and O_NONBLOCK, and its fstat, refuse what
	// replaces the file meanwhile.
	if err := config.CheckAccessLogPath(c.AccessLogPath); err != nil {
		return nil, fmt.Errorf("access_log_path: %w", err)
	}
	fd, err := unix.Open(c.AccessLogPath, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, fmt.Errorf("access_log_path: open %s: %w", c.AccessLogPath, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("access_log_path: %s is not a regular file", c.AccessLogPath)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("access_log_path: %w", err)
	}
	return os.NewFile(uintptr(fd), c.AccessLogPath), nil
}

// workerAccessLog is a worker's access log (access_log), nil if off: the
// same lines its logger would write, for less (internal/accesslog), into
// that log (at level info, so log_level applies) or into the file the
// supervisor opened (accessLogFD), which is then an access log alone, as
// nginx's: every line, whatever log_level keeps out of the daemon's log.
// file is that file's writer, which the worker closes (flushes) on its
// way out; nil without access_log_path.
func workerAccessLog(c *config.Config, lb *logbuf.Writer, level slog.Leveler, logger *slog.Logger, attrs []any) (a *accesslog.Logger, file *logbuf.Writer, err error) {
	if !c.AccessLog {
		return nil, nil, nil
	}
	var w io.Writer = lb
	if path := c.AccessLogPath; path != "" {
		file = logbuf.NewAppend(os.NewFile(accessLogFD, path), func(n int) {
			logger.Warn("access log lines dropped: the file did not take them as fast as they came", "lines", n, "path", path)
		}, func(n int, err error) {
			if err != nil {
				logger.Error("access log lines lost: writing the file failed; more are lost until it works again", "lines", n, "path", path, "err", err)
				return
			}
			logger.Warn("access log file written again", "lines_lost", n, "path", path)
		})
		w, level = file, slog.LevelInfo
	}
	a, err = accesslog.New(w, c.LogFormat == "json", level, attrs...)
	return a, file, err
}
