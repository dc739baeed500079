package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/internal/logbuf"
	"github.com/zfs-serve/zfs-serve/serve"
)

// ErrNotSupervised is returned when the worker entry is run by hand.
var ErrNotSupervised = errors.New(WorkerCommand + " is run by the zfs-serve supervisor, not by hand")

type worker struct {
	ch    *net.UnixConn
	srv   *serve.Server
	log   *slog.Logger
	done  chan doneMeta // finished connections, for outbox
	flush chan struct{} // ask outbox to send what it holds now (a drain)
	// lazyDelay is lazyDoneDelay; tests lengthen it
	lazyDelay time.Duration
	conns     sync.WaitGroup // Add only from the channel's reader, so never after Wait

	// A draining worker exits once its channel has read EOF and no
	// connection is active. It shuts the channel's read side when it
	// falls idle: connections the supervisor had queued before that (its
	// dispatch may race the drain message) are still read and served, and
	// its sends after that fail with EPIPE and go to another worker.
	mu       sync.Mutex
	active   int
	draining bool
	shut     bool // we shut its read side
	// pressure: the last connections handed to it were not flagged
	// connLazy, so a limit is near now and any connection ending counts
	// against it until reported, whenever it was handed off.
	pressure bool

	amu    sync.Mutex
	admits map[uint64]chan bool // msgAdmit waiting for msgAdmitted, by connection id

	acc *acceptor // accept mode hook (workeraccept.go): nil in the handoff mode
}

