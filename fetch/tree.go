package fetch

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/zfs-serve/zfs-serve/wire"
)

// TreeEntry is one thing under a directory listed by Walk.
type TreeEntry struct {
	// Rel is the slash-separated path below the walked directory. Every
	// component is a name the server listed and wire.ValidName accepted:
	// no "", ".", ".." or "/", so it is safe to join to a local directory.
	Rel string
	// Kind is KindDir or KindFile (a symlink to a file is listed as the
	// file it names); KindSymlink for a symlink to a directory, which Walk
	// does not follow (it could loop); KindOther for what cannot be
	// fetched (FIFOs, devices, broken links).
	Kind  wire.Kind
	Size  int64
	MTime int64
	// Omitted is set on an entry of its own, with Rel the directory ("" for
	// the walked one) and Kind KindOther, when a server's HTTP listing of
	// that directory says it left names out (zfs-serve's X-Listing-Omitted:
	// names that are not valid UTF-8, which no URL can name).
	Omitted int
	// Vanished is set, with Kind KindOther, on a directory its parent's
	// listing named that was gone, or no longer a directory, when Walk
	// listed it (a tree being written to). Walk goes on without it, as a
	// file that vanishes costs only itself.
	Vanished bool
}

// maxDepth bounds how deep Walk descends.
const maxDepth = 256

// Walk lists the tree under the directory t with LIST (or, over HTTP, the
// server's JSON listings: listing.go), depth first, each directory's
// entries in name order, directories before their contents. Requests are
// retried like downloads; report receives the Retry events (File -1, Name
// t's URL).
func (c *Client) Walk(ctx context.Context, t Target, report func(Event)) ([]TreeEntry, error) {
	rep := c.treeReport(t, report)
	var out []TreeEntry
	var walk func(rel string, depth int) error
	walk = func(rel string, depth int) error {
		if depth > maxDepth {
			return fmt.Errorf("%s: deeper than %d directories", t.Join(rel), maxDepth)
		}
		dir := t
		if rel != "" {
			dir = t.Join(rel)
		}
		var es []wire.Entry
		var omitted int
		err := c.retry(ctx, rep, func() (bool, error) {
			if t.IsHTTP() {
				var err error
				es, omitted, err = c.listHTTP(ctx, dir)
				return false, err
			}
			return false, c.withConn(ctx, endpointOf(t), func(conn *Conn) error {
				var err error
				es, err = conn.List(dir.Path)
				return err
			})
		})
		if err != nil {
			return err
		}
		if omitted > 0 {
			out = append(out, TreeEntry{Rel: rel, Kind: wire.KindOther, Omitted: omitted})
		}
		slices.SortFunc(es, func(a, b wire.Entry) int { return strings.Compare(a.Name, b.Name) })
		for _, e := range es {
			if !wire.ValidName(e.Name) {
				return fmt.Errorf("LIST %s: invalid entry name %q", dir.Path, e.Name)
			}
			te := TreeEntry{Rel: path.Join(rel, e.Name), Kind: e.Kind, Size: e.Size, MTime: e.MTime}
			if e.Kind == wire.KindSymlink && t.IsHTTP() {
				// HEAD follows the link: a file is fetched as that file.
				id, err := c.identRetry(ctx, t.Join(te.Rel), rep)
				var se *StatusError
				switch {
				case err == nil:
					te.Kind, te.Size, te.MTime = wire.KindFile, id.Size, id.MTime
				case Retryable(err):
					return err
				case errors.As(err, &se) && se.Status == wire.StatusNotRegular:
					te.Kind = wire.KindSymlink // to a directory
				default:
					te.Kind = wire.KindOther
				}
			} else if e.Kind == wire.KindSymlink {
				// STAT follows the link: a file is fetched as that file.
				st, err := c.stat(ctx, t.Join(te.Rel), rep)
				switch {
				case err != nil && Retryable(err):
					return err
				case err != nil:
					te.Kind = wire.KindOther
				case st.Kind == wire.KindFile:
					te.Kind, te.Size, te.MTime = wire.KindFile, st.Size, st.MTime
				case st.Kind == wire.KindDir:
					te.Kind = wire.KindSymlink
				default:
					te.Kind = wire.KindOther
				}
			}
			out = append(out, te)
			if te.Kind == wire.KindDir {
				i := len(out) - 1
				if err := walk(te.Rel, depth+1); err != nil {
					if !vanished(err) {
						return err
					}
					// Its own LIST failed before any entry of it was
					// added (deeper ones are handled there). Replaced
					// by a file: fetched as that file.
					out[i].Kind, out[i].Vanished = wire.KindOther, true
					if t.IsHTTP() {
						continue
					}
					st, serr := c.stat(ctx, t.Join(te.Rel), rep)
					switch {
					case serr != nil && Retryable(serr):
						return serr
					case serr == nil && st.Kind == wire.KindFile:
						out[i] = TreeEntry{Rel: te.Rel, Kind: wire.KindFile, Size: st.Size, MTime: st.MTime}
					}
				}
			}
		}
		return nil
	}
	if err := walk("", 0); err != nil {
		return out, err
	}
	return out, nil
}

