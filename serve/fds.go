package serve

import "github.com/zfs-serve/zfs-serve/config"

// FDUse says how many descriptors a Server with these options may open
// beyond those it holds once New has returned (the root), for a process
// whose open-file limit is limit: fixed ones whatever the load (the open
// file cache and the idle splice pipes), and at most perConn for each
// connection it serves, the connection's own included. Whoever hands it
// connections can then keep it under its limit: a descriptor passed with
// SCM_RIGHTS to a process that has no room for it is closed by the kernel,
// and that client is lost without an answer.
//
// Per connection: the socket, and while a file is opened its O_PATH
// descriptor and the one reopened for reading (then the file alone, or,
// in splice mode, the file and a pipe pair); a listing holds one
// directory descriptor. A file from the cache costs its connection
// nothing; an evicted one still in use costs the connection using it one.
func (o Options) FDUse(limit int) (fixed, perConn int) {
	perConn = 3
	if o.FileCache > 0 {
		fixed += fileCacheSize(limit)
	}
	if o.Mode == config.ModeSplice {
		fixed += 2 * pipePoolSize
		perConn += 2
	}
	return fixed, perConn
}
