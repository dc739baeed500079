package ctl

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// digest answers a digest request.
func (s *Server) digest(ctx context.Context, req *Request) *Response {
	h, ok := s.Handler.(DigestHandler)
	if !ok {
		return &Response{Error: "this daemon does not compute digests"}
	}
	if err := checkDigestPaths(req.Paths); err != nil {
		return &Response{Error: err.Error()}
	}
	d := DefaultDigestTimeout
	if req.Timeout != "" {
		var err error
		if d, err = time.ParseDuration(req.Timeout); err != nil || d <= 0 {
			return &Response{Error: fmt.Sprintf("bad timeout %q: want a positive duration like 5m", req.Timeout)}
		}
	}
	ds, err := h.Digest(ctx, req.Paths, d)
	if err != nil {
		return &Response{Error: err.Error()}
	}
	return &Response{OK: true, Digests: ds}
}

// maxDigestPath is the longest path a digest request may name, the
// native protocol's limit.
const maxDigestPath = 4096

func checkDigestPaths(paths []string) error {
	if len(paths) == 0 {
		return fmt.Errorf("digest needs at least one path")
	}
	if len(paths) > MaxDigestPaths {
		return fmt.Errorf("digest of %d paths: at most %d per request", len(paths), MaxDigestPaths)
	}
	for _, p := range paths {
		if len(p) > maxDigestPath || !utf8.ValidString(p) || strings.IndexByte(p, 0) >= 0 {
			return fmt.Errorf("bad path %q: at most %d bytes of UTF-8 without NUL", p, maxDigestPath)
		}
	}
	return nil
}
