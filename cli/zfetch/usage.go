package zfetch

// usage is --help's text (and docs/ZFETCH.md's flags, in short).
const usage = `Usage: zfetch [-o FILE | -O DIR | -o -] [-c] [-q] [--json] [--retries N]
              [--retry-for DUR] [-x N] [-r] [-j N] [--recv MODE] [--sha256 HEX]
              [--no-verify] [--mirror URL]... [--cacert FILE | -k]
              [--limit-rate RATE] [--speed-limit RATE] [--speed-time DUR]
              [--max-time DUR] URL...

Download files from zfs-serve or any HTTP/1.1 server. URL is
zfs://HOST[:PORT]/PATH or HOST[:PORT]/PATH (zfs-serve's native protocol,
port 7070 by default), or http://... or https://... (percent-encoding
accepted).

  -o FILE        write to FILE; -o - writes to stdout (one URL); a device
                 or FIFO (-o /dev/null) is written into as stdout is; a
                 symlink's file is replaced (or made), the link stays;
                 with -r, FILE is the directory that receives the tree
  -O DIR         write into DIR (created if missing); default: .
  -c             continue: resume FILE.part; a complete FILE is left alone
  -q             quiet: print nothing but errors
  --json         print one JSON object per event on stdout (on stderr with
                 -o -); see docs/ZFETCH.md
  --retry-for D  give up once no data has arrived for D (default 90s:
                 longer than a server's drain, 60s by default, and a
                 restart); an attempt that hears nothing ends after D (at
                 least 1s) or 30s, whichever is shorter
  --retries N    also give up after N failed retries in a row (N+1
                 attempts; one that receives data resets the count);
                 default: no limit but --retry-for's
  -x N           fetch each file over N connections by ranges (per source
                 with --mirror)
  -r             fetch the directory tree under each URL (over HTTP: from
                 zfs-serve's or nginx's JSON listing)
  -j N           fetch up to N files at once (default 4)
  --recv MODE    auto, copy, splice or mmap: how bytes get from the socket
                 into the output (default auto: splice into files, the
                 fastest measured, but copy for one connection whose
                 digest is checked; to stdout splice, or copy into
                 /dev/null and terminals); over TLS always copy
  --sha256 HEX   check the file's SHA-256 (one file); wins over a digest
                 the server announces
  --no-verify    do not check digests the servers announce
  --mirror URL   another URL of the same file (repeatable; zfs://, http://
                 and https:// mixed): ranges are fetched from all at once,
                 faster sources get more, and a source that fails, is slow
                 or has another version of the file is left out
  --cacert FILE  trust the certificate authorities in FILE (PEM) for
                 https:// instead of the system's
  -k, --insecure do not check https:// certificates
  --limit-rate R cap the transfer rate, e.g. 500K, 20M, 1.5G (bytes/s)
  --speed-limit R
  --speed-time D end an attempt whose rate stays below R bytes/s for D (by
                 default 1 byte/s and 30s when only one is given); it is
                 retried, but does not count as progress, so a server that
                 trickles uses up --retries
  --max-time D   stop after D in all (e.g. 10m), whatever is left; exit 7

Each file is written to FILE.part (with its resume state in
FILE.part.state; FILE.1.part when a tree has a directory FILE.part) and
renamed to FILE only when complete and verified, with the server's mtime:
its size, and its SHA-256 when the server announces one (zfs-serve
natively, HTTP servers with Repr-Digest or Digest) or --sha256 gives one,
hashed as it is written. Connection errors, connection
refused, busy or draining servers and HTTP 408, 429 and 5xx (after
Retry-After) are retried with backoff, resuming where the bytes stop. If
the file changes on the server meanwhile (its size, mtime, ETag or digest;
looked at again before the rename), it is fetched from the start; over
HTTP, ranges are asked with If-Range for that. Redirects are followed (at
most 10), but not from https to http.
Ctrl-C (and --max-time) keeps FILE.part and prints the command that
resumes it.

Exit status:
  0    every file complete and verified
  1    other error, e.g. a protocol violation by the server
  2    bad command line
  3    refused by the server: not found, forbidden, not a regular file...
  4    connection failed (after the retries)
  5    verification failed: wrong size or SHA-256, or the file changed
       while being written to stdout
  6    local I/O error: cannot create, write or rename the output
  7    --max-time reached; FILE.part is kept for -c
  8    TLS certificate not trusted (see --cacert, -k)
  130  interrupted (Ctrl-C or SIGTERM); FILE.part is kept for -c
With several files, the status is that of the first file that failed.
`
