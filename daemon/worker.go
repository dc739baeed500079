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
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/serve"
)

// workerConfig is the first message down a worker's channel: everything it
// needs, so it reads no file but what it serves.
type workerConfig struct {
	Version    int            `json:"version"`
	Generation int            `json:"generation"`
	Slot       int            `json:"slot"`
	Config     *config.Config `json:"config"`
}

// workerStatus answers msgStatusReq.
type workerStatus struct {
	Active      int              `json:"active"`
	Connections uint64           `json:"connections"`
	BytesSent   uint64           `json:"bytes_sent"`
	Transfers   []serve.Transfer `json:"transfers"`
	Omitted     int              `json:"omitted"`
}

// maxStatusTransfers keeps a status answer inside one channel message.
const maxStatusTransfers = 400

// ErrNotSupervised is returned when the worker entry is run by hand.
var ErrNotSupervised = errors.New("zfs-serve: " + WorkerCommand + " is run by the zfs-serve supervisor, not by hand")

type worker struct {
	ch   *net.UnixConn
	srv  *serve.Server
	log  *slog.Logger
	wg   sync.WaitGroup
	done chan doneMeta
}

// RunWorker is a worker process's main. It returns only on errors before
// serving starts; afterwards the process exits from within.
func RunWorker() error {
	if os.Getenv(CookieKey) != CookieValue {
		return ErrNotSupervised
	}
	os.Unsetenv(CookieKey)
	// The supervisor decides when workers stop. Terminal signals go to the
	// supervisor's process group, not ours; a stray SIGTERM drains this
	// worker alone (it is then replaced). EPIPE is handled where it occurs.
	signal.Ignore(syscall.SIGPIPE, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	bootLog := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("proc", "worker", "pid", os.Getpid())
	ch, err := fdpass.FileConn(channelFD, "channel")
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	go watchSupervisor(bootLog)

	buf := make([]byte, maxMsg)
	oob := make([]byte, fdpass.OOBSpace)
	n, fds, err := fdpass.Recv(ch, buf, oob)
	closeFDs(fds)
	if err != nil || n == 0 || buf[0] != msgConfig {
		return fmt.Errorf("worker: no configuration from the supervisor (n=%d, err=%v)", n, err)
	}
	var wc workerConfig
	if err := json.Unmarshal(buf[1:n], &wc); err != nil || wc.Config == nil {
		return fmt.Errorf("worker: bad configuration message: %v", err)
	}
	if wc.Version != channelVersion {
		err := fmt.Errorf("worker: channel version %d, this binary speaks %d (supervisor and worker binaries differ; restart zfs-serve)", wc.Version, channelVersion)
		fdpass.Send(ch, append([]byte{msgFatal}, err.Error()...))
		return err
	}
	log := NewLogger(os.Stderr, wc.Config, new(slog.LevelVar)).With("proc", "worker", "pid", os.Getpid(), "gen", wc.Generation, "slot", wc.Slot)
	setProcs(wc.Config.Workers)
	srv, err := serve.New(serve.OptionsFrom(wc.Config), log)
	if err != nil {
		fdpass.Send(ch, append([]byte{msgFatal}, err.Error()...))
		return fmt.Errorf("worker: %w", err)
	}
	w := &worker{ch: ch, srv: srv, log: log, done: make(chan doneMeta, 1024)}
	if err := fdpass.Send(ch, []byte{msgReady}); err != nil {
		return fmt.Errorf("worker: report ready: %w", err)
	}
	log.Debug("worker ready", "root", wc.Config.Root, "zero_copy", wc.Config.ZeroCopy, "uid", os.Getuid())
	outboxDone := make(chan struct{})
	go func() { w.outbox(); close(outboxDone) }()

	var drainOnce sync.Once
	drain := func(why string) {
		drainOnce.Do(func() {
			log.Debug("draining", "why", why, "active", srv.Stats().Active)
			srv.Drain()
			go func() {
				w.wg.Wait()
				close(w.done)
				<-outboxDone
				log.Debug("drained; exiting")
				os.Exit(0)
			}()
		})
	}
	go func() { <-term; drain("SIGTERM") }()

	for {
		n, fds, err := fdpass.Recv(ch, buf, oob)
		if err != nil {
			if errors.Is(err, fdpass.ErrTruncated) {
				log.Error("channel message lost its fds; those connections are dropped", "err", err)
				continue
			}
			log.Error("channel read failed; exiting", "err", err)
			os.Exit(1)
		}
		if n == 0 {
			log.Error("supervisor closed the channel; exiting")
			os.Exit(1)
		}
		switch buf[0] {
		case msgConns:
			w.startConns(buf[1:n], fds)
			continue
		case msgDrain:
			drain("supervisor")
		case msgStatusReq:
			w.answerStatus(buf[1:n])
		default:
			log.Error("unknown channel message", "type", buf[0])
		}
		closeFDs(fds)
	}
}

func (w *worker) startConns(p []byte, fds []int) {
	metas, err := parseConns(p)
	if err == nil && len(metas) != len(fds) {
		err = fmt.Errorf("%d connections described, %d fds attached", len(metas), len(fds))
	}
	if err != nil {
		w.log.Error("bad connections message; dropping its fds", "err", err)
		closeFDs(fds)
		return
	}
	for i, fd := range fds {
		m := metas[i]
		// The fd is non-blocking (accept4 SOCK_NONBLOCK in the supervisor),
		// so os.NewFile registers it with the runtime poller: deadlines and
		// parking work without the dup that net.FileConn would make.
		f := os.NewFile(uintptr(fd), m.client)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			r := w.srv.ServeConn(f, m.client)
			w.done <- doneMeta{id: m.id, bytes: uint64(r.Bytes), requests: uint32(r.Requests), outcome: string(r.Outcome)}
		}()
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

// doneDelay is how long a finished connection may wait to be reported, so
// that under load one message (and one wake-up of the supervisor) covers
// many connections. The supervisor's counts lag by at most this much.
const doneDelay = 2 * time.Millisecond

// outbox reports finished connections in batches: at most 4*maxBatch
// entries, sent when full or doneDelay after the first one arrived.
func (w *worker) outbox() {
	batch := make([]doneMeta, 0, 4*maxBatch)
	var msg []byte
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for d := range w.done {
		batch = append(batch[:0], d)
		timer.Reset(doneDelay)
	more:
		for len(batch) < cap(batch) {
			select {
			case d, ok := <-w.done:
				if !ok {
					break more
				}
				batch = append(batch, d)
			case <-timer.C:
				break more
			}
		}
		timer.Stop()
		msg = appendDone(msg[:0], batch)
		if err := fdpass.Send(w.ch, msg); err != nil {
			w.log.Error("report finished connections", "err", err)
		}
	}
}

func (w *worker) answerStatus(p []byte) {
	id, _, err := parseID(p)
	if err != nil {
		w.log.Error("bad status request", "err", err)
		return
	}
	st := w.srv.Stats()
	ts, omitted := w.srv.Transfers(maxStatusTransfers)
	b, _ := json.Marshal(workerStatus{Active: st.Active, Connections: st.Connections, BytesSent: st.BytesSent, Transfers: ts, Omitted: omitted})
	msg := append(appendID(nil, msgStatus, id), b...)
	if err := fdpass.Send(w.ch, msg); err != nil {
		w.log.Error("answer status", "err", err)
	}
}

// watchSupervisor exits the worker the moment the supervisor is gone: the
// death pipe reads EOF only when its last writer, the supervisor, has died.
func watchSupervisor(log *slog.Logger) {
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
	os.Exit(1)
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
