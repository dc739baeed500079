// Package logbuf is the writer under a daemon's logger that never makes a
// caller wait for the log's reader. Each Write is one log record (as
// log/slog's handlers write them); records wait in memory and one
// goroutine writes them out in batches. A reader that stops (a journal
// that hangs, a pipe nobody reads) costs log lines, never service: once
// Max bytes wait, further records are dropped and counted, and the count
// is reported when the reader takes data again.
//
// A batch is written in pieces of whole records of at most Atomic bytes
// (PIPE_BUF), so that on a pipe or a stream socket shared with other
// processes (a supervisor and its workers share one stderr) no record is
// split by another's. A record longer than that is written on its own.
// NewAppend is for a file opened with O_APPEND, where one write(2) is
// never split by another's whatever its size (on a local file system):
// its batches are larger (AppendHigh) and go out in one write each, and
// a failed write (a full disk) is reported rather than ignored.
package logbuf

import (
	"bytes"
	"io"
	"sync"
	"time"
)

const (
	// Atomic is the largest write a pipe keeps whole among concurrent
	// writers (PIPE_BUF on Linux).
	Atomic = 4096
	// Max bounds the bytes that wait while a batch is being written (so
	// a stalled reader holds at most about twice this in memory).
	Max = 1 << 20
	// High is the batch that goes out without waiting for Delay.
	High = 64 << 10
	// Delay is the longest a record waits for others to share its
	// writes while fewer than High bytes wait.
	Delay = 50 * time.Millisecond

	// AppendHigh is NewAppend's High, and AppendMax its Max. Each write
	// is an ordinary system call, which costs a worker far more than its
	// bytes: the runtime hands the thread's P on when the call takes over
	// 20 µs, and sysmon then polls every 20 µs for a millisecond. A busy
	// access log in 64 KiB writes cost 3.2 µs per request, in batches of
	// Delay (about 340 KB at 45,000 lines a second) 1.2 µs
	// (bench/findings.md, "Eleventh round").
	AppendHigh = 512 << 10
	AppendMax  = 4 * AppendHigh
)

// Writer batches records for w. Its methods are safe for concurrent use.
//
// The writing goroutine wakes when Delay has passed since the first
// record of a batch, or when High bytes wait: a few dozen times a second
// under any load, not once per record, so that a busy log costs its
// callers the formatting and a copy and no wake-up.
type Writer struct {
	w      io.Writer
	onDrop func(n int)
	delay  time.Duration
	high   int // High, or AppendHigh
	max    int // Max, or AppendMax
	piece  int // the most bytes of whole records one write carries
	timer  *time.Timer
	// onFail (NewAppend) is told of failed writes; the writing goroutine
	// alone touches failing, lost and lastErr.
	onFail  func(lost int, err error)
	failing bool  // the last write failed and onFail was told
	lost    int   // records whose write failed, not yet reported
	lastErr error // the last failed write's error
	torn    bool  // a failed write left the start of a record in the file

	mu      sync.Mutex
	pending []byte // whole records, oldest first
	dropped int    // records dropped since the last report
	closed  bool

	kick chan struct{} // High bytes wait, Flush, or Close (cap 1)
	done chan struct{}
}

// New starts a Writer for w. onDrop, if not nil, is called from the
// writing goroutine with the number of records dropped, after the reader
// took data again; it may log (into this Writer).
func New(w io.Writer, onDrop func(n int)) *Writer {
	return newWriter(w, onDrop, Delay, High, Max, Atomic)
}

// NewAppend is New for a file opened with O_APPEND on a local file
// system: batches of up to AppendHigh bytes (or Delay), each in one write.
// onFail, if not nil, is called from the writing goroutine when a write
// fails (a full disk, an I/O error), with the records that write lost and
// its error; then, once writes succeed again or at Close, with the records
// lost since (and err nil if writes succeed again, else the last error).
// A file that keeps failing thus costs two reports, not one per batch.
func NewAppend(w io.Writer, onDrop func(n int), onFail func(lost int, err error)) *Writer {
	b := newWriter(w, onDrop, Delay, AppendHigh, AppendMax, AppendMax)
	b.onFail = onFail
	return b
}

func newWriter(w io.Writer, onDrop func(n int), delay time.Duration, high, maxBytes, piece int) *Writer {
	b := &Writer{w: w, onDrop: onDrop, delay: delay, high: high, max: maxBytes, piece: piece, timer: time.NewTimer(delay),
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	b.timer.Stop()
	go b.run()
	return b
}

// Write queues one record, or drops it if Max (AppendMax) bytes already wait. It
// never returns an error: a logger has nowhere to report one.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return b.w.Write(p) // after Close: straight through
	}
	if len(b.pending)+len(p) > b.max {
		b.dropped++
		b.mu.Unlock()
		return len(p), nil
	}
	first := len(b.pending) == 0
	b.pending = append(b.pending, p...)
	n := len(b.pending)
	b.mu.Unlock()
	if first {
		b.timer.Reset(b.delay)
	}
	if n >= b.high && n-len(p) < b.high {
		signal(b.kick)
	}
	return len(p), nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Flush has what waits written now rather than within Delay, for a
