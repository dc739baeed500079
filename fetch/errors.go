package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/zfs-serve/zfs-serve/internal/human"
	"github.com/zfs-serve/zfs-serve/wire"
)

// LocalError is a failure of the local side: creating, writing, renaming
// the output. It is never retried.
type LocalError struct {
	Op   string
	Path string
	Err  error
}

func (e *LocalError) Error() string { return fmt.Sprintf("%s %s: %v", e.Op, e.Path, e.Err) }
func (e *LocalError) Unwrap() error { return e.Err }

// VerifyError means the bytes arrived but are not the file: a count that
// differs from the server's size, a digest that differs from the one the
// user gave, or a file that changed while being streamed to stdout.
type VerifyError struct{ Msg string }

func (e *VerifyError) Error() string { return "verification failed: " + e.Msg }

// GiveUpError is the last retryable error once the retry budget is spent.
type GiveUpError struct {
	Attempts int
	Err      error
}

func (e *GiveUpError) Error() string {
	if e.Attempts == 1 {
		return fmt.Sprintf("%s (gave up after 1 attempt)", Reason(e.Err))
	}
	return fmt.Sprintf("%s (gave up after %d attempts)", Reason(e.Err), e.Attempts)
}
func (e *GiveUpError) Unwrap() error { return e.Err }

// changedError means the file on the server is not the version the bytes
// already written came from: the download must start over.
type changedError struct{ msg string }

func (e *changedError) Error() string { return e.msg }

// connError is a failure of the connection to the server (dial, read,
// write, timeout, early close).
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

// Retryable reports whether another attempt may succeed: connection
// failures (including refused, reset and early close) and busy or draining
// answers, HTTP 408, 429 and 5xx. Refusals, protocol violations, TLS
// certificate errors, local and verification errors are final.
func Retryable(err error) bool {
	var se *StatusError
	var we *wire.Error
	var dns *net.DNSError
	var le *LocalError
	var ve *VerifyError
	var ce *CertError
	var he *httpError
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		return false
	case errors.As(err, &le), errors.As(err, &ve), errors.As(err, &ce), errors.As(err, &he):
		return false
	case errors.As(err, &se):
		return se.Retryable()
	case errors.As(err, &we):
		return false
	case errors.As(err, &dns):
		return !dns.IsNotFound
	}
	var cerr *connError
	return errors.As(err, &cerr) || isNetErr(err)
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// Reason says in a few words why an attempt failed, for lines such as
// "server draining, retrying in 2s".
func Reason(err error) string {
	var se *StatusError
	var ne net.Error
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &se) && se.HTTP != 0 && se.Retryable():
		return fmt.Sprintf("server busy (HTTP %d)", se.HTTP)
	case errors.As(err, &se) && se.Status == wire.StatusDraining:
		return "server draining"
	case errors.As(err, &se) && se.Status == wire.StatusBusy:
		return "server busy"
	case errors.As(err, &se):
		return se.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "connection timed out"
	}
	return err.Error()
}

// Backoff policy: the delay before retry n (1-based) is base*2^(n-1),
// capped, then jittered down by up to half so that many clients cut off at
// once (a server restart) do not come back in lockstep.
const (
	backoffBase = 250 * time.Millisecond
	backoffCap  = 8 * time.Second
)

func backoff(n int, base, ceil time.Duration, rnd func() float64) time.Duration {
	d := ceil
	if n < 16 {
		d = min(base<<(max(n, 1)-1), ceil)
	}
	return d/2 + time.Duration(rnd()*float64(d/2))
}

var defaultRand = rand.Float64

// describeRetry is how a renderer may phrase a retry event.
func describeRetry(err error, delay time.Duration) string {
	return fmt.Sprintf("%s, retrying in %s", Reason(err), human.Delay(delay))
}

// RetryMessage phrases a Retry event for people: "server draining,
// retrying in 2s".
func RetryMessage(e Event) string { return describeRetry(e.Err, e.Delay) }
