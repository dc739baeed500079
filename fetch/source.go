package fetch

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/zfs-serve/zfs-serve/wire"
)

// source is one server a file is fetched from: the URL given, or one of
// its mirrors (Job.Mirrors).
type source struct {
	i int
	t Target

	mu       sync.Mutex
	id       ident // as this source last described the file
	known    bool  // id is set
	dropped  bool  // no longer used for this download
	noRanges bool  // answered a Range request with the whole file
	supplied bool  // it was asked for bytes: some may be in the file (recheck asks it again)
	stale    bool  // supplied (to the .part resumed) and its file now differs: recheck starts over
}

func (s *source) markSupplied() {
	s.mu.Lock()
	s.supplied = true
	s.mu.Unlock()
}

func (s *source) hasSupplied() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.supplied
}

func (s *source) ident() (ident, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id, s.known
}

func (s *source) setIdent(id ident) {
	s.mu.Lock()
	s.id, s.known = id, true
	if id.NoRanges {
		s.noRanges = true
	}
	s.mu.Unlock()
}

func (s *source) isDropped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

func (s *source) ranges() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.noRanges
}

// identOnce asks t for the file's identity once: STAT, or HEAD following
// redirects (each hop on its own connection).
func (c *Client) identOnce(ctx context.Context, t Target) (ident, error) {
	if !t.IsHTTP() {
		ep := endpointOf(t)
		for {
			var id ident
			flags := c.digestFlags(ep)
			err := c.withConn(ctx, ep, func(conn *Conn) error {
				r, err := conn.StatFlags(t.Path, flags)
				if err != nil {
					return err
				}
				if r.Kind != wire.KindFile {
					return errNotFile(t.Path, r.Kind)
				}
				id = ident{Size: r.Size, MTime: r.MTime, SHA256: respSHA256(r), Loc: t}
				return nil
			})
			if flags != 0 && c.olderServer(ep, err) {
				continue // again, without flags
			}
			return id, err
		}
	}
	loc := t
	for hops := 0; ; hops++ {
		var id ident
		var next *Target
		err := c.withConn(ctx, endpointOf(loc), func(conn *Conn) error {
			var err error
			id, next, err = conn.httpStatOnce(loc, c.opts.Now())
			return err
		})
		if err != nil {
			return ident{}, err
		}
		if next == nil {
			if strings.HasSuffix(loc.Path, "/") && !strings.HasSuffix(t.Path, "/") {
				// /dir redirected to /dir/: a directory.
				return ident{}, errNotFile(t.Path, wire.KindDir)
			}
			return id, nil
		}
		if hops >= maxRedirects {
			return ident{}, &StatusError{Status: wire.StatusForbidden, Path: t.Path, HTTP: 310,
				Message: fmt.Sprintf("%s: more than %d redirects", t, maxRedirects)}
		}
		loc = *next
	}
}

// identRetry asks t for the file's identity, with retries.
func (c *Client) identRetry(ctx context.Context, t Target, report func(Event)) (ident, error) {
	var id ident
	err := c.retry(ctx, report, func() (bool, error) {
		var err error
		id, err = c.identOnce(ctx, t)
		return false, err
	})
	return id, err
}

// learnGrace is how long learn waits, once the reference is known, for
// the other sources' answers before it cuts their questions short.
const learnGrace = time.Second