// RunWorker is a worker process's main. It returns only on errors before
// serving starts; afterwards the process exits from within.
func RunWorker() error {
	if os.Getenv(CookieKey) != CookieValue {
		return ErrNotSupervised
	}
	os.Unsetenv(CookieKey)
	// The supervisor decides when workers stop. Terminal signals go to the
	// supervisor's process group, not ours. A SIGTERM sent to a worker asks
	// the supervisor to retire it: it replaces the worker and sends it the
	// drain message, so no connection is dropped. EPIPE is handled where
	// it occurs.
	signal.Ignore(syscall.SIGPIPE, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	// Every line goes through lb, from the first: a stalled stderr
	// holds up no exit, and each way out writes what waits first (the
	// error returns here, by the deferred Close; os.Exit skips defers).
	var log atomic.Pointer[slog.Logger]
	lb := newLogWriter(log.Load)
	var access atomic.Pointer[logbuf.Writer] // access_log_path's, once configured
	closeLogs := func() {
		if a := access.Load(); a != nil {
			a.Close(logFlushTimeout)
		}
		lb.Close(logFlushTimeout)
	}
	defer closeLogs()
	bootLog := slog.New(slog.NewTextHandler(journalWriter(lb), nil)).With("proc", "worker", "pid", os.Getpid())
	log.Store(bootLog)
	ch, err := fdpass.FileConn(channelFD, "channel")
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	go watchSupervisor(bootLog, closeLogs)

	buf := make([]byte, maxMsg)
	oob := make([]byte, fdpass.OOBSpace)
	n, fds, err := fdpass.Recv(ch, buf, oob)
	closeFDs(fds)
	if err != nil {
		return fmt.Errorf("worker: no configuration from the supervisor: %w", err)
	}
	if n == 0 || buf[0] != msgConfig {
		return fmt.Errorf("worker: no configuration from the supervisor (a message of %d bytes)", n)
	}
	wc, err := parseConfig(buf[1:n])
	if err != nil {
		return fmt.Errorf("worker: bad configuration message: %w", err)
	}
	if wc.Version != channelVersion {
		err := fmt.Errorf("worker: channel version %d, this binary speaks %d (supervisor and worker binaries differ; restart zfs-serve)", wc.Version, channelVersion)
		fdpass.Send(ch, append([]byte{msgFatal}, err.Error()...))
		return err
	}
	level := new(slog.LevelVar)
	attrs := []any{"proc", "worker", "pid", os.Getpid(), "gen", wc.Generation, "slot", wc.Slot}
	logger := NewLogger(lb, wc.Config, level).With(attrs...)
	log.Store(logger)
	setProcs(wc.Config.Workers)
	opts := serve.OptionsFrom(wc.Config)
	var file *logbuf.Writer
	opts.Access, file, err = workerAccessLog(wc.Config, lb, level, logger, attrs)
	access.Store(file)
	var srv *serve.Server
	if err == nil {
		srv, err = serve.New(opts, logger)
	}
	if err != nil {
		fdpass.Send(ch, append([]byte{msgFatal}, err.Error()...))
		return fmt.Errorf("worker: %w", err)
	}
	w := newWorker(ch, srv, logger)
	go paceGC(srv.InlineBytes)
	capacity, limit, open := fdCapacity(serve.OptionsFrom(wc.Config))
	w.acc = newAcceptor(w, wc.Config, capacity) // accept mode hook (workeraccept.go)
	warnCapacity(logger, wc.Config, capacity, limit, open)
	if err := fdpass.Send(ch, appendU32(nil, msgReady, uint32(capacity))); err != nil {
		return fmt.Errorf("worker: report ready: %w", err)
	}
	logger.Debug("worker ready", "root", wc.Config.Root, "zero_copy", wc.Config.ZeroCopy, "uid", os.Getuid(), "capacity", capacity)
	go func() {
		for range term { // every SIGTERM: the supervisor ignores repeats
			logger.Info("SIGTERM: asking the supervisor to replace this worker and drain it")
			if err := fdpass.Send(ch, []byte{msgRetire}); err != nil {
				logger.Error("ask to retire", "err", err)
			}
		}
	}()
	code := w.run()
	closeLogs()
	os.Exit(code)
	return nil
}

func newWorker(ch *net.UnixConn, srv *serve.Server, log *slog.Logger) *worker {
	w := &worker{ch: ch, srv: srv, log: log, done: make(chan doneMeta, doneQueue), flush: make(chan struct{}, 1), lazyDelay: lazyDoneDelay, admits: map[uint64]chan bool{}}
	srv.SetAdmit(w.admit)
	return w
}

// run reads the channel until the worker should exit and returns the
// exit status: 0 once drained, 1 if the channel failed or the supervisor
// closed it without a drain.
func (w *worker) run() int {
	outboxDone := make(chan struct{})
	go func() { w.outbox(); close(outboxDone) }()
	buf := make([]byte, maxMsg)
	ch := fdpass.NewReceiver(w.ch, buf, make([]byte, fdpass.OOBSpace))
	for {
		n, fds, err := ch.Recv() // fds: the Receiver's slice, valid until the next Recv
		switch {
		case errors.Is(err, fdpass.ErrTruncated):
			// The kernel dropped the fds (most likely this process is out
			// of descriptors); the payload says which connections they were.
			// The supervisor's estimate of this worker's capacity was too
			// high: what it holds now is the capacity from here on.
			w.mu.Lock()
			held := w.active
			w.mu.Unlock()
			w.log.Error("channel message lost its fds (out of descriptors?); those connections are dropped", "err", err, "active", held)
			if err := fdpass.Send(w.ch, appendU32(nil, msgFDShort, uint32(held))); err != nil {
				w.log.Error("report lost fds", "err", err)
			}
			if n > 0 && buf[0] == msgConns {
				w.startConns(buf[1:n], nil, true)
			}
			continue
		case errors.Is(err, fdpass.ErrTooLong):
			w.log.Error("channel message too long; ignored", "err", err)
			continue
		case err != nil:
			w.log.Error("channel read failed; exiting", "err", err)
			return 1
		case n == 0:
			w.mu.Lock()
			draining, active := w.draining, w.active
			w.mu.Unlock()
			if !draining {
				w.log.Error("supervisor closed the channel; exiting")
				return 1
			}
			// Wait for the connections read before EOF, then report them.
			w.log.Debug("channel closed; finishing connections", "active", active)
			w.conns.Wait()
			close(w.done)
			<-outboxDone
			w.reportFinal()
			w.log.Debug("drained; exiting")
			return 0
		}
		switch buf[0] {
		case msgConns:
			w.startConns(buf[1:n], fds, false)
			continue
		case msgListen: // accept mode hook (workeraccept.go)
			w.listen(buf[1:n], fds)
			continue
		case msgLimit: // accept mode hook (workeraccept.go)
			w.setLimit(buf[1:n])
		case msgDrain:
			w.drain()
		case msgStatusReq:
			w.answerStatus(buf[1:n])
		case msgAdmitted:
			w.admitted(buf[1:n])
		case msgPing:
			// Answered here, by the channel's reader, not by a timer of
			// its own: a pong says that this worker reads its channel,
			// which is where its new connections wait (docs/ARCHITECTURE.md).
			if err := fdpass.Send(w.ch, append([]byte{msgPong}, buf[1:n]...)); err != nil {
				w.log.Error("answer heartbeat", "err", err)
			}
		case msgDigestReq:
			go w.answerDigest(append([]byte(nil), buf[1:n]...))
		case msgDigestLearn:
			w.learnDigests(buf[1:n])
		default:
			w.log.Error("unknown channel message", "type", buf[0])
		}
		closeFDs(fds)
	}
}

// drain starts the graceful exit: the server closes idle connections and
// ends the others after their current response; once none is left the
// channel's read side is shut, and the worker exits at its EOF.
func (w *worker) drain() {
	w.stopAccepting() // accept mode hook (workeraccept.go): before mu, it waits for the accept loops
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.draining {
		return
	}
	w.draining = true
	w.log.Debug("draining", "active", w.active)
	select { // what waits lazily to be reported is sent now (outbox)
	case w.flush <- struct{}{}:
	default:
	}
	w.srv.Drain()
	w.shutIfIdle()
}

// shutIfIdle (under mu) shuts the channel's read side once a draining
// worker has no connection: the loop then reads what is queued and EOF.
func (w *worker) shutIfIdle() {
	if w.draining && w.active == 0 && !w.shut {
		w.shut = true
		if err := w.ch.CloseRead(); err != nil {
			w.log.Error("shut the channel's read side", "err", err)
		}
	}
}

// startConns serves the connections of one msgConns message. Connections
// it cannot serve (their fds lost, or the message malformed) are closed
// and reported done at once, so the supervisor's counts stay exact.
func (w *worker) startConns(p []byte, fds []int, lost bool) {
	metas, err := parseConns(p)
	if err == nil && !lost && len(metas) != len(fds) {
		err = fmt.Errorf("%d connections described, %d fds attached", len(metas), len(fds))
	}
	if err != nil || lost {
		if err != nil {
			w.log.Error("bad connections message; dropping its fds", "err", err)
		}
		closeFDs(fds)
		w.reportDropped(metas)
		return
	}
	w.mu.Lock()
	w.active += len(fds)
	if len(metas) > 0 { // one message's connections share the flag
		w.pressure = metas[len(metas)-1].flags&connLazy == 0
	}
	w.mu.Unlock()
	w.conns.Add(len(fds))
	for i, fd := range fds {
		m := metas[i]
		// The fd is non-blocking (accept4 SOCK_NONBLOCK in the supervisor),
		// as Run needs. Run returns when the connection ends or waits idle
		// without a goroutine (serve/park.go); the callback runs when it
		// ends.
		ci := serve.ConnInfo{Client: m.client, ID: m.id, Proxy: m.flags&connProxy != 0, Admit: m.flags&connAdmit != 0, Nonblocking: true}
		w.srv.Start(fd, ci, func(r serve.Result) {
			w.mu.Lock()
			w.active--
			// Reported lazily only if the supervisor's count of it does
			// not matter soon: it said so (connLazy) at this connection's
			// handoff and at the last one (no limit got near since), and
			// this worker neither falls idle, drains, nor accepts itself
			// (its budget is what it reported).
			prompt := m.flags&connLazy == 0 || w.pressure || w.active == 0 || w.draining || w.acc != nil
			w.acc.freed() // accept mode hook (workeraccept.go)
			w.shutIfIdle()
			w.mu.Unlock()
			w.done <- doneMeta{id: m.id, bytes: uint64(r.Bytes), requests: uint32(r.Requests), outcome: string(r.Outcome), prompt: prompt}
			w.conns.Done()
		})
	}
}

// reportDropped reports connections that never reached the server done
// ("dropped") at once, from the channel's reader.
func (w *worker) reportDropped(metas []connMeta) {
	if len(metas) == 0 {
		return
	}
	ds := make([]doneMeta, len(metas))
	for i, m := range metas {
		ds[i] = doneMeta{id: m.id, outcome: string(outcomeDropped)}
	}
	if err := fdpass.Send(w.ch, appendDone(nil, ds)); err != nil {
		w.log.Error("report dropped connections", "err", err)
	}
}

// setProcs gives each worker its share of the CPUs: with one worker per
// CPU (the default) that is one P each, as nginx runs one process per core.
// More Ps than CPUs per process only make idle Ps spin and steal, and on
// this path context switches are what costs (docs/BENCHMARKS.md). An
// explicit GOMAXPROCS in the environment wins.
func setProcs(workers int) {
	if os.Getenv("GOMAXPROCS") != "" || workers <= 0 {
		return
	}
	runtime.GOMAXPROCS(max(1, runtime.NumCPU()/workers))
}

// doneDelay is how long a finished connection whose count matters soon
// (doneMeta.prompt) may wait to be reported, so that under load one
// message covers many connections.
const doneDelay = 2 * time.Millisecond

// lazyDoneDelay is how long any other finished connection may wait. Each
// report wakes the supervisor and, on a busy worker, arms a timer: at
// 2 ms, under new connections at 7,000 per second, those wake-ups cost
// 6 to 13% of the server's CPU per connection (bench/findings.md). The
// supervisor's counts of connections that end while no limit is near
// lag by up to this much.
const lazyDoneDelay = 20 * time.Millisecond

// doneQueue is how many finished connections wait for outbox.
const doneQueue = 1024

// outbox reports finished connections in batches: at most 4*maxBatch
// entries, sent when full or when due (batchDue).
func (w *worker) outbox() {
	batch := make([]doneMeta, 0, 4*maxBatch)
	var msg []byte
	out := fdpass.NewSender(w.ch) // this goroutine's own: a report allocates nothing
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for d := range w.done {
		batch = append(batch[:0], d)
		due := batchDue{lazy: w.lazyDelay}
		now := time.Now()
		due.add(d, now)
		timer.Reset(due.at.Sub(now))
	more:
		for len(batch) < cap(batch) {
			select {
			case d, ok := <-w.done:
				if !ok {
					break more
				}
				batch = append(batch, d)
				if d.prompt { // only a prompt one can make the batch due sooner
					if now := time.Now(); due.add(d, now) {
						timer.Reset(due.at.Sub(now))
					}
				}
			case <-timer.C:
				break more
			case <-w.flush:
				break more
			}
		}
		timer.Stop()
		msg = appendDone(msg[:0], batch)
		if err := w.sendDone(out, msg); err != nil { // accept mode hook (workeraccept.go)
			w.log.Error("report finished connections", "err", err)
		}
	}
}

// batchDue is when outbox sends the batch it collects: doneDelay after
// its first prompt entry arrived, or lazyDoneDelay after its first entry,
// whichever is sooner.
type batchDue struct {
	at   time.Time
	lazy time.Duration // lazyDoneDelay; tests lengthen it
}

// add counts d, which arrived at now, and reports whether the batch is
// now due sooner (always, for its first entry: b.at is zero before it).
func (b *batchDue) add(d doneMeta, now time.Time) bool {
	delay := b.lazy
	if d.prompt {
		delay = doneDelay
	}
	if at := now.Add(delay); b.at.IsZero() || at.Before(b.at) {
		b.at = at
		return true
	}
	return false
}

func (w *worker) answerStatus(p []byte) {
	id, flags, err := parseID(p)
	if err != nil {
		w.log.Error("bad status request", "err", err)
		return
	}
	msg := idMessage(msgStatus, id)
	if len(flags) > 0 && flags[0]&statusCounters != 0 {
		msg = append(msg, w.countersJSON()...)
	} else {
		msg = append(msg, w.statusJSON(maxStatusBytes)...)
	}
	if err := fdpass.Send(w.ch, msg); err != nil {
		w.log.Error("answer status", "err", err)
	}
}

// statusJSON encodes this worker's status in at most limit bytes, listing
// as many transfers as fit and counting the rest in Omitted.
func (w *worker) statusJSON(limit int) []byte {
	st := w.srv.Stats()
	ts, omitted := w.srv.Transfers(maxStatusTransfers)
	for {
		b, _ := json.Marshal(workerStatus{Active: st.Active, Connections: st.Connections, BytesSent: st.BytesSent,
			Native: st.NativeRequests, HTTP: st.HTTPRequests, HTTPBytes: st.HTTPBytesSent, Digests: w.srv.DigestStats(), Transfers: ts, Omitted: omitted})
		if len(b) <= limit || len(ts) == 0 {
			return b
		}
		// Drop a share proportional to the excess (at least one) and retry.
		drop := max(1, len(ts)*(len(b)-limit)/len(b)+1)
		drop = min(drop, len(ts))
		ts = ts[:len(ts)-drop]
		omitted += drop
	}
}

// watchSupervisor exits the worker the moment the supervisor is gone: the
// death pipe reads EOF only when its last writer, the supervisor, has died.
// The lines logged before, and its own, are written first, at most
// logFlushTimeout (each log).
func watchSupervisor(log *slog.Logger, closeLogs func()) {
	f := os.NewFile(deathFD, "supervisor-death")
	var b [1]byte
	for {
		_, err := f.Read(b[:])
		if err != nil && errors.Is(err, syscall.EINTR) {
			continue
		}
		break
	}
	log.Error("supervisor is gone; exiting")
	closeLogs()
	os.Exit(1)
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
