package fetch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// hasher computes the SHA-256 of a file as it is downloaded, in order,
// whatever order its bytes arrive in. It follows the frontier: the offset
// below which every byte is in place.
//
//   - Bytes that pass through memory at the frontier (copy mode, one
//     connection; mmap mode, where the mapping is memory) are hashed there
//     and then, by the receiving goroutine (inline).
//   - Bytes that do not (splice, which never brings them into user memory;
//     ranges that arrive ahead of the frontier; the prefix a resumed .part
//     already had) are read back from the .part by a goroutine that
//     follows the frontier while the download goes on, so they come from
//     the page cache, once each.
//
// A stream (stdout) has no file to read back: every byte must pass inline,
// in order (a stream is received in copy mode when hashed).
type hasher struct {
	mu   sync.Mutex
	h    hash.Hash
	next int64 // bytes hashed so far: [0, next)

	f        *os.File     // the .part, read back from; nil for a stream
	frontier func() int64 // bytes in place from 0
	kick     chan struct{}
	pending  atomic.Int64 // bytes put in place since the last kick
	quit     chan struct{}
	wg       sync.WaitGroup
	buf      []byte
	err      error // a read-back failure
}

// newHasher returns a hasher of f (nil for a stream) whose bytes up to
// frontier() are in place.
func newHasher(f *os.File, frontier func() int64) *hasher {
	return &hasher{h: sha256.New(), f: f, frontier: frontier, kick: make(chan struct{}, 1)}
}

// inline hashes b, the bytes just written at off, if they are the next
// bytes to hash. It never waits for the read-back goroutine: when that
// holds the lock, the bytes are left to it.
func (h *hasher) inline(off int64, b []byte) {
	if h == nil || !h.mu.TryLock() {
		return
	}
	if off == h.next {
		h.h.Write(b)
		h.next += int64(len(b))
	}
	h.mu.Unlock()
}

// readBackBatch: the read-back goroutine is woken once this many bytes
// have been put in place (not for every receive call), so that it reads
// and hashes in large pieces rather than switching in and out.
const readBackBatch = 4 << 20

// wake tells the read-back goroutine that n more bytes are in place, so
// the frontier may have moved.
func (h *hasher) wake(n int64) {
	if h == nil || h.f == nil || h.pending.Add(n) < readBackBatch {
		return
	}
	h.pending.Store(0)
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// start starts the read-back goroutine (files only).
func (h *hasher) start() {
	if h == nil || h.f == nil || h.quit != nil {
		return
	}
	h.quit = make(chan struct{})
	h.wg.Go(func() {
		for {
			if !h.catchUp(h.frontier(), h.quit) {
				return
			}
			select {
			case <-h.quit:
				return
			case <-h.kick:
			}
		}
	})
}

// stop stops the read-back goroutine.
func (h *hasher) stop() {
	if h == nil || h.quit == nil {
		return
	}
	close(h.quit)
	h.wg.Wait()
	h.quit = nil
}

// catchUp reads back and hashes [next, upTo) of the file, a chunk at a
// time (the lock is taken per chunk, so inline hashing resumes as soon as
// it has caught up). It returns false on a read error or when quit closes.
func (h *hasher) catchUp(upTo int64, quit chan struct{}) bool {
	if h.buf == nil {
		h.buf = make([]byte, 1<<20)
	}
	for {
		h.mu.Lock()
		if h.err != nil {
			h.mu.Unlock()
			return false
		}
		if h.next >= upTo {
			h.mu.Unlock()
			return true
		}
		n := min(int64(len(h.buf)), upTo-h.next)
		got, err := h.f.ReadAt(h.buf[:n], h.next)
		if got > 0 {
			h.h.Write(h.buf[:got])
			h.next += int64(got)
		}
		if err != nil && !(err == io.EOF && int64(got) == n) {
			h.err = &LocalError{Op: "read back", Path: h.f.Name(), Err: unwrapPathErr(err)}
			h.mu.Unlock()
			return false
		}
		h.mu.Unlock()
		select {
		case <-quit:
			return false
		default:
		}
	}
}

// sum finishes the hash of a file of size bytes, all in place: it reads
// back what is left and returns the digest in hex.
func (h *hasher) sum(size int64) (string, error) {
	h.stop()
	if h.f != nil && !h.catchUp(size, nil) {
		return "", h.err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return "", h.err
	}
	if h.next != size {
		return "", &VerifyError{Msg: fmt.Sprintf("internal error: hashed %d of %d bytes", h.next, size)}
	}
	return hex.EncodeToString(h.h.Sum(nil)), nil
}
