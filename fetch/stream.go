package fetch

import (
	"context"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// fetchStream writes the file to j.Out (or what j.OpenOut opens) in
// order: no .part, no resume across runs, but retries resume at the next
// byte.
func (d *download) fetchStream(ctx context.Context) (Result, error) {
	if err := d.learn(ctx); err != nil {
		return d.result(), err
	}
	if d.j.Out == nil {
		f, err := d.j.OpenOut(ctx)
		if err != nil {
			return d.result(), err
		}
		d.j.Out = f
	}
	d.sink = newSink(d.j.Out, true)
	if d.mode == RecvMmap || d.mode == RecvAuto {
		d.mode = streamRecv(d.sink.fd)
	}
	d.expectDigest()
	if d.expected() != "" {
		// The digest needs the bytes in user memory: copy mode, hashing in order.
		d.mode = RecvCopy
		d.hash.Store(newHasher(nil, nil))
	}
	d.workers = make([]atomic.Pointer[segment], len(d.srcs))
	d.setSegments(wholeFile(d.size.Load()))
	d.emit(Event{Kind: EventStart})
	stop := d.background(false)
	err := d.run(ctx)
	stop()
	if err != nil {
		return d.result(), err
	}
	if err := d.verifyCount(); err != nil {
		return d.result(), err
	}
	if err := d.verifyDigest(); err != nil {
		return d.result(), err
	}
	d.emit(Event{Kind: EventDone, Done: d.done.Load(), SHA256: d.expected()})
	return d.result(), nil
}

// streamRecv is the receive mode for a stream when the choice is zfetch's
// (RecvAuto, or RecvMmap, which a stream cannot use): splice into a pipe, a file or a
// socket, where the pages move (or are copied once, in the kernel), read
// and write into a character device (a terminal, /dev/null), where splice
// has nothing to move them to. Measured on loopback (docs/ZFETCH.md):
// into a pipe splice is twice as fast as read and write, into /dev/null
// 10% slower.
func streamRecv(fd int) RecvMode {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR {
		return RecvCopy
	}
	return RecvSplice
}
