package serve

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The root is a path, and a deploy may point it at another directory: a
// symlink switched (ln -sfn releases/v2 current), a folder renamed over
// it. Each worker looks the path up again every rootCheckEvery and, when
// it names another directory, serves that one: the directory is opened
// (by the worker, so that a directory it may not read or search is
// refused, as at its start), and put in place of the old one under the
// root's own descriptor number (dup3), so a lookup in flight walks one
// tree or the other, never a descriptor reused for something else. The
// open-file cache is then emptied. So every worker serves the new tree
// within about rootCheckEvery (a request in flight, or a miss opened in
// the old tree as the switch happened, may still be answered from it;
// such a miss is not cached, r.gen, so no later request is), and a
// worker that replaces a crashed one serves the same tree as the others.
//
// A path that is missing for now (a switch made by removing and
// creating) leaves the open directory served; one that names something
// the worker cannot serve (not a directory, not readable) or cannot
// look up at all (a folder on the way it may not search) too, with a
// warning.

// rootCheckEvery is how often a worker looks the root's path up again
// (shortened by tests).
var rootCheckEvery = time.Second

// watchRoot runs followRoot every rootCheckEvery until stop is closed,
// then closes done.
func (s *Server) watchRoot(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tickUntil(stop, rootCheckEvery, s.followRoot)
}

// followRoot serves the directory the root's path names now, if it is
// not the one served (see above). Only watchRoot calls it.
func (s *Server) followRoot() {
	var now, cur unix.Stat_t
	if err := unix.Stat(s.opts.Root, &now); err != nil {
		// Missing for now (ENOENT): the open directory stays. Out of
		// the worker's reach (EACCES: a folder on the way it may not
		// search; ELOOP), it stays too, but is told, as a directory it
		// may not search is: this worker would not start on it.
		if errno, _ := err.(unix.Errno); errno != unix.ENOENT {
			if id := [2]uint64{^uint64(0), uint64(errno)}; id != s.rootRefused {
				s.rootRefused = id
				s.log.Warn("the root's path cannot be looked up; still serving the directory it named before",
					"root", s.opts.Root, "err", err)
			}
		}
		return
	}
	if unix.Fstat(s.root.fd, &cur) != nil {
		return
	}
	if now.Dev == cur.Dev && now.Ino == cur.Ino {
		s.rootRefused = [2]uint64{}
		return
	}
	if err := s.root.follow(s.opts.Root); err != nil {
		if id := [2]uint64{now.Dev, now.Ino}; id != s.rootRefused {
			s.rootRefused = id
			s.log.Warn("the root's path names another directory now, which cannot be served; still serving the one it named before",
				"root", s.opts.Root, "err", err)
		}
		return
	}
	s.rootRefused = [2]uint64{}
	s.files.flush()
	s.log.Info("the root's path names another directory now; serving it", "root", s.opts.Root)
}

// openOSRoot is os.OpenRoot(path) for a directory only. os.OpenRoot
// opens with O_RDONLY alone, and the path may name a FIFO by now (it
// was a directory a moment ago, or the root is switched to one): that
// open would wait for a writer, for ever, and with it watchRoot and
// Close. The walk of path + "/." refuses anything but a directory
// (ENOTDIR) before opening it.
func openOSRoot(path string) (*os.Root, error) {
	return os.OpenRoot(path + "/.")
}

// openRootDir opens the directory at path as a root: fd with O_RDONLY
// (opening proves this process may read it) and the os.Root fallback
// (openOSRoot), and checks that they are the same directory (the path may
// be switched between the two opens). An error is an open's own, a
// forbidden *reqError for a directory this process may read but not
// search, or the path changed meanwhile.
func openRootDir(path string) (fd int, or *os.Root, err error) {
	fd, err = unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if or, err = openOSRoot(path); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			err = openError(".", err) // "/." is a lookup in it
		}
		return -1, nil, err
	}
	var st unix.Stat_t
	fi, err := or.Stat(".")
	if err == nil {
		err = unix.Fstat(fd, &st)
	}
	if err == nil {
		if ost, ok := fi.Sys().(*syscall.Stat_t); !ok || ost.Dev != st.Dev || ost.Ino != st.Ino {
			err = fmt.Errorf("%s changed while it was opened", path)
		}
	}
	if err != nil {
		or.Close()
		unix.Close(fd)
		return -1, nil, err
	}
	return fd, or, nil
}

// follow makes r the directory at path: r.fd names it (same number), and
// the rest of r describes it.
func (r *rootDir) follow(path string) error {
	fd, or, err := openRootDir(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd) // r.fd is a copy of it
	if !noOpenat2.Load() {
		// As New: a lookup of "." proves this worker may search it.
		how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: resolveBeneath}
		dot, err := unix.Openat2(fd, ".", &how)
		if err != nil {
			or.Close()
			return fmt.Errorf("search %s: %w", path, err)
		}
		unix.Close(dot)
	}
	// Nothing raw while the descriptor and what is known of its file
	// system disagree: a raw call on a file system that may wait would
	// hold the worker's thread.
	r.fsp.Store(&rootFS{})
	if err := unix.Dup3(fd, r.fd, unix.O_CLOEXEC); err != nil {
		r.fsp.Store(probeFS(r.fd))
		or.Close()
		return fmt.Errorf("dup3: %w", err)
	}
	r.fsp.Store(probeFS(r.fd))
	r.gen.Add(1) // before the caller's flush: see openAs
	if old := r.followed.Swap(or); old != nil {
		old.Close() // an open in it now fails with ErrClosed, and is made again (openInRoot)
	}
	return nil
}
