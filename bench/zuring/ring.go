package main

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The few io_uring constants the probe uses (include/uapi/linux/io_uring.h).
const (
	opNop     = 0
	opSendmsg = 9
	opSend    = 26
	opRecv    = 27

	enterGetEvents = 1 << 0 // IORING_ENTER_GETEVENTS

	featSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000
)

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32 // msg_flags for the send and receive opcodes
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	_           uint64
}

// cqe is struct io_uring_cqe (16 bytes; no IORING_SETUP_CQE32).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// params is struct io_uring_params with its two offset structs inlined.
type params struct {
	sqEntries    uint32
	cqEntries    uint32
	flags        uint32
	sqThreadCPU  uint32
	sqThreadIdle uint32
	features     uint32
	wqFd         uint32
	_            [3]uint32
	sqOff        struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, _ uint32
		_                                                           uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, _ uint32
		_                                                           uint64
	}
}

// ring is a minimal io_uring: one submission queue filled by this thread,
// one completion queue reaped by it. Not safe for concurrent use.
type ring struct {
	fd      int
	sqFlags *uint32 // written by the kernel: IORING_SQ_TASKRUN and others
	rawWait bool    // block's wait is a raw system call (-rawwait)
	sqHead  *uint32 // written by the kernel
	sqTail  *uint32 // written by us
	sqMask  uint32
	sqes    []sqe
	tail    uint32 // our next SQE, published to *sqTail by enter
	entries uint32
	cqHead  *uint32 // written by us
	cqTail  *uint32 // written by the kernel
	cqMask  uint32
	cqes    []cqe
	maps    [][]byte
}

// newRing sets up a ring of entries submission slots. It uses one mapping
// for both rings where the kernel offers IORING_FEAT_SINGLE_MMAP.
func newRing(entries, flags uint32) (*ring, error) {
	p := params{flags: flags}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ring{fd: int(fd), entries: p.sqEntries}
	mmap := func(off int64, size uint32) ([]byte, error) {
		b, err := unix.Mmap(r.fd, off, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("mmap io_uring at %#x: %w", off, err)
		}
		r.maps = append(r.maps, b)
		return b, nil
	}
	sqSize := p.sqOff.array + p.sqEntries*4
	cqSize := p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(cqe{}))
	single := p.features&featSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	sq, err := mmap(offSQRing, sqSize)
	if err != nil {
		r.close()
		return nil, err
	}
	cq := sq
	if !single {
		if cq, err = mmap(offCQRing, cqSize); err != nil {
			r.close()
			return nil, err
		}
	}
	sqeMem, err := mmap(offSQEs, p.sqEntries*uint32(unsafe.Sizeof(sqe{})))
	if err != nil {
		r.close()
		return nil, err
	}
	r.sqHead = (*uint32)(unsafe.Pointer(&sq[p.sqOff.head]))
	r.sqTail = (*uint32)(unsafe.Pointer(&sq[p.sqOff.tail]))
	r.sqFlags = (*uint32)(unsafe.Pointer(&sq[p.sqOff.flags]))
	r.sqMask = *(*uint32)(unsafe.Pointer(&sq[p.sqOff.ringMask]))
	array := unsafe.Slice((*uint32)(unsafe.Pointer(&sq[p.sqOff.array])), p.sqEntries)
	for i := range array {
		array[i] = uint32(i) // slot i of the ring is always SQE i
	}
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&sqeMem[0])), p.sqEntries)
	r.tail = atomic.LoadUint32(r.sqTail)
	r.cqHead = (*uint32)(unsafe.Pointer(&cq[p.cqOff.head]))
	r.cqTail = (*uint32)(unsafe.Pointer(&cq[p.cqOff.tail]))
	r.cqMask = *(*uint32)(unsafe.Pointer(&cq[p.cqOff.ringMask]))
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&cq[p.cqOff.cqes])), p.cqEntries)
	return r, nil
}

func (r *ring) close() error {
	for _, b := range r.maps {
		unix.Munmap(b)
	}
	r.maps = nil
	return unix.Close(r.fd)
}

var errRingFull = errors.New("io_uring submission queue full")

// get returns the next free SQE, zeroed, or errRingFull. The entry is
// submitted by the next enter.
func (r *ring) get() (*sqe, error) {
	if r.tail-atomic.LoadUint32(r.sqHead) >= r.entries {
		return nil, errRingFull
	}
	s := &r.sqes[r.tail&r.sqMask]
	*s = sqe{}
	r.tail++
	return s, nil
}

// pending is the number of SQEs got but not yet taken by the kernel.
func (r *ring) pending() uint32 {
	return r.tail - atomic.LoadUint32(r.sqHead)
}

// enter publishes every SQE got so far and calls io_uring_enter once to
// submit them; with wait > 0 it also waits until at least wait completions
// are in the completion queue. It retries on EINTR.
func (r *ring) enter(wait uint32) error {
	var flags uintptr
	if wait > 0 {
		flags = enterGetEvents
	}
	return r.enterFlags(wait, flags)
}

// enterFlags is enter with io_uring_enter's flags given: GETEVENTS with
// wait 0 runs the task's pending completions without waiting.
func (r *ring) enterFlags(wait uint32, flags uintptr) error {
	atomic.StoreUint32(r.sqTail, r.tail)
	for {
		_, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.pending()), uintptr(wait), flags, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
		return nil
	}
}

// reap calls f for each completion in the queue and returns how many;
// f must not enter.
func (r *ring) reap(f func(c cqe)) int {
	head := *r.cqHead
	tail := atomic.LoadUint32(r.cqTail)
	for i := head; i != tail; i++ {
		f(r.cqes[i&r.cqMask])
	}
	atomic.StoreUint32(r.cqHead, tail)
	return int(tail - head)
}

// block submits what is queued and waits for a completion. By default
// it is an ordinary system call, as a wait that may sleep must be for the
// runtime: a raw one holds the thread's P while it sleeps, so nothing
// else runs on it, and a garbage collection waits until the call returns.
// The probe runs one goroutine per process, where -rawwait (a raw call)
// measures what the runtime's part of the wait costs; on EINTR (the
// runtime's preemption signal) it yields, so that a garbage collection
// does not wait for the next completion. wait is ignored: it is always 1.
func (r *ring) block(_ uint32, flags uintptr) error {
	atomic.StoreUint32(r.sqTail, r.tail)
	for {
		var errno unix.Errno
		if r.rawWait {
			_, _, errno = unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.pending()), 1, flags, 0, 0)
		} else {
			_, _, errno = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.pending()), 1, flags, 0, 0)
		}
		if errno == unix.EINTR {
			if r.rawWait {
				// Most likely the runtime's preemption signal: a
				// collection waits to stop this goroutine, which
				// a loop of raw calls never lets it do.
				runtime.Gosched()
			}
			continue
		}
		if errno != 0 {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
		return nil
	}
}
