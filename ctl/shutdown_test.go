package ctl

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Shutdown closes idle connections at once, waits for the ones being
// answered, then returns; the socket file is gone.
func TestShutdownWaitsForHandlers(t *testing.T) {
	h := &fakeHandler{status: &Status{PID: 42}, entered: make(chan struct{}, 1), release: make(chan struct{})}
	path := filepath.Join(shortDir(t), "c.sock")
	ln, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: h, Log: discard}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// An idle connection, with a request answered: the server has it.
	idle := rawDial(t, path)
	io.WriteString(idle, `{"v":1,"cmd":"kill"}`+"\n")
	if line, err := bufio.NewReader(idle).ReadString('\n'); err != nil || !strings.Contains(line, "killed") {
		t.Fatalf("kill on the idle connection: %q %v", line, err)
	}

	// A connection being answered.
	type result struct {
		r   *Response
		err error
	}
	busy := make(chan result, 1)
	c := dial(t, path)
	go func() {
		r, err := c.Do(Request{Cmd: CmdStatus}, nil)
		busy <- result{r, err}
	}()
	select {
	case <-h.entered:
	case <-time.After(wait):
		t.Fatal("handler not called")
	}

	shut := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
		defer cancel()
		srv.Shutdown(ctx)
		close(shut)
	}()

	// Serve returns and the idle connection is closed without waiting for
	// the busy one.
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Serve did not return")
	}
	idle.SetReadDeadline(time.Now().Add(wait))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("idle connection during Shutdown: read %d, %v; want it closed", n, err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file still there after Shutdown began: %v", err)
	}
	select {
	case <-shut:
		t.Fatal("Shutdown returned while a handler was still answering")
	case r := <-busy:
		t.Fatalf("the busy request ended before its handler returned: %+v %v", r.r, r.err)
	default:
	}

	close(h.release)
	select {
	case r := <-busy:
		if r.err != nil || r.r.Status == nil || r.r.Status.PID != 42 {
			t.Errorf("busy request: %+v %v", r.r, r.err)
		}
	case <-time.After(wait):
		t.Fatal("busy request not answered")
	}
	select {
	case <-shut:
	case <-time.After(wait):
		t.Fatal("Shutdown did not return after the handler")
	}
}

// When Shutdown's context ends, handlers still running are cancelled and
// their connections closed, so Shutdown returns.
func TestShutdownDeadline(t *testing.T) {
	h := &fakeHandler{status: &Status{}, entered: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(h.release)
	path, srv := startServer(t, h, nil)
	busy := make(chan error, 1)
	c := dial(t, path)
	go func() {
		_, err := c.Do(Request{Cmd: CmdStatus}, nil)
		busy <- err
	}()
	select {
	case <-h.entered:
	case <-time.After(wait):
		t.Fatal("handler not called")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	shut := make(chan struct{})
	go func() { srv.Shutdown(ctx); close(shut) }()
	select {
	case <-shut:
	case <-time.After(wait):
		t.Fatal("Shutdown with an expired context waits for a handler")
	}
	select {
	case err := <-busy:
		if err == nil {
			t.Error("the cut-off request succeeded")
		}
	case <-time.After(wait):
		t.Fatal("the cut-off client got nothing")
	}
}

func TestServeAfterShutdown(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	ln, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Handler: &fakeHandler{}, Log: discard}
	srv.Shutdown(context.Background())
	if err := srv.Serve(ln); err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Serve after Shutdown left the listener open (socket file: %v)", err)
	}
}
