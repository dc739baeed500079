package fetch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/zfs-serve/zfs-serve/httpx"
	"github.com/zfs-serve/zfs-serve/wire"
)

// Machine-readable directory listings of HTTP servers, for -r:
//
//   - zfs-serve (GET /dir/?format=json, docs/HTTP.md):
//     [{"name":"a","kind":"file","size":10,"mtime":"2026-12-06T06:31:56.123456789Z"}, ...]
//     kind is file, dir, symlink or other; size only for files.
//   - nginx with autoindex_format json:
//     [{"name":"a","type":"file","mtime":"Sun, 06 Dec 2026 07:31:37 GMT","size":3}, ...]
//     type is file, directory or other.
//
// Anything else (an HTML listing, a JSON object) is not a listing.

// errNotListing: the body is not a listing zfetch can read.
type errNotListing struct{ why string }

func (e *errNotListing) Error() string { return e.why }

// listItem is one entry of either format.
type listItem struct {
	Name  *string `json:"name"`
	Kind  string  `json:"kind"` // zfs-serve
	Type  string  `json:"type"` // nginx
	Size  *int64  `json:"size"`
	MTime string  `json:"mtime"`
}

// parseListing decodes a JSON listing into entries with wire kinds. Names
// are checked as the native LIST's are (wire.ValidName): no "", ".", ".."
// or "/" reaches the caller.
func parseListing(b []byte) ([]wire.Entry, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '[' {
		return nil, &errNotListing{"not a JSON array"}
	}
	var items []listItem
	if err := json.Unmarshal(b, &items); err != nil {
		return nil, &errNotListing{fmt.Sprintf("bad JSON listing: %v", err)}
	}
	es := make([]wire.Entry, 0, len(items))
	for _, it := range items {
		if it.Name == nil {
			return nil, &errNotListing{"a listing entry has no name"}
		}
		name := *it.Name
		if !wire.ValidName(name) {
			return nil, fmt.Errorf("invalid entry name %q in the listing", name)
		}
		e := wire.Entry{Name: name, Size: -1}
		switch k := it.Kind + "|" + it.Type; k {
		case "file|", "|file":
			e.Kind = wire.KindFile
		case "dir|", "|directory":
			e.Kind = wire.KindDir
		case "symlink|":
			e.Kind = wire.KindSymlink
		case "other|", "|other":
			e.Kind = wire.KindOther
		default:
			return nil, &errNotListing{fmt.Sprintf("entry %q: unknown kind %q", name, k)}
		}
		if it.Size != nil {
			if *it.Size < 0 {
				return nil, fmt.Errorf("entry %q: negative size %d", name, *it.Size)
			}
			e.Size = *it.Size
		}
		if it.MTime != "" {
			if t, err := time.Parse(time.RFC3339Nano, it.MTime); err == nil {
				e.MTime = t.UnixNano()
			} else if t, ok := httpx.ParseHTTPDate(it.MTime); ok {
				e.MTime = t.UnixNano()
			}
		}
		es = append(es, e)
	}
	return es, nil
}
