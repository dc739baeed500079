package serve

import (
	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// list answers LIST with one directory's entries, sorted by name. Kinds
// come from lstat: symlinks are reported as such, and a client that wants
// what one points to asks with STAT or GET, which resolve it beneath the root.
func (c *conn) list(q *wire.Request) error {
	if !c.s.opts.Listing {
		return refuse(wire.StatusForbidden, "forbidden: listings are off on this server (config listing = false)")
	}
	key := "n" + q.Path
	done, ok := c.s.buildListing(key)
	if !ok {
		return errListingsBusy
	}
	var body []byte
	count, tooBig := 0, false
	st, _, err := c.s.readDir(q.Path, func(name string, est *unix.Stat_t) {
		if tooBig {
			return
		}
		e := wire.Entry{Kind: kindOf(est), Name: name, MTime: mtimeNanos(est)}
		if e.Kind == wire.KindFile {
			e.Size = est.Size
		}
		if len(body)+wire.EntryHeaderLen+len(name) > wire.MaxListBody {
			tooBig = true
			return
		}
		if body == nil {
			body = make([]byte, 0, 4096)
		}
		body = wire.AppendEntry(body, &e)
		count++
	})
	done()
	if err != nil {
		return err
	}
	if tooBig {
		return refuse(wire.StatusInternal, "internal error: %s has too many entries to list (limit %d bytes)", q.Path, wire.MaxListBody)
	}
	c.s.listSizes.set(key, int64(len(body)))
	body, release, ok := c.s.holdListing(body)
	if !ok {
		return errListingsBusy
	}
	defer release()
	resp := wire.Response{Status: wire.StatusOK, Kind: wire.KindDir, Size: int64(count), MTime: mtimeNanos(st), BodyLen: int64(len(body))}
	if err := c.writeHeader(&resp, len(body) > 0); err != nil {
		return err
	}
	return c.write(body, false)
}

// maxListBuilds bounds the listings (LIST, HTTP) a worker builds at once.
// Building one holds every name of the directory and the whole body in
// memory, tens of megabytes for a directory of 100000 files, before
// maxListBytes can refuse it (listmem.go): without a bound, concurrent
// requests for a huge directory would each hold that much.
const maxListBuilds = 2

// buildListing waits until the worker builds fewer than maxListBuilds
// listings, and returns the function to call when this one is built. ok
// is false, with nothing to call, when the worker has no room for the
// listing key (listingsFull, listmem.go), looked at before the wait and
// after it: the listing would be refused once built, so it is not built.
// The caller records the size it built (listSizes.set).
func (s *Server) buildListing(key string) (done func(), ok bool) {
	if s.listingsFull(key) {
		return nil, false
	}
	s.listBuilds <- struct{}{}
	if s.listingsFull(key) {
		<-s.listBuilds
		return nil, false
	}
	return func() { <-s.listBuilds }, true
}