// learn asks the sources for the file's identity. With one source, it is
// asked with retries. With mirrors, all are asked at once, in rounds (with
// backoff between rounds) until one answers; the first of them in command
// line order is the reference, and each other that answered is checked
// against it (and dropped, with a warning, if its file differs or it
// refuses). A round ends learnGrace after the reference is known: the
// questions to later sources still unanswered then (one that says nothing
// until the stall timeout) are cut short. One that has not answered yet
// is asked by its workers later.
func (d *download) learn(ctx context.Context) error {
	if len(d.srcs) == 1 {
		s := d.srcs[0]
		id, err := d.c.identRetry(ctx, s.t, d.report)
		if err != nil {
			return err
		}
		s.setIdent(id)
		d.setRef(id)
		return nil
	}
	type answer struct {
		id   ident
		err  error
		done bool // false: not asked, or the question was cut short
	}
	answers := make([]answer, len(d.srcs))
	var ref *ident
	err := d.c.retry(ctx, d.report, func() (bool, error) {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		type result struct {
			i int
			a answer
		}
		var wg sync.WaitGroup
		arrived := make(chan result, len(d.srcs))
		asked := 0
		for i, s := range d.srcs {
			answers[i] = answer{}
			if s.isDropped() {
				continue
			}
			asked++
			wg.Go(func() {
				id, err := d.c.identOnce(rctx, s.t)
				arrived <- result{i, answer{id, err, rctx.Err() == nil}}
			})
		}
		// known reports whether the reference is settled: a source
		// answered, and every source before it in command-line order
		// failed.
		known := func() bool {
			for i, s := range d.srcs {
				switch a := answers[i]; {
				case s.isDropped():
				case !a.done:
					return false
				case a.err == nil:
					return true
				}
			}
			return false
		}
		// Once the reference is known, the others get learnGrace more
		// to answer, and are compared now (mirrors near each other
		// answer within moments); a question still open then is cut
		// short.
		var grace <-chan time.Time
	collect:
		for n := 0; n < asked; n++ {
			select {
			case r := <-arrived:
				answers[r.i] = r.a
			case <-grace:
				break collect
			}
			if grace == nil && known() {
				t := time.NewTimer(learnGrace)
				defer t.Stop()
				grace = t.C
			}
		}
		cancel()
		wg.Wait()
		for len(arrived) > 0 {
			r := <-arrived
			answers[r.i] = r.a
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		var first error
		retryable := false
		for i, s := range d.srcs {
			if s.isDropped() || !answers[i].done {
				continue
			}
			a := answers[i]
			if a.err == nil {
				if ref == nil {
					ref = &a.id
				}
				continue
			}
			if first == nil {
				first = a.err
			}
			retryable = retryable || Retryable(a.err)
		}
		if ref != nil {
			return false, nil
		}
		if !retryable {
			return false, first
		}
		return false, &connError{fmt.Errorf("no source answered: %w", first)}
	})
	if err != nil {
		return err
	}
	d.setRef(*ref)
	for i, s := range d.srcs {
		a := answers[i]
		switch {
		case s.isDropped(), !a.done:
		case a.err == nil:
			if why := a.id.differsFrom(*ref); why != "" {
				d.drop(s, fmt.Errorf("its file differs: %s", why))
				continue
			}
			s.setIdent(a.id)
		case !Retryable(a.err):
			d.drop(s, a.err)
		}
	}
	return nil
}

// learnSource asks a source that has not answered yet, by its worker.
func (d *download) learnSource(ctx context.Context, w *worker) error {
	s := w.src
	if _, ok := s.ident(); ok {
		return nil
	}
	id, err := d.c.identOnce(ctx, s.t)
	if err != nil {
		return err
	}
	if why := id.differsFrom(d.refIdent()); why != "" {
		// Bytes of it already in the file can only be from the .part
		// resumed (State.Mirrors): its file changed since, maybe while
		// it was sending them.
		s.mu.Lock()
		s.stale = s.supplied
		s.mu.Unlock()
		return &sourceError{fmt.Errorf("its file differs: %s", why)}
	}
	s.setIdent(id)
	return nil
}

// sourceError is a failure that disqualifies one source (with mirrors,
// it is dropped; alone, the download fails).
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// liveSources counts the sources not dropped.
func (d *download) liveSources() int {
	n := 0
	for _, s := range d.srcs {
		if !s.isDropped() {
			n++
		}
	}
	return n
}

// drop stops using s for this download (unless it is the last source),
// with a warning. It reports whether s was dropped.
func (d *download) drop(s *source, why error) bool {
	d.dropMu.Lock()
	defer d.dropMu.Unlock()
	if s.isDropped() || d.liveSources() <= 1 {
		return false
	}
	s.mu.Lock()
	s.dropped = true
	s.mu.Unlock()
	d.emit(Event{Kind: EventSource, Done: d.done.Load(), Mirror: s.t.String(), Err: why})
	d.mu.Lock()
	sch := d.sch
	d.mu.Unlock()
	if sch != nil {
		sch.wakeAll()
	}
	return true
}

// digestFlags are the flags of a native GET or STAT to ep: FlagDigest
// unless digests are not checked or ep is a version 1 server.
func (c *Client) digestFlags(ep endpoint) wire.Flags {
	if c.opts.NoVerify {
		return 0
	}
	if _, old := c.v1.Load(ep.key()); old {
		return 0
	}
	return wire.FlagDigest
}

// olderServer reports whether err is a version 1 server's refusal of a
// flagged request, and remembers that ep is one (docs/PROTOCOL.md: the
// client then asks again without flags, on a new connection).
func (c *Client) olderServer(ep endpoint, err error) bool {
	var se *StatusError
	if errors.As(err, &se) && se.HTTP == 0 && se.Status == wire.StatusUnsupportedVersion {
		c.v1.Store(ep.key(), true)
		return true
	}
	return false
}

// respSHA256 is the digest a native response carries, in hex, or "".
func respSHA256(r wire.Response) string {
	if r.Flags&wire.FlagDigest == 0 {
		return ""
	}
	return hex.EncodeToString(r.Digest[:])
}
