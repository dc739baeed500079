package e2e

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// serverSocketInode finds the inode of the server side of the TCP
// connection (local = server address, remote = client address).
func serverSocketInode(t testing.TB, server, client string) string {
	t.Helper()
	want := hexAddr(t, server) + " " + hexAddr(t, client)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 9 && f[1]+" "+f[2] == want {
			return f[9]
		}
	}
	t.Fatalf("connection %s -> %s not in /proc/net/tcp", client, server)
	return ""
}

func hexAddr(t testing.TB, a string) string {
	ap, err := net.ResolveTCPAddr("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	ip := ap.IP.To4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port)
}

func holdsInode(t testing.TB, pid int, inode string) bool {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); l == "socket:["+inode+"]" {
			return true
		}
	}
	return false
}

// listeningSockets counts the listening TCP sockets a process holds.
func listeningSockets(t testing.TB, pid int) int {
	listening := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n") {
			if fs := strings.Fields(line); len(fs) > 9 && fs[3] == "0A" {
				listening[fs[9]] = true
			}
		}
	}
	n := 0
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if ino, ok := strings.CutPrefix(l, "socket:["); ok && listening[strings.TrimSuffix(ino, "]")] {
			n++
		}
	}
	return n
}

// stableFDs counts a process's descriptors once the count has settled (the
// control connection of the status call just made closes asynchronously).
func stableFDs(t *testing.T, pid int) int {
	t.Helper()
	n, same := openFDs(t, pid), 0
	waitFor(5*time.Second, func() bool {
		m := openFDs(t, pid)
		if m == n {
			same++
		} else {
			n, same = m, 0
		}
		return same >= 5
	})
	return n
}
