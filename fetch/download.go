package fetch

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// Event reports a download's progress to a renderer.
type Event struct {
	Kind  string // "start", "progress", "done", "error"
	Name  string // what is being fetched (the output name or the URL path)
	Done  int64  // bytes received so far
	Total int64  // bytes expected; -1 if unknown
	Err   error
	Time  time.Time
}

// Options tune a download.
type Options struct {
	// Progress, if set, receives events: start, then progress every
	// ProgressEvery while bytes flow, then done or error.
	Progress      func(Event)
	ProgressEvery time.Duration
}

// Download fetches t. With out set, the body goes there (zfetch -o -);
// otherwise it goes to dst+".part", renamed to dst once complete, with the
// server's mtime.
func Download(ctx context.Context, t Target, dst string, out io.Writer, opts Options) (int64, error) {
	c, err := Dial(ctx, t.Addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	resp, body, err := c.Get(t.Path, 0, 0)
	if err != nil {
		return 0, err
	}
	name := dst
	if out != nil {
		name = t.Path
	}
	var done atomic.Int64
	emit := func(kind string, err error) {
		if opts.Progress != nil {
			opts.Progress(Event{Kind: kind, Name: name, Done: done.Load(), Total: resp.BodyLen, Err: err, Time: time.Now()})
		}
	}
	emit("start", nil)
	every := opts.ProgressEvery
	if every <= 0 {
		every = 100 * time.Millisecond
	}
	tick := time.NewTicker(every)
	quit := make(chan struct{})
	go func() {
		for {
			select {
			case <-tick.C:
				emit("progress", nil)
			case <-quit:
				return
			}
		}
	}()
	n, err := receive(dst, out, body, resp.BodyLen, resp.MTime, &done)
	tick.Stop()
	close(quit)
	if err == nil && n != resp.BodyLen {
		err = fmt.Errorf("received %d of %d bytes: %w", n, resp.BodyLen, errShortBody)
	}
	if err != nil {
		emit("error", err)
		return n, err
	}
	emit("done", nil)
	return n, nil
}

func receive(dst string, out io.Writer, body io.Reader, n, mtime int64, done *atomic.Int64) (int64, error) {
	w := out
	var f *os.File
	if w == nil {
		var err error
		f, err = os.OpenFile(dst+".part", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		w = f
	}
	buf := make([]byte, 1<<20)
	var got int64
	for got < n {
		r, err := body.Read(buf[:min(int64(len(buf)), n-got)])
		if r > 0 {
			if _, werr := w.Write(buf[:r]); werr != nil {
				return got, werr
			}
			got += int64(r)
			done.Store(got)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return got, err
		}
	}
	if f == nil || got != n {
		return got, nil
	}
	if err := f.Close(); err != nil {
		return got, err
	}
	mt := time.Unix(0, mtime)
	if err := os.Chtimes(dst+".part", mt, mt); err != nil {
		return got, err
	}
	return got, os.Rename(dst+".part", dst)
}
