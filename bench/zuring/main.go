// Command zuring is a measurement probe for issue 15's io_uring lever, not
// a server: it asks how much server CPU per request batching many
// connections' reads and sends into one io_uring_enter saves against the
// same event loop making one recvfrom and one sendmsg per request.
//
//	zuring -addr 127.0.0.1:PORT -root DIR -mode epoll|uring|uring-lazy|uring-poll [-procs N] [-rawwait]
//
// It loads every regular file of at most 64 KiB under DIR into memory and
// answers HTTP/1.1 GET and HEAD for "/"+its relative path, keep-alive and
// pipelined, from N processes (the first re-executes itself N-1 times),
// each with its own SO_REUSEPORT listener and one event loop on one locked
// thread with GOMAXPROCS 1. The modes differ only in how a batch of ready
// connections is read and answered:
//
//   - epoll: a recvfrom per readable connection, a sendmsg per connection
//     with responses (a head and a body iovec per response);
//   - uring: a RECV SQE per readable connection and one io_uring_enter
//     waiting for all of them, then a SENDMSG SQE per connection with
//     responses and one more io_uring_enter waiting for those;
//   - uring-lazy: as uring, but the sends are not submitted on their own:
//     they ride along with the next batch's receives (the loop's next
//     epoll_wait does not block while they are queued), so a batch costs
//     one epoll_wait and one io_uring_enter.
//   - uring-poll: readiness from the ring instead of epoll_wait: one
//     multishot POLL_ADD per connection, whose completions the loop reads
//     from memory; recvfrom and sendmsg as in epoll (poll.go).
//
// -rawwait makes the loop's blocking wait (epoll_wait, or uring-poll's
// io_uring_enter) a raw system call, to measure what the Go runtime's
// part of a wait costs.
//
// It prints nothing while it serves; with port 0 it prints "listening
// ADDR" once. The first process stops its children by pid on SIGINT or
// SIGTERM.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

const childEnv = "ZURING_CHILD" // set in the environment of re-executed processes

func main() {
	runtime.GOMAXPROCS(1)
	runtime.LockOSThread()
	addr := flag.String("addr", "127.0.0.1:0", "IPv4 address:port to listen on (each process binds it with SO_REUSEPORT)")
	root := flag.String("root", ".", "directory whose files of at most 64 KiB are served from memory")
	mode := flag.String("mode", "epoll", "how a batch of ready connections is found, read and answered: epoll, uring, uring-lazy or uring-poll")
	procs := flag.Int("procs", 2, "processes, each one event loop on one thread")
	rawWait := flag.Bool("rawwait", false, "wait (epoll_wait, or uring-poll's io_uring_enter) in a raw system call, unknown to the Go runtime")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `zuring is a measurement probe for issue 15's io_uring lever, not a server:
a minimal HTTP/1.1 static server whose -mode epoll makes one recvfrom and one
sendmsg per ready connection, whose -mode uring and uring-lazy batch those into
io_uring_enter calls, and whose -mode uring-poll learns which connections are
ready from multishot polls in the ring instead of epoll_wait, to compare server
CPU and system calls per request.
See bench/zuring/README.md.

usage: zuring -addr 127.0.0.1:PORT -root DIR -mode epoll|uring|uring-lazy|uring-poll [-procs N] [-rawwait]

`)
		flag.PrintDefaults()
	}
	flag.Parse()
	err := run(*addr, *root, *mode, *procs, *rawWait)
	fmt.Fprintln(os.Stderr, "zuring:", err)
	os.Exit(1)
}

// run serves until it fails.
func run(addr, root, mode string, procs int, rawWait bool) error {
	switch mode {
	case "epoll", "uring", "uring-lazy", "uring-poll":
	default:
		return fmt.Errorf("-mode must be epoll, uring, uring-lazy or uring-poll: %q", mode)
	}
	if procs < 1 {
		return fmt.Errorf("-procs must be at least 1: %d", procs)
	}
	requested, err := netip.ParseAddrPort(addr)
	if err != nil || !requested.Addr().Is4() {
		return fmt.Errorf("-addr must be an IPv4 address:port: %q", addr)
	}
	files, err := load(root)
	if err != nil {
		return err
	}
	lfd, ap, err := listen(requested)
	if err != nil {
		return err
	}
	s, err := newServer(lfd, mode, rawWait, files)
	if err != nil {
		return err
	}
	if os.Getenv(childEnv) == "" {
		if requested.Port() == 0 {
			fmt.Printf("listening %s\n", ap)
		}
		if err := spawn(procs-1, ap, root, mode, rawWait); err != nil {
			return err
		}
	}
	return s.run()
}

// listen opens a non-blocking SO_REUSEPORT listener on ap and returns it
// with the address it got (the kernel's port for port 0).
func listen(ap netip.AddrPort) (int, netip.AddrPort, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, ap, fmt.Errorf("socket: %w", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		unix.Close(fd)
		return -1, ap, fmt.Errorf("SO_REUSEPORT: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		unix.Close(fd)
		return -1, ap, fmt.Errorf("bind %s: %w", ap, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, ap, fmt.Errorf("listen %s: %w", ap, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, ap, fmt.Errorf("getsockname: %w", err)
	}
	a := sa.(*unix.SockaddrInet4)
	return fd, netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
}

// spawn re-executes this program n times on ap. A goroutine then waits
// for SIGINT or SIGTERM, or for a child to exit, stops the children by
// pid, and exits.
func spawn(n int, ap netip.AddrPort, root, mode string, rawWait bool) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("re-exec: %w", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGINT, unix.SIGTERM)
	var children []*exec.Cmd
	exited := make(chan error, n)
	// stop signals every child (os.Process signals by pidfd, so one
	// already reaped is not confused with a new process) and waits for
	// those not known to have exited.
	stop := func(gone int) {
		for _, c := range children {
			c.Process.Signal(unix.SIGTERM)
		}
		for range len(children) - gone {
			<-exited
		}
	}
	for range n {
		c := exec.Command(self, "-addr", ap.String(), "-root", root, "-mode", mode, fmt.Sprintf("-rawwait=%v", rawWait))
		c.Env = append(os.Environ(), childEnv+"=1")
		c.Stdout, c.Stderr = os.Stdout, os.Stderr
		// Pdeathsig follows the thread that forks: main's, locked forever.
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL}
		if err := c.Start(); err != nil {
			stop(0)
			return fmt.Errorf("re-exec: %w", err)
		}
		children = append(children, c)
		go func() { exited <- c.Wait() }()
	}
	go func() {
		select {
		case <-sig:
			stop(0)
			os.Exit(0)
		case err := <-exited:
			stop(1)
			fmt.Fprintf(os.Stderr, "zuring: a child exited (%v): stopping\n", err)
			os.Exit(1)
		}
	}()
	return nil
}
