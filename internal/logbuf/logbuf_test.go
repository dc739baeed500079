package logbuf

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// recorder is an io.Writer that keeps each write apart and can be held
// still, as a reader that stops.
type recorder struct {
	mu     sync.Mutex
	writes [][]byte
	gate   chan struct{} // nil: never blocks; else each write waits for it to close
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	r.writes = append(r.writes, append([]byte(nil), p...))
	r.mu.Unlock()
	return len(p), nil
}

func (r *recorder) all() (joined []byte, writes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Join(r.writes, nil), len(r.writes)
}

// await reports whether what was written holds want, waiting for it
// up to 10 s.
func (r *recorder) await(want []byte) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if out, _ := r.all(); bytes.Contains(out, want) {
			return true
		}
	}
	return false
}

// checkPieces fails unless every write is whole records, at most Atomic
// bytes or a single record.
func (r *recorder) checkPieces(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, w := range r.writes {
		if len(w) == 0 || w[len(w)-1] != '\n' {
			t.Fatalf("write %d does not end a record: %q", i, w)
		}
		if len(w) > Atomic && bytes.Count(w, []byte("\n")) > 1 {
			t.Fatalf("write %d is %d bytes of several records", i, len(w))
		}
	}
}

func record(i int) []byte { return fmt.Appendf(nil, "time=x msg=access n=%06d\n", i) }

func TestCut(t *testing.T) {
	line := func(n int) string { return strings.Repeat("a", n-1) + "\n" }
	for _, tc := range []struct {
		name  string
		batch string
		want  int
	}{
		{"small", line(10) + line(20), 30},
		{"exactly Atomic", line(Atomic), Atomic},
		{"cut at the last whole record", line(3000) + line(1000) + line(500), 4000},
		{"record ends at Atomic", line(3000) + line(Atomic-3000) + line(10), Atomic},
		{"one long record alone", line(5000) + line(10), 5000},
		{"long, no newline", strings.Repeat("a", 5000), 5000},
	} {
		if got := cut([]byte(tc.batch), Atomic); got != tc.want {
			t.Errorf("%s: cut = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestConcurrentWriters: records from many goroutines all arrive, whole,
// each goroutine's in its order, in far fewer writes than records.
func TestConcurrentWriters(t *testing.T) {
	rec := &recorder{}
	b := New(rec, func(n int) { t.Errorf("%d records dropped", n) })
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				b.Write(record(g*each + i))
			}
		})
	}
	wg.Wait()
	if !b.Close(10 * time.Second) {
		t.Fatal("Close timed out")
	}
	rec.checkPieces(t)
	out, writes := rec.all()
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != writers*each {
		t.Fatalf("%d records arrived, want %d", len(lines), writers*each)
	}
	last := map[int]int{}
	for _, l := range lines {
		var n int
		if _, err := fmt.Sscanf(l, "time=x msg=access n=%d", &n); err != nil {
			t.Fatalf("torn record %q", l)
		}
		g := n / each
		if prev, ok := last[g]; ok && n <= prev {
			t.Fatalf("writer %d: record %d after %d", g, n, prev)
		}
		last[g] = n
	}
	if writes > len(lines)/10 {
		t.Errorf("%d writes for %d records: not batched", writes, len(lines))
	}
}

// TestDelay: a lone record goes out without Close, after Delay.
func TestDelay(t *testing.T) {
	rec := &recorder{}
	b := New(rec, nil)
	defer b.Close(time.Second)
	b.Write(record(1))
	if !rec.await(record(1)) {
		t.Fatal("a lone record was not written")
	}
}

