package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// serveAt runs a Server for h on sock until the test ends or stop is
// called; stop returns once Serve has.
func serveAt(t *testing.T, sock *Socket, h Handler) (stop func()) {
	t.Helper()
	srv := &Server{Handler: h, Log: discard}
	served := make(chan struct{})
	go func() { srv.Serve(sock); close(served) }()
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	}
	t.Cleanup(stop)
	return stop
}

func statusPID(t *testing.T, c *Client) int {
	t.Helper()
	r, err := c.Do(Request{Cmd: CmdStatus}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.PID
}

// A new daemon takes the control socket's path over from a draining one:
// new connections reach the new daemon, the old one keeps those it has,
// and its exit leaves the new socket in place.
func TestListenTakesOverFromDraining(t *testing.T) {
	for _, state := range []string{StateDraining, StateStopping} {
		t.Run(state, func(t *testing.T) {
			path := filepath.Join(shortDir(t), "c.sock")
			oldSock, err := Listen(path, -1)
			if err != nil {
				t.Fatal(err)
			}
			stopOld := serveAt(t, oldSock, &fakeHandler{status: &Status{PID: 1, State: state}})
			kept := dial(t, path)
			if statusPID(t, kept) != 1 {
				t.Fatal("not the old daemon")
			}

			newSock, err := Listen(path, -1)
			if err != nil {
				t.Fatalf("Listen while the old daemon is %s: %v", state, err)
			}
			if !newSock.TakesOver() || oldSock.TakesOver() {
				t.Errorf("TakesOver: new %v, old %v", newSock.TakesOver(), oldSock.TakesOver())
			}
			stopNew := serveAt(t, newSock, &fakeHandler{status: &Status{PID: 2, State: StateServing}})
			// Until the new daemon publishes its socket (it serves), the
			// path leads to the old one.
			if pid := statusPID(t, dial(t, path)); pid != 1 {
				t.Errorf("before Publish, a new connection reached daemon %d, want the old one", pid)
			}
			if err := newSock.Publish(); err != nil {
				t.Fatal(err)
			}
			if newSock.TakesOver() {
				t.Error("TakesOver after Publish")
			}
			if st, err := os.Lstat(path); err != nil || st.Mode().Perm() != 0o660 {
				t.Errorf("the socket taken over: %v, %v", st, err)
			}
			if pid := statusPID(t, dial(t, path)); pid != 2 {
				t.Errorf("a new connection reached daemon %d, want the new one", pid)
			}
			if pid := statusPID(t, kept); pid != 1 {
				t.Errorf("the old connection reached daemon %d, want the old one", pid)
			}
			stopOld()
			if pid := statusPID(t, dial(t, path)); pid != 2 {
				t.Errorf("after the old daemon's exit, daemon %d answers", pid)
			}
			ents, _ := os.ReadDir(filepath.Dir(path))
			if len(ents) != 1 {
				t.Errorf("the socket's directory holds %d entries, want only the socket", len(ents))
			}
			stopNew()
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the new daemon's exit left its socket: %v", err)
			}
		})
	}
}

// A new daemon that fails to start after Listen (it never publishes its
// socket) leaves the draining daemon its path: zctl still reaches it, and
// nothing of the new one is left in the directory.
func TestListenTakeoverUnpublished(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	oldSock, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	serveAt(t, oldSock, &fakeHandler{status: &Status{PID: 1, State: StateDraining}})
	newSock, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	stopNew := serveAt(t, newSock, &fakeHandler{status: &Status{PID: 2, State: StateStarting}})
	stopNew() // the new daemon gives up: its start failed
	if pid := statusPID(t, dial(t, path)); pid != 1 {
		t.Errorf("after a failed start, daemon %d answers at the path, want the draining one", pid)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 || ents[0].Name() != filepath.Base(path) {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("the socket's directory holds %v, want only the draining daemon's socket", names)
	}
}

// A daemon that took the path over publishes its socket even if the
// draining daemon has exited meanwhile, its file removed or left behind.
func TestPublishAfterOldExit(t *testing.T) {
	for _, removed := range []bool{true, false} {
		t.Run(fmt.Sprintf("removed=%v", removed), func(t *testing.T) {
			path := filepath.Join(shortDir(t), "c.sock")
			oldSock, err := Listen(path, -1)
			if err != nil {
				t.Fatal(err)
			}
			stopOld := serveAt(t, oldSock, &fakeHandler{status: &Status{PID: 1, State: StateDraining}})
			newSock, err := Listen(path, -1)
			if err != nil {
				t.Fatal(err)
			}
			serveAt(t, newSock, &fakeHandler{status: &Status{PID: 2, State: StateServing}})
			if removed {
				stopOld() // a clean exit removes its own file
			} else {
				oldSock.UnixListener.Close() // killed: the file stays, nobody answers
			}
			if err := newSock.Publish(); err != nil {
				t.Fatal(err)
			}
			if pid := statusPID(t, dial(t, path)); pid != 2 {
				t.Errorf("daemon %d answers, want the new one", pid)
			}
		})
	}
}

// A serving daemon's socket is not taken over.
func TestListenRefusesServing(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	sock, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	serveAt(t, sock, &fakeHandler{status: &Status{PID: 1, State: StateServing}})
	if _, err := Listen(path, -1); err == nil || !strings.Contains(err.Error(), "another zfs-serve is answering on it (serving)") {
		t.Fatalf("Listen over a serving daemon: %v", err)
	}
	if pid := statusPID(t, dial(t, path)); pid != 1 {
		t.Fatalf("daemon %d answers", pid)
	}
}

// exitingHandler answers like a daemon whose loop has ended, and says
// on asked when it first is.
type exitingHandler struct {
	fakeHandler
	asked chan struct{}
	once  sync.Once
}

func (h *exitingHandler) Status(context.Context) (*Status, error) {
	h.once.Do(func() { close(h.asked) })
	return nil, ErrExiting
}

// A daemon on its way out (it answers "exiting") is waited for: once its
// socket is gone, the path is the new daemon's.
func TestListenWaitsForExiting(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	sock, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	h := &exitingHandler{asked: make(chan struct{})}
	stop := serveAt(t, sock, h)
	go func() {
		<-h.asked // the old daemon exits while Listen asks it
		stop()
	}()
	start := time.Now()
	sock2, err := Listen(path, -1)
	if err != nil {
		t.Fatalf("Listen while the old daemon exits: %v", err)
	}
	t.Logf("waited %v", time.Since(start))
	serveAt(t, sock2, &fakeHandler{status: &Status{PID: 2}})
	if pid := statusPID(t, dial(t, path)); pid != 2 {
		t.Fatalf("daemon %d answers", pid)
	}
}

// The lock the socket's steps hold is not something another user can
// hold: the directory (0755: anyone may open and flock it) locked by
// someone else neither delays Listen nor makes Close leave the socket
// behind; the lock file is gone afterwards.
func TestListenIgnoresDirectoryLock(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sock, err := Listen(path, -1)
	if err != nil {
		t.Fatalf("Listen with the directory locked by someone else: %v (after %v)", err, time.Since(start))
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Listen took %v", el)
	}
	sock.Close()
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 0 {
		t.Errorf("Close left %d files (%s...)", len(ents), ents[0].Name())
	}
}
