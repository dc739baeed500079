package serve

import (
	"sync"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/wire"
)

// A worker's memory for listings. A listing (LIST, or an HTTP folder) is
// built whole before it is sent, and held until the client has read it,
// which a client that reads nothing makes as long as its timeouts allow.
// maxListBytes bounds the bytes held at once; what keeps that a bound on
// the worker's memory, not only on the bytes:
//   - A worker refuses a listing as busy before it builds it when it
//     has no room for it: no room at all, or less than the listing's size
//     when it was last built (listSizes). A refusal only once built leaves
//     the bytes held below the bound by up to one listing's size, where
//     a look at the bound alone would never refuse: with 9.6 MB listings
//     the worker holds 13 (125 MB of 128 MiB) and would build every later
//     request only to refuse it. So a flood of requests for a huge folder
//     costs a look at a counter each, not a build each.
//   - A large body is held outside Go's heap, in a private anonymous
//     mapping of its exact size, unmapped as soon as it is sent. On the
//     heap it would carry the collector's headroom (the heap grows to
//     twice what is live before a collection), the slack of the slice's
//     growth (up to twice its length), and its pages would return to the
//     kernel only when the scavenger gets round to them. Measured with
//     150 clients asking for a 9.6 MB listing and reading nothing, a
//     worker peaked at 356-383 MB with its 125 MB of listings on the
//     heap, at 175-190 MB with them outside it (docs/HTTP.md).
// What remains on the heap is a build's names and entries, two builds at
// most (maxListBuilds), garbage once the body is made.

// maxListBytes bounds the listing bytes a worker holds for sending at
// once: two of the largest listings.
const maxListBytes = 2 * wire.MaxListBody

// offHeapMin is the least body held in a mapping of its own; a smaller
// one stays on the heap, where the mapping's system calls, page faults
// and whole pages would cost more than they save. Measured: a listing of
// 23 KB (150 files, 480 us of the server's CPU) costs 3-4% more CPU in a
// mapping; 1200 clients reading a 247 KB listing at once, which the
// kernel's socket buffers took whole, peaked at 216-239 MB per worker
// with the bodies on the heap until sent, at 18-37 MB with them mapped.
const offHeapMin = 16 << 10

// errListingsBusy refuses a listing the worker has no room for.
var errListingsBusy = refuse(wire.StatusBusy, "busy: too many large listings being sent, retry shortly")

// listingsFull says whether the worker has no room for the listing key
// (see listSizes): it holds as many listing bytes as it may, or fewer by
// less than that listing's size when it was last built. It then refuses
// the listing before it builds it.
func (s *Server) listingsFull(key string) bool {
	held := s.listBytes.Load()
	if held >= maxListBytes {
		return true
	}
	need := s.listSizes.get(key)
	return need > 0 && held+need > maxListBytes
}

// listSizes remembers the size of the last listings built, by key: the
// format and the path ("h", "j" or "n" for HTML, JSON and native, then
// the path as requested). A listing is built to be known, so the size is
// what it had last time; the size after a change shows at the next build,
// which a size that grew is still refused at by holdListing, and one that
// shrank waits for the room it had. At most listSizesMax are kept (a
// path's and the size's bytes each), any other dropped to make room.
type listSizes struct {
	mu sync.Mutex
	m  map[string]int64
}

const listSizesMax = 256

func (l *listSizes) get(key string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[key]
}

func (l *listSizes) set(key string, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.m[key]; !ok && len(l.m) >= listSizesMax {
		for k := range l.m {
			delete(l.m, k)
			break
		}
	}
	if l.m == nil {
		l.m = make(map[string]int64)
	}
	l.m[key] = n
}

// holdListing counts body against maxListBytes and returns the bytes to
// send, which are body's own or a copy outside the heap, and the function
// that gives them back once sent (after which they must not be touched).
// ok is false, and nothing is held, when body does not fit.
func (s *Server) holdListing(body []byte) (held []byte, release func(), ok bool) {
	n := int64(len(body))
	if s.listBytes.Add(n) > maxListBytes {
		s.listBytes.Add(-n)
		return nil, nil, false
	}
	giveBack := func() { s.listBytes.Add(-n) }
	if len(body) < offHeapMin {
		return body, giveBack, true
	}
	m, err := unix.Mmap(-1, 0, len(body), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil { // no address space: keep the heap's copy
		return body, giveBack, true
	}
	copy(m, body)
	return m, func() {
		unix.Munmap(m)
		giveBack()
	}, true
}
