package zfetch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/zfs-serve/zfs-serve/cli"
	"github.com/zfs-serve/zfs-serve/fetch"
	"github.com/zfs-serve/zfs-serve/internal/human"
)

// What -o names: stdout (-o -), a device or a FIFO (/dev/null: written
// into in order, as stdout is; curl -o and wget -O do the same, and it is
// never replaced by a file renamed over it), a symlink (the file it leads
// to is replaced, the link stays), or a file. A socket cannot be opened by
// its name: fetch refuses it as it refuses a directory.

// checkOutput sets what o.output names (stdoutIsOutput, outputStream,
// outputFile) and refuses the options that need a regular file where it
// names a stream.
func (o *options) checkOutput() error {
	var why string // why a stream is not a file: "stdout is not one", "F is a FIFO"
	switch {
	case o.output == "":
		return nil
	case o.output == "-":
		o.stdoutIsOutput, why = true, "stdout is not one"
		if o.recursive {
			return cli.Usagef("-o - cannot take a tree (-r)")
		}
	default:
		fi, err := os.Stat(o.output)
		switch {
		case err == nil && fi.Mode().Type()&(os.ModeDevice|os.ModeNamedPipe) != 0:
			o.outputStream, why = true, o.output+" is "+human.FileKind(fi.Mode())
			if o.recursive {
				return cli.Usagef("-r needs a directory to write the tree into; %s", why)
			}
		case err == nil && fi.Mode().IsRegular() || errors.Is(err, os.ErrNotExist):
			o.outputFile, err = linkedFile(o.output, fi)
			return err
		default:
			return nil
		}
	}
	switch {
	case o.resume:
		return cli.Usagef("-c needs a file to resume; %s", why)
	case o.conns > 1:
		return cli.Usagef("-x needs a file to write ranges into; %s", why)
	}
	return nil
}

// linkedFile is where -o puts the download when it names a symlink ("" if
// name is no symlink): in place of the regular file fi the link leads to,
// or, for a dangling link (fi nil), of the missing name at its end; never
// in place of the link. Replacing a link by the file would break it for
// everyone else: zfetch -o /dev/stdout > out would leave a regular file in
// /dev/stdout's place, as -o /dev/null once did. A link whose file has no
// path to rename over (what /proc/self/fd/1 leads to for a deleted file or
// one of another mount namespace) is a usage error.
func linkedFile(name string, fi os.FileInfo) (string, error) {
	if lfi, err := os.Lstat(name); err != nil || lfi.Mode().Type() != os.ModeSymlink {
		return "", nil
	}
	var (
		file string
		err  error
	)
	if fi == nil {
		file, err = danglingEnd(name)
	} else if file, err = filepath.EvalSymlinks(name); err == nil {
		var ffi os.FileInfo
		if ffi, err = os.Stat(file); err == nil && !os.SameFile(fi, ffi) {
			err = fmt.Errorf("it leads to %s, which is another file", file)
		}
	}
	if err != nil {
		return "", cli.Usagef("-o %s is a symbolic link whose file has no path to put the download in place (%v); name the file itself, or use -o - with a redirection", name, err)
	}
	return file, nil
}

// danglingEnd follows the dangling symlink name, one link at a time, to
// the name at its end that does not exist.
func danglingEnd(name string) (string, error) {
	p := name
	for range 40 { // Linux's limit of links in a path
		t, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		p = t
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return p, nil
		case err != nil:
			return "", err
		case fi.Mode().Type() != os.ModeSymlink:
			return "", fmt.Errorf("%s exists now", p)
		}
	}
	return "", errors.New("too many levels of symbolic links")
}

// lazyStream is the device or FIFO of -o, opened only once the server
// has answered (fetch.Job.OpenOut): a FIFO's open waits for its reader,
// and a failure (a 404, a server that cannot be reached) is said at once,
// not once a reader comes.
type lazyStream struct {
	name string
	// f is set by open, on the download's goroutine, and read by release
	// after the run: after FetchPlan returned, or, for a run left stuck in
	// a write, after fetch.Client.Silence, which takes the lock the
	// download's start event (sent after open) was sent under.
	f *os.File
}

func (s *lazyStream) open(ctx context.Context) (*os.File, error) {
	f, err := openStream(ctx, s.name)
	s.f = f
	return f, err
}

// release ends the stream after the run, its outcome said. A FIFO never
// opened (the download failed before it) is still opened and closed, so
// that its reader sees its end, as when zfetch opened the FIFO first: one
// already waiting at once, else the next to come, within ctx (--max-time,
// Ctrl-C). Not waiting would leave a reader started beside zfetch
// (zfetch -o p URL & consumer < p) that opens the FIFO after the failure
// waiting for a writer forever.
func (s *lazyStream) release(ctx context.Context) {
	if s.f != nil {
		s.f.Close()
		return
	}
	if fi, err := os.Stat(s.name); err == nil && fi.Mode().Type() == os.ModeNamedPipe {
		if f, err := openStream(ctx, s.name); err == nil {
			f.Close()
		}
	}
}

// openStream opens the device or FIFO of -o for writing. Opening a FIFO
// waits for a reader: ctx (Ctrl-C, --max-time) ends the wait, and the
// open left behind is made to return by a reader of zfetch's own, then
// closed.
func openStream(ctx context.Context, name string) (*os.File, error) {
	type opened struct {
		f   *os.File
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		ch <- opened{f, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			var pe *os.PathError
			if errors.As(r.err, &pe) {
				r.err = pe.Err
			}
			return nil, &fetch.LocalError{Op: "open", Path: name, Err: r.err}
		}
		return r.f, nil
	case <-ctx.Done():
		// A FIFO only: opening a device has effects of its own (a tape
		// rewinds).
		var rd *os.File
		if fi, err := os.Stat(name); err == nil && fi.Mode().Type() == os.ModeNamedPipe {
			rd, _ = os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		}
		go func() {
			if r := <-ch; r.f != nil {
				r.f.Close()
			}
			if rd != nil {
				rd.Close()
			}
		}()
		return nil, ctx.Err()
	}
}
