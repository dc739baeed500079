// Package ctltest has test doubles for the control socket, shared by the
// tests of ctl and of zctl.
package ctltest

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// SilentDaemon listens on a new unix socket and, on each connection, reads
// the request line, writes out, and then says nothing more until the test
// ends: a SIGSTOPped daemon, whose kernel still accepts. It returns the
// socket's path (short enough for a unix socket).
func SilentDaemon(t testing.TB, out string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "z")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); close(done); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, out)
				<-done
			})
		}
	})
	return ln.Addr().String()
}
