// Command zsendfile is the benchmark's physical-limit probe: the least a
// server can do to send a file over TCP. Blocking sockets (no runtime
// poller, no deadlines), a thread per connection, a minimal HTTP/1.1 head,
// then sendfile(2) in a loop for the whole file. No server can be faster
// than this on the same box with the same receiver; zfs-serve's stream
// figures are reported as a fraction of it.
//
//	zsendfile -listen 127.0.0.1:0 -root DIR
//
// It prints "listening ADDR" once it accepts connections, serves keep-alive
// GET requests for regular files under DIR (no "..", no symlink checks: it
// is a probe on a scratch tree, not a server), and exits on SIGTERM.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path"
	"strconv"

	"golang.org/x/sys/unix"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (IPv4)")
	root := flag.String("root", ".", "directory to serve")
	flag.Parse()
	ap, err := netip.ParseAddrPort(*listen)
	if err != nil || !ap.Addr().Is4() {
		fatal(fmt.Errorf("-listen must be IPv4 address:port: %q", *listen))
	}
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fatal(err)
	}
	unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		fatal(err)
	}
	if err := unix.Listen(ln, 4096); err != nil {
		fatal(err)
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		fatal(err)
	}
	a := sa.(*unix.SockaddrInet4)
	fmt.Printf("listening %s\n", netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)))
	os.Stdout.Sync()
	for {
		fd, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			fatal(err)
		}
		go serve(fd, *root)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "zsendfile:", err)
	os.Exit(1)
}

// serve answers GET requests on fd until the client closes.
func serve(fd int, root string) {
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	have := 0
	for {
		i := bytes.Index(buf[:have], []byte("\r\n\r\n"))
		if i < 0 {
			if have == len(buf) {
				return
			}
			n, err := unix.Read(fd, buf[have:])
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				return
			}
			have += n
			continue
		}
		line, _, _ := bytes.Cut(buf[:i], []byte("\r\n"))
		f := bytes.Fields(line)
		ok := len(f) == 3 && string(f[0]) == "GET"
		var p string
		if ok {
			p = path.Clean("/" + string(f[1]))
		}
		copy(buf, buf[i+4:have])
		have -= i + 4
		if !ok || !send(fd, root+p) {
			return
		}
	}
}

// send writes the head and the whole file; false means close the connection.
func send(fd int, name string) bool {
	f, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		writeAll(fd, []byte("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
		return true
	}
	defer unix.Close(f)
	var st unix.Stat_t
	if unix.Fstat(f, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		writeAll(fd, []byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"))
		return true
	}
	head := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.FormatInt(st.Size, 10) + "\r\n\r\n"
	for b := []byte(head); len(b) > 0; {
		n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_MORE|unix.MSG_NOSIGNAL)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false
		}
		b = b[n:]
	}
	var off int64
	for off < st.Size {
		n, err := unix.Sendfile(fd, f, &off, int(st.Size-off))
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return false
		}
	}
	return true
}

func writeAll(fd int, b []byte) {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		b = b[n:]
	}
}
