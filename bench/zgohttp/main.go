// Command zgohttp is the benchmark's Go net/http peer: the standard
// library's file server, nothing more, so zfs-serve is compared with what
// a Go programmer gets for free.
//
//	zgohttp -listen 127.0.0.1:0 -root DIR
//
// It prints "listening ADDR" once it accepts connections and exits on
// SIGTERM.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	root := flag.String("root", ".", "directory to serve")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "zgohttp:", err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	srv := &http.Server{Handler: http.FileServer(http.Dir(*root))}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "zgohttp:", err)
		os.Exit(1)
	}
}