// TestStalledReader: while the reader holds still, Write never waits;
// past Max bytes records are dropped, and the count is reported once the
// reader takes data again. Written and dropped add up to what came.
func TestStalledReader(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	reported := make(chan int, 4)
	b := New(rec, func(n int) { reported <- n })
	rec1 := record(0)
	total := 2*Max/len(rec1) + 100
	done := make(chan struct{})
	go func() {
		for i := range total {
			b.Write(record(i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Write waited for a stalled reader")
	}
	close(rec.gate) // the reader takes data again
	var dropped int
	select {
	case dropped = <-reported:
	case <-time.After(10 * time.Second):
		t.Fatal("drops were not reported")
	}
	if !b.Close(10 * time.Second) {
		t.Fatal("Close timed out")
	}
	rec.checkPieces(t)
	out, _ := rec.all()
	written := bytes.Count(out, []byte("\n"))
	if dropped == 0 || written+dropped != total {
		t.Fatalf("written %d + dropped %d != %d", written, dropped, total)
	}
	// What the reader took: the batch it stalled on, then at most Max.
	if written > 2*Max/len(rec1)+1 {
		t.Fatalf("%d records written: more than the stalled batch and Max held", written)
	}
}

// TestCloseBounded: Close waits at most its timeout for a reader that
// never comes back; after it, records go straight through.
func TestCloseBounded(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	b := New(rec, nil)
	b.Write(record(1))
	start := time.Now()
	if b.Close(50 * time.Millisecond) {
		t.Fatal("Close reported success with the reader stalled")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
	close(rec.gate)
	b.Write(record(2)) // straight through
	if !rec.await(record(2)) {
		out, _ := rec.all()
		t.Fatalf("a record written after Close did not arrive: %q", out)
	}
}

// TestCloseDuringDropReport: a record written while Close comes in is
// written before Close returns, even when it lands between the writing
// goroutine's last look at what waits and its look at Close: here the
// drop report that onDrop logs into the Writer, as the daemon's does.
func TestCloseDuringDropReport(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	const report = "msg=\"log lines dropped\"\n"
	var b *Writer
	closed := make(chan bool, 1)
	b = New(rec, func(n int) {
		b.Write([]byte(report))
		go func() { closed <- b.Close(10 * time.Second) }()
		waitClosing(b) // then onDrop returns
	})
	for i := range 2*Max/len(record(0)) + 100 { // more than Max waits: drops
		b.Write(record(i))
	}
	close(rec.gate)
	select {
	case ok := <-closed:
		if !ok {
			t.Fatal("Close timed out")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no drops reported, or Close did not return")
	}
	if out, _ := rec.all(); !bytes.HasSuffix(out, []byte(report)) {
		t.Fatalf("the record written as Close came in was lost; the output ends %q", out[max(0, len(out)-80):])
	}
}

// waitClosing returns once a Close of b has begun.
func waitClosing(b *Writer) {
	for {
		b.mu.Lock()
		c := b.closed
		b.mu.Unlock()
		if c {
			return
		}
		time.Sleep(time.Millisecond) // polling an outcome, not ordering
	}
}

// TestCloseTwice: a second Close, as another way out of the process
// closes too, does not report everything written while the first still
// writes.
func TestCloseTwice(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	b := New(rec, nil)
	b.Write(record(1))
	first := make(chan bool)
	go func() { first <- b.Close(10 * time.Second) }()
	waitClosing(b)
	// The reader comes back a little later: a Close that waits sees it.
	time.AfterFunc(50*time.Millisecond, func() { close(rec.gate) })
	if !b.Close(10 * time.Second) {
		t.Fatal("the second Close timed out")
	}
	if out, _ := rec.all(); !bytes.Equal(out, record(1)) {
		t.Fatalf("the second Close returned true with %q written", out)
	}
	if !<-first {
		t.Fatal("the first Close timed out")
	}
}

// TestFlush: Flush has a record written without waiting for the delay
// (an hour here).
func TestFlush(t *testing.T) {
	rec := &recorder{}
	b := newWriter(rec, nil, time.Hour, High, Max, Atomic)
	defer b.Close(time.Second)
	b.Write(record(1))
	b.Flush()
	if !rec.await(record(1)) {
		t.Fatal("a flushed record was not written")
	}
}

// TestAppendPieces: NewAppend (a file opened with O_APPEND) writes whole
// records in batches of up to AppendHigh bytes, each in one write, not in
// pieces of Atomic.
func TestAppendPieces(t *testing.T) {
	rec := &recorder{}
	// NewAppend's sizes, without its Delay: only AppendHigh and Close
	// start a batch, however slowly the records come (-race).
	b := newWriter(rec, func(n int) { t.Errorf("%d records dropped", n) }, time.Hour, AppendHigh, AppendMax, AppendMax)
	const n = 40000 // 1.2 MB of records: AppendHigh is reached and kicks the writer
	for i := range n {
		b.Write(record(i))
	}
	if !b.Close(10 * time.Second) {
		t.Fatal("Close timed out")
	}
	out, _ := rec.all()
	if got := bytes.Count(out, []byte("\n")); got != n {
		t.Fatalf("%d records arrived, want %d", got, n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	largest := 0
	for i, w := range rec.writes {
		if len(w) == 0 || w[len(w)-1] != '\n' || len(w) > AppendMax {
			t.Fatalf("write %d: %d bytes, ending %q: want whole records, at most %d bytes", i, len(w), w[max(0, len(w)-10):], AppendMax)
		}
		largest = max(largest, len(w))
	}
	if largest < AppendHigh {
		t.Errorf("largest write %d bytes, want a batch of at least AppendHigh (%d)", largest, AppendHigh)
	}
}

// failer fails every write while full is set, as a full disk does.
type failer struct {
	recorder
	full   atomic.Bool
	failed atomic.Int64 // records in failed writes
}

func (f *failer) Write(p []byte) (int, error) {
	if f.full.Load() {
		f.failed.Add(int64(bytes.Count(p, []byte("\n"))))
		return 0, syscall.ENOSPC
	}
	return f.recorder.Write(p)
}

// TestAppendFailures: NewAppend reports a failed write (a full disk)
// with the records it lost and its error at once, then, once writes
// succeed again, the records lost meanwhile; one report each, however
// many batches failed. Those still failing at Close are reported then.
func TestAppendFailures(t *testing.T) {
	type report struct {
		lost int
		err  error
	}
	reports := make(chan report, 10)
	f := &failer{}
	f.full.Store(true)
	b := NewAppend(f, nil, func(n int, err error) { reports <- report{n, err} })
	for i := range 3 {
		b.Write(record(i))
	}
	b.Flush()
	if r := <-reports; r.lost != 3 || !errors.Is(r.err, syscall.ENOSPC) {
		t.Fatalf("first report %+v, want 3 records lost to ENOSPC", r)
	}
	for i := range 5 { // five more records fail, no report
		b.Write(record(10 + i))
		b.Flush()
	}
	for deadline := time.Now().Add(10 * time.Second); f.failed.Load() < 8; {
		if time.Now().After(deadline) {
			t.Fatalf("%d records failed, want 8", f.failed.Load())
		}
		runtime.Gosched()
	}
	select {
	case r := <-reports:
		t.Fatalf("a report while the file keeps failing: %+v", r)
	case <-time.After(20 * time.Millisecond):
	}
	f.full.Store(false)
	b.Write(record(20))
	b.Flush()
	if r := <-reports; r.lost != 5 || r.err != nil {
		t.Fatalf("report on recovery %+v, want 5 records lost and no error", r)
	}
	if !f.await(record(20)) {
		t.Fatal("the record after recovery was not written")
	}
	f.full.Store(true)
	b.Write(record(30))
	b.Flush()
	if r := <-reports; r.lost != 1 || r.err == nil {
		t.Fatalf("report %+v, want 1 record lost with an error", r)
	}
	b.Write(record(31))
	b.Write(record(32))
	if !b.Close(time.Second) {
		t.Fatal("Close timed out")
	}
	if r := <-reports; r.lost != 2 || !errors.Is(r.err, syscall.ENOSPC) {
		t.Fatalf("report at Close %+v, want 2 records lost to ENOSPC", r)
	}
}

// tearer takes writes whole while room is negative; otherwise it takes
// the first room bytes of a write and fails it, as a disk that fills
// during a write does, and fails every write after until room is
// negative again.
type tearer struct {
	recorder
	mu     sync.Mutex
	room   int
	failed atomic.Int64 // writes failed
}

func (f *tearer) Write(p []byte) (int, error) {
	f.mu.Lock()
	room := f.room
	if room >= 0 {
		f.room = 0
	}
	f.mu.Unlock()
	if room < 0 {
		return f.recorder.Write(p)
	}
	n := min(room, len(p))
	if n > 0 {
		f.recorder.Write(p[:n])
	}
	f.failed.Add(1)
	return n, syscall.ENOSPC
}

func (f *tearer) setRoom(n int) {
	f.mu.Lock()
	f.room = n
	f.mu.Unlock()
}

// TestAppendTorn: a write that fails part way through a record leaves
// that record's start in the file; the next write that works starts with
// a newline, so every line in the file is a whole record or the start of
// the torn one, and no record runs on from it. The records the failed
// write did not finish are the ones reported lost.
func TestAppendTorn(t *testing.T) {
	reports := make(chan int, 10)
	f := &tearer{}
	f.setRoom(-1)
	b := NewAppend(f, nil, func(n int, err error) { reports <- n })
	b.Write(record(0))
	b.Flush()
	if !f.await(record(0)) {
		t.Fatal("record 0 not written")
	}
	f.setRoom(len(record(1)) + 7) // record 1 whole, 7 bytes of record 2
	b.Write(append(append(record(1), record(2)...), record(3)...))
	b.Flush()
	if n := <-reports; n != 2 {
		t.Fatalf("report of the failed write: %d records lost, want 2 (records 2 and 3)", n)
	}
	b.Write(record(4)) // fails whole: the disk is still full
	b.Flush()
	for deadline := time.Now().Add(10 * time.Second); f.failed.Load() < 2; {
		if time.Now().After(deadline) {
			t.Fatal("the write of record 4 did not come")
		}
		runtime.Gosched()
	}
	f.setRoom(-1)
	b.Write(record(5))
	b.Flush()
	if n := <-reports; n != 1 {
		t.Fatalf("report on recovery: %d records lost, want 1 (record 4)", n)
	}
	if !f.await(record(5)) {
		t.Fatal("record 5 not written")
	}
	out, _ := f.all()
	want := string(record(0)) + string(record(1)) + string(record(2)[:7]) + "\n" + string(record(5))
	if string(out) != want {
		t.Fatalf("file holds\n%q\nwant\n%q", out, want)
	}
	if !b.Close(time.Second) {
		t.Fatal("Close timed out")
	}
}

// TestAppendTornClose: a Writer closed while the start of a record it
// tore is the file's last line (the disk had room again, but no record
// came after it: a worker drained by a reload) ends that line, so the
// next generation's writer (or the next start's) does not run its first
// line on from it.
func TestAppendTornClose(t *testing.T) {
	reports := make(chan int, 10)
	f := &tearer{}
	f.setRoom(len(record(1)) + 7) // record 1 whole, 7 bytes of record 2
	b := NewAppend(f, nil, func(n int, err error) { reports <- n })
	b.Write(append(record(1), record(2)...))
	b.Flush()
	if n := <-reports; n != 1 {
		t.Fatalf("report of the failed write: %d records lost, want 1", n)
	}
	f.setRoom(-1) // room again; no record comes
	if !b.Close(time.Second) {
		t.Fatal("Close timed out")
	}
	out, _ := f.all()
	want := string(record(1)) + string(record(2)[:7]) + "\n"
	if string(out) != want {
		t.Fatalf("file holds\n%q\nwant\n%q", out, want)
	}
}
