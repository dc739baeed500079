package serve

import (
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/httpx"
	"github.com/zfs-serve/zfs-serve/wire"
)

// httpDir answers a request for the directory p: a redirect to "p/" (so
// relative links in what it serves resolve inside it), else a listing
// (HTML, or JSON when asked), else 403. handleHTTP looked for its index
// files before (httpIndex).
func (c *conn) httpDir(p string) error {
	r := &c.http.req
	if !strings.HasSuffix(p, "/") {
		loc := dirLocation(p)
		if r.Query != "" {
			loc += "?" + r.Query
		}
		c.startHead(301)
		c.header("Location", loc)
		return c.finishError("moved to " + loc)
	}
	c.unlead() // a listing reads the directory (leader.go)
	if !c.s.opts.Listing {
		return c.httpError(403, "forbidden: "+p+" is a directory and listings are off")
	}
	body, ctype, omitted, err := c.listing(p)
	if err != nil {
		return c.httpRefused(err)
	}
	if len(body) > wire.MaxListBody {
		return c.httpError(500, "internal error: "+p+" has too many entries to list")
	}
	// A listing has no validators, but If-Match and If-None-Match apply
	// to it all the same (RFC 9110 section 13.2.1): "*" matches it, a
	// list of entity tags does not. The dates have nothing to compare
	// with and are ignored.
	switch httpx.Preconditions(r.IfMatch, r.IfUnmodifiedSince, r.IfNoneMatch, r.IfModifiedSince, "", time.Time{}) {
	case 304:
		c.startHead(304)
		c.header("Vary", "Accept")
		c.header("Cache-Control", "no-cache")
		return c.finishHead(false)
	case 412:
		return c.httpError(412, "precondition failed: "+p+" is a listing, which has no entity tag for If-Match")
	}
	if r.Method != "HEAD" { // a HEAD sends no body, so holds none
		held, release, ok := c.s.holdListing(body)
		if !ok {
			return c.httpRefused(errListingsBusy)
		}
		defer release()
		body = held
	}
	c.startHead(200)
	c.header("Content-Type", ctype)
	c.header("Vary", "Accept")
	c.header("Cache-Control", "no-cache")
	c.header("X-Content-Type-Options", "nosniff")
	if omitted > 0 {
		c.header("X-Listing-Omitted", strconv.Itoa(omitted))
	}
	c.contentLength(int64(len(body)))
	if r.Method == "HEAD" {
		return c.finishHead(false)
	}
	if err := c.finishHead(true); err != nil {
		return err
	}
	c.http.bytes += int64(len(body))
	return c.write(body, false)
}

// listing builds the listing of the directory p, in HTML or JSON as the
// request asks, and says how many names it left out (see readDir).
func (c *conn) listing(p string) (body []byte, ctype string, omitted int, err error) {
	r := &c.http.req
	wantJSON := httpx.WantsJSON(r.Accept, r.Query)
	key := "h" + p
	if wantJSON {
		key = "j" + p
	}
	done, ok := c.s.buildListing(key)
	if !ok {
		return nil, "", 0, errListingsBusy
	}
	defer done()
	var entries []httpx.Entry
	_, omitted, err = c.s.readDir(p, func(name string, st *unix.Stat_t) {
		e := httpx.Entry{Name: name, Kind: kindName(kindOf(st)), ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec)}
		if e.Kind == "file" {
			e.Size = st.Size
		}
		entries = append(entries, e)
	})
	if err != nil {
		return nil, "", 0, err
	}
	// The body is made in one allocation of its exact size, not in the
	// growth of append from a guess, whose garbage would be about the
	// body's size again (a guess per entry was short for files of a few
	// GB, whose sizes take more digits, and for names that need escaping).
	if wantJSON {
		body = httpx.AppendListingJSON(make([]byte, 0, httpx.ListingJSONLen(entries)), entries)
		ctype = "application/json"
	} else {
		body = httpx.AppendListingHTML(make([]byte, 0, httpx.ListingHTMLLen(p, entries, omitted)), p, entries, omitted)
		ctype = "text/html; charset=utf-8"
	}
	c.s.listSizes.set(key, int64(len(body)))
	return body, ctype, omitted, nil
}

// readDir calls each for every entry of the directory p (beneath the
// root), in name order, with its lstat, and returns the directory's stat
// and how many entries it left out because no request can name them:
// names that are not valid UTF-8, which both protocols refuse in a path,
// so that a listing never offers a name that cannot be fetched.
func (s *Server) readDir(p string, each func(name string, st *unix.Stat_t)) (*unix.Stat_t, int, error) {
	fd, st, err := openAt(s.root, p, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		if re, ok := err.(*reqError); ok && re.status == wire.StatusNotFound {
			// openat2 says ENOTDIR for a file opened with O_DIRECTORY
			// (and for "file/", which is looked at without its slash).
			if st, serr := statPath(s.root, path.Clean("/"+p)); serr == nil && kindOf(st) != wire.KindDir {
				return nil, 0, refuse(wire.StatusNotDirectory, "not a directory: %s", p)
			}
		}
		return nil, 0, err
	}
	dir := os.NewFile(uintptr(fd), p)
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, 0, refuse(wire.StatusInternal, "internal error: list %s: %v", p, err)
	}
	slices.Sort(names)
	omitted := 0
	for _, name := range names {
		if !wire.ValidName(name) {
			continue
		}
		if !utf8.ValidString(name) {
			omitted++
			continue
		}
		var est unix.Stat_t
		if err := unix.Fstatat(fd, name, &est, unix.AT_SYMLINK_NOFOLLOW); err == unix.ENOENT {
			continue // vanished since readdir
		} else if err != nil {
			// EACCES: a folder this worker may read but not search.
			// Listed without its entries, it would look empty, and a
			// recursive fetch of it would end complete with nothing.
			return nil, 0, openError(p, err)
		}
		each(name, &est)
	}
	return st, omitted, nil
}

func kindName(k wire.Kind) string {
	switch k {
	case wire.KindFile:
		return "file"
	case wire.KindDir:
		return "dir"
	case wire.KindSymlink:
		return "symlink"
	}
	return "other"
}

// dirLocation is the Location of the redirect from the directory p to its
// name with a slash: p cleaned, so that the value starts with exactly one
// "/". Kept as requested, "//evil.com" (naming the directory "evil.com")
// would be the scheme-relative reference "//evil.com/", which a browser
// follows to the host evil.com.
func dirLocation(p string) string {
	p = path.Clean("/" + p)
	if p == "/" {
		return p
	}
	return escapePath(p) + "/"
}

// escapePath percent-encodes each segment of the decoded path p.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