// record a reader should see at once (a warning, an error). It does not
// wait for the write.
func (b *Writer) Flush() { signal(b.kick) }

// Close writes what waits and stops the writing goroutine, waiting at
// most timeout for the reader; it reports whether everything was
// written. Records written after Close go straight to the underlying
// writer. Every call waits the same way, so that of two ways out of a
// process that both Close and exit, neither exits while the other's
// Close still writes.
func (b *Writer) Close(timeout time.Duration) bool {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	signal(b.kick)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-b.done:
		return true
	case <-t.C:
		return false
	}
}

func (b *Writer) run() {
	defer close(b.done)
	var spare []byte
	for {
		select {
		case <-b.timer.C:
		case <-b.kick:
		}
		for {
			spare = b.flush(spare)
			// Closed and nothing waits, seen under one lock: no record
			// comes after (Write goes straight through once closed).
			// A record may have come since flush last looked (onDrop's
			// report, or another goroutine's) just before Close.
			b.mu.Lock()
			closed, idle := b.closed, len(b.pending) == 0 && b.dropped == 0
			b.mu.Unlock()
			if !closed {
				break
			}
			if idle {
				b.timer.Stop()
				if b.torn {
					// The file ends in the start of a record: end that
					// line, or whoever opens the file next (the next
					// generation's workers) runs its first on from it.
					if _, err := b.w.Write([]byte{'\n'}); err == nil {
						b.torn = false
					}
				}
				if b.lost > 0 && b.onFail != nil {
					b.onFail(b.lost, b.lastErr)
				}
				return
			}
		}
	}
}

// flush writes everything pending and reports drops. spare is a written
// batch's buffer to take the next records; flush returns the next one.
func (b *Writer) flush(spare []byte) []byte {
	for {
		b.mu.Lock()
		batch := b.pending
		if len(batch) == 0 {
			b.mu.Unlock()
			break
		}
		b.pending = spare[:0] // never batch's array: records keep coming
		b.mu.Unlock()
		b.writeRecords(batch)
		spare = batch
		if cap(spare) > 2*b.high {
			spare = nil // a burst's buffer is not kept
		}
	}
	b.mu.Lock()
	n := b.dropped
	b.dropped = 0
	b.mu.Unlock()
	if n > 0 && b.onDrop != nil {
		b.onDrop(n)
	}
	return spare
}

// writeRecords writes batch in pieces of whole records of at most
// b.piece bytes (a longer record alone). Records end in '\n'; a batch
// that does not is written as one piece. Failed writes go to onFail.
//
// A write that fails part way (a disk that fills during it) leaves the
// start of a record in the file. The next write then begins with a
// newline, in the same write, so that the torn record is a line of its
// own and the records after it start lines, instead of the first of them
// running on from the torn one. (Another process appending to the same
// file may write between the two; its line then runs on from the torn
// one, and ours leaves an empty line.)
func (b *Writer) writeRecords(batch []byte) {
	for len(batch) > 0 {
		n := cut(batch, b.piece)
		piece, mend := batch[:n], 0
		if b.torn {
			piece, mend = append([]byte{'\n'}, piece...), 1
		}
		m, err := b.w.Write(piece)
		if b.onFail != nil {
			b.wrote(piece[mend:], m-mend, err)
		}
		batch = batch[n:]
	}
}

// wrote accounts for the write of records, of which the first m bytes
// were written (m < 0: not even the newline before them), that returned
// err (onFail).
func (b *Writer) wrote(records []byte, m int, err error) {
	if m >= 0 {
		b.torn = false
	}
	if err == nil {
		if b.failing {
			b.failing = false
			lost := b.lost
			b.lost, b.lastErr = 0, nil
			b.onFail(lost, nil)
		}
		return
	}
	m = max(m, 0)
	if m > 0 && records[m-1] != '\n' {
		b.torn = true
	}
	b.lost += max(1, bytes.Count(records[m:], []byte{'\n'}))
	b.lastErr = err
	if !b.failing {
		b.failing = true
		lost := b.lost
		b.lost = 0
		b.onFail(lost, err)
	}
}

// cut is the length of the first piece of batch: the most whole records
// that fit in piece bytes, or the first record if it alone is longer.
func cut(batch []byte, piece int) int {
	if len(batch) <= piece {
		return len(batch)
	}
	for i := piece - 1; i >= 0; i-- {
		if batch[i] == '\n' {
			return i + 1
		}
	}
	for i := piece; i < len(batch); i++ {
		if batch[i] == '\n' {
			return i + 1
		}
	}
	return len(batch)
}
