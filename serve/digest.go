package serve

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/digest"
)

// Digests of served files (package digest): a response of a file carries
// its SHA-256 when the worker knows it for that exact version of the
// file, in HTTP's Repr-Digest (RFC 9530) and in the native response to a
// request with wire.FlagDigest. A miss queues the file for the worker's
// hashing goroutine and costs the response nothing.

// newDigests returns the worker's digest cache, nil with digests = false.
// A cache directory that cannot be used is logged, and digests stay in
// memory.
func newDigests(opts Options, root *rootDir, log *slog.Logger) (*digest.Cache, *digest.Disk) {
	if !opts.Digests {
		return nil, nil
	}
	var disk *digest.Disk
	if dir := opts.DigestCache; dir != "" && dir != config.DigestCacheMemory {
		var err error
		if disk, err = digest.OpenDisk(dir); err != nil {
			log.Warn("the digest cache directory cannot be used; digests stay in memory", "err", err)
			disk = nil
		}
	}
	open := func(p string) (int, error) {
		fd, _, err := openFile(root, p)
		return fd, err
	}
	walk := func(visit func(st *unix.Stat_t) bool) error { return digest.WalkDir(root.fd, visit) }
	return digest.New(digest.Options{Disk: disk, Open: open, Settle: digestSettle, Log: log, Walk: walk}), disk
}

// digestSettle is digest.Options.Settle (shortened by tests).
var digestSettle = digest.DefaultSettle

// digestFor returns the digest of the file fd, whose fstat is st, if
// known; on a miss the file is queued to be hashed. path names it in logs.
func (s *Server) digestFor(fd int, st *unix.Stat_t, path string) (digest.Sum, bool) {
	if s.digests == nil {
		return digest.Sum{}, false
	}
	return s.digests.Lookup(fd, st, path)
}

// knownDigest is digestFor without the queueing (STAT has no descriptor
// open for reading).
func (s *Server) knownDigest(st *unix.Stat_t) (digest.Sum, bool) {
	if s.digests == nil {
		return digest.Sum{}, false
	}
	return s.digests.Known(st)
}

// reprDigest adds the Repr-Digest header for sum if known (RFC 9530: the
// digest of the whole file, also on 206 and HEAD responses).
func (c *conn) reprDigest(sum digest.Sum, known bool) {
	if !known {
		return
	}
	h := c.http
	h.head = append(h.head, "Repr-Digest: sha-256=:"...)
	h.head = base64.StdEncoding.AppendEncode(h.head, sum[:])
	h.head = append(h.head, ":\r\n"...)
}

// ErrDigestsOff is ComputeDigests's error with digests = false.
var ErrDigestsOff = errors.New("digests are turned off (digests = false in the configuration)")

// ComputeDigests returns the digests of the files at paths (request
// paths, confined to the root), hashing those not known yet, one after
// the other, ahead of the background queue; ctx bounds the waiting (see
// digest.Cache.Compute).
func (s *Server) ComputeDigests(ctx context.Context, paths []string) ([]digest.Result, error) {
	if s.digests == nil {
		return nil, ErrDigestsOff
	}
	rs := make([]digest.Result, len(paths))
	for i, p := range paths {
		rs[i] = s.digests.Compute(ctx, p)
	}
	return rs, nil
}

// LearnDigest records a digest another worker computed.
func (s *Server) LearnDigest(k digest.Key, sum digest.Sum) {
	if s.digests != nil {
		s.digests.Learn(k, sum)
	}
}

// DigestStats are the digest cache's totals (zero with digests = false).
func (s *Server) DigestStats() digest.Stats {
	if s.digests == nil {
		return digest.Stats{}
	}
	return s.digests.Stats()
}

func (s *Server) closeDigests() {
	if s.digests != nil {
		s.digests.Close()
	}
	if s.digestDisk != nil {
		s.digestDisk.Close()
	}
}