// vanished reports whether err, a directory's LIST refused, says it is
// no longer there as a directory: not found, or (native only: over HTTP
// that status also means a listing zfetch cannot read) not a directory.
func vanished(err error) bool {
	var se *StatusError
	if !errors.As(err, &se) {
		return false
	}
	if se.HTTP != 0 {
		return se.HTTP == 404 || se.HTTP == 410
	}
	return se.Status == wire.StatusNotFound || se.Status == wire.StatusNotDirectory
}

// stat is one STAT with retries.
func (c *Client) stat(ctx context.Context, t Target, report func(Event)) (wire.Response, error) {
	var resp wire.Response
	err := c.retry(ctx, report, func() (bool, error) {
		return false, c.withConn(ctx, endpointOf(t), func(conn *Conn) error {
			var err error
			resp, err = conn.Stat(t.Path)
			return err
		})
	})
	return resp, err
}

// treeReport adapts report (nil: none) for events about t as a whole,
// before any file of it: File -1, named by t's URL.
func (c *Client) treeReport(t Target, report func(Event)) func(Event) {
	return func(e Event) {
		if report == nil {
			return
		}
		e.Time, e.File, e.Name, e.Source, e.Total = c.opts.Now(), -1, t.String(), t.String(), -1
		report(e)
	}
}

// listHTTP asks an HTTP server for the JSON listing of the directory dir
// (following redirects): "?format=json" for zfs-serve, which nginx with
// autoindex_format json ignores, and Accept: application/json.
// omitted is what the server says it left out (X-Listing-Omitted).
func (c *Client) listHTTP(ctx context.Context, dir Target) (es []wire.Entry, omitted int, err error) {
	loc := dir.dir()
	loc.Query = "format=json"
	for hops := 0; ; hops++ {
		var body []byte
		var next *Target
		var ctype string
		omitted = 0
		err = c.withConn(ctx, endpointOf(loc), func(conn *Conn) error {
			resp, err := conn.httpDo("GET", loc, "Accept", "application/json")
			if err != nil {
				return err
			}
			switch {
			case isRedirect(resp.Code):
				conn.broken = true
				to, err := redirectTo(loc, resp)
				if err != nil {
					return err
				}
				next = &to
				return nil
			case resp.Code != 200:
				conn.broken = true
				return httpStatusError(loc, resp, c.opts.Now())
			}
			ctype = resp.Header.get("content-type")
			if n, err := strconv.Atoi(resp.Header.get("x-listing-omitted")); err == nil && n > 0 {
				omitted = n
			}
			body, err = conn.readSmallBody(resp, wire.MaxListBody)
			return err
		})
		if err != nil {
			return nil, 0, err
		}
		if next != nil {
			if hops >= maxRedirects {
				return nil, 0, &StatusError{Status: wire.StatusForbidden, Path: dir.Path, HTTP: 310,
					Message: fmt.Sprintf("%s: more than %d redirects", dir, maxRedirects)}
			}
			loc = *next
			continue
		}
		es, err = parseListing(body)
		var nl *errNotListing
		if errors.As(err, &nl) {
			return nil, 0, &StatusError{Status: wire.StatusNotDirectory, Path: dir.Path, HTTP: 200,
				Message: fmt.Sprintf("%s: the server's listing is not one zfetch can read (%s, Content-Type %q); -r over HTTP needs zfs-serve's JSON listing or nginx's autoindex_format json",
					loc, nl.why, ctype)}
		}
		if err != nil {
			return nil, 0, httpErrorf("listing %s: %v", loc, err)
		}
		return es, omitted, nil
	}
}
