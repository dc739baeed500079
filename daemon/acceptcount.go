package daemon

// The count of connections a worker accepted itself, in the accept
// dispatch mode (acceptmode.go), in memory shared with the supervisor.
// The worker reports what it accepted in batches (msgAccepted, at most
// every doneDelay), so a worker that dies has usually accepted a few
// connections it has not reported; in the handoff mode the supervisor
// knows every fd it passed. So the supervisor sends each worker, with its
// listening sockets, a memfd of one counter (its size sealed) that both
// map: the worker adds one for each connection it accepts and serves,
// before it counts it for msgAccepted; once the worker is gone, the
// counter less what msgAccepted reported is what it accepted and never
// reported, and connections_cut and the accepted total count those too.
// One atomic add per connection, on a page no other process writes.

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
)

// countSize is the shared counter's size: one uint64.
const countSize = 8

// acceptCount is the supervisor's view of a worker's counter.
type acceptCount struct {
	mem      []byte // read-only mapping
	reported uint64 // what msgAccepted reported (the worker's channel reader only)
}

// newAcceptCount makes a counter and returns it with the memfd to send
// the worker (the caller closes it). The memfd's size is sealed: the
// worker, which may run as a less privileged user, maps it read-write,
// and a truncate would make the supervisor's read of its mapping fault
// (SIGBUS) and bring the whole server down.
func newAcceptCount() (*acceptCount, int, error) {
	const flags = unix.MFD_CLOEXEC | unix.MFD_ALLOW_SEALING
	// Not executable, for good (Linux 6.3; earlier kernels refuse the flag).
	fd, err := unix.MemfdCreate("zfs-serve-accepted", flags|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) {
		fd, err = unix.MemfdCreate("zfs-serve-accepted", flags)
	}
	if err != nil {
		return nil, -1, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, countSize); err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("ftruncate memfd: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("seal memfd: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, countSize, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("mmap memfd: %w", err)
	}
	return &acceptCount{mem: mem}, fd, nil
}

// unreported returns what the worker counted and never reported, at
// most most, and unmaps the counter: call it once the worker is gone.
// The worker writes the counter: what it says is bounded by what it
// could have held.
func (c *acceptCount) unreported(most uint64) uint64 {
	n := (*atomic.Uint64)(unsafe.Pointer(&c.mem[0])).Load()
	unix.Munmap(c.mem)
	c.mem = nil
	if n < c.reported {
		return 0 // not a counter this worker kept
	}
	return min(n-c.reported, most)
}

// mapAcceptCount maps the counter the supervisor sent (the worker's side);
// the caller closes fd.
func mapAcceptCount(fd int) (*atomic.Uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat counter: %w", err)
	}
	if st.Size != countSize {
		return nil, fmt.Errorf("counter of %d bytes, want %d", st.Size, countSize)
	}
	mem, err := unix.Mmap(fd, 0, countSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap counter: %w", err)
	}
	// The mapping lives as long as the worker.
	return (*atomic.Uint64)(unsafe.Pointer(&mem[0])), nil
}

// sentAcceptCount records the counter sent to w (loop).
func (w *workerProc) sentAcceptCount(c *acceptCount) { w.accCount.Store(c) }

// reportedAccepts adds n to what w reported (its channel reader).
func (w *workerProc) reportedAccepts(n uint32) {
	if c := w.accCount.Load(); c != nil {
		c.reported += uint64(n)
	}
}

// unreportedAccepts returns the connections w accepted and never
// reported, once it is gone (its channel reader), at most
// mostUnreported.
func (s *Supervisor) unreportedAccepts(w *workerProc) int64 {
	c := w.accCount.Swap(nil)
	if c == nil {
		return 0
	}
	n := int64(c.unreported(mostUnreported(w.gen.cfg)))
	s.metrics.accepted.Add(uint64(n))
	return n
}

// mostUnreported bounds what a worker with configuration c can have
// accepted and not reported (msgAccepted comes before the msgDone of any
// of them): those still open, no more than its budget, itself no more
// than max_connections, and those finished whose msgDone was not sent
// yet, no more than outbox's queue and batch.
func mostUnreported(c *config.Config) uint64 {
	return uint64(max(c.MaxConnections, 0)) + doneQueue + 4*maxBatch
}
