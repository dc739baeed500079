package fetch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// StateSuffix is appended to a .part file's name for its resume state.
const StateSuffix = ".state"

// State is what a .part file needs to be resumed safely: which version of
// the file it holds (the server's size and mtime when it was started) and
// which byte ranges are still missing. It is stored as one line of JSON in
// NAME.part.state, replaced atomically (write then rename) as the download
// goes on, and removed when NAME is in place.
//
// A .part written front to back by one connection (Prealloc false) holds
// exactly its first Size(.part) bytes, so its length is the truth and
// Pending is only a floor. A preallocated .part (mmap receive, several
// connections) is full length from the start, so Pending is the truth; it
// is saved after the bytes it counts as done were written, so after a
// crash it can only understate the progress, never overstate it.
type State struct {
	V        int        `json:"v"`
	Source   string     `json:"source"` // the URL, for people reading the file
	Size     int64      `json:"size"`
	MTime    int64      `json:"mtime"`            // Unix nanoseconds (HTTP: Last-Modified, 0 if none)
	ETag     string     `json:"etag,omitempty"`   // HTTP: the source's entity tag
	SHA256   string     `json:"sha256,omitempty"` // the digest the server announced
	Prealloc bool       `json:"prealloc"`
	Pending  [][2]int64 `json:"pending"` // [start, end) ranges not yet written, sorted, disjoint
	// Mirrors are the URLs of the other sources (--mirror) that were
	// asked for bytes: some of the .part may be theirs. A resume starts
	// over if one of them is left out (its file differs from the
	// reference now: it changed since). Absent in states written
	// before zfetch recorded it.
	Mirrors []string `json:"mirrors,omitempty"`
}

// stateVersion is State.V as written by this package.
const stateVersion = 1

// Limits on a state file, checked before and after decoding.
const (
	maxStateBytes  = 1 << 20
	maxStateRanges = 4096
)

// DecodeState parses and validates a state file's contents.
func DecodeState(b []byte) (*State, error) {
	if len(b) > maxStateBytes {
		return nil, fmt.Errorf("resume state is %d bytes, the limit is %d", len(b), maxStateBytes)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("resume state: %w", err)
	}
	if s.V != stateVersion {
		return nil, fmt.Errorf("resume state version %d, want %d", s.V, stateVersion)
	}
	if s.Size < 0 {
		return nil, fmt.Errorf("resume state: negative size %d", s.Size)
	}
	if len(s.Pending) > maxStateRanges {
		return nil, fmt.Errorf("resume state has %d ranges, the limit is %d", len(s.Pending), maxStateRanges)
	}
	var prev int64
	for _, r := range s.Pending {
		if r[0] < prev || r[1] <= r[0] || r[1] > s.Size {
			return nil, fmt.Errorf("resume state: bad pending range [%d, %d) of %d bytes", r[0], r[1], s.Size)
		}
		prev = r[1]
	}
	return &s, nil
}

// Encode returns the state as one line of JSON.
func (s *State) Encode() []byte {
	s.V = stateVersion
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // only ints and strings: cannot fail
	}
	return append(b, '\n')
}

// Remaining is the number of bytes in Pending.
func (s *State) Remaining() int64 {
	var n int64
	for _, r := range s.Pending {
		n += r[1] - r[0]
	}
	return n
}

// readState loads path's resume state; (nil, nil) if there is none.
func readState(path string) (*State, error) {
	// A regular file only, and no more of it than a state can be: a FIFO
	// planted at the name would hang the resume (waiting for a writer),
	// a link to an endless file fill memory. O_NONBLOCK makes opening a
	// FIFO return at once; O_NOFOLLOW refuses a link (zfetch only ever
	// renames a regular file here).
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			err = errors.New("it is a symbolic link")
		}
		return nil, &LocalError{Op: "read resume state", Path: path, Err: unwrapPathErr(err)}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, &LocalError{Op: "read resume state", Path: path, Err: unwrapPathErr(err)}
	}
	if !fi.Mode().IsRegular() {
		return nil, &LocalError{Op: "read resume state", Path: path, Err: notRegular(fi.Mode())}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, &LocalError{Op: "read resume state", Path: path, Err: unwrapPathErr(err)}
	}
	return DecodeState(b)
}

// writeState replaces path's resume state atomically.
func writeState(path string, s *State) error {
	tmp := stateTmpName(path)
	// A new file, never one that is there: a symbolic link planted at the
	// temporary name would have its target truncated and overwritten.
	rmErr := os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		err = unwrapPathErr(err)
		if errors.Is(err, os.ErrExist) && rmErr != nil {
			// Not "file exists" alone: what is there could not be removed
			// (another user's, in a sticky folder such as /tmp; a
			// directory with files in it), and is why.
			err = fmt.Errorf("something is there that zfetch cannot remove (%v)", unwrapPathErr(rmErr))
		}
		return &LocalError{Op: "write resume state", Path: tmp, Err: err}
	}
	_, err = f.Write(s.Encode())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return &LocalError{Op: "write resume state", Path: tmp, Err: unwrapPathErr(err)}
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return &LocalError{Op: "write resume state", Path: path, Err: err}
	}
	return nil
}

// split cuts ranges into about n pieces of similar size, none smaller than
// minPiece unless a range already was, so that n connections get a share
// each.
func split(ranges [][2]int64, n int, minPiece int64) [][2]int64 {
	var total int64
	for _, r := range ranges {
		total += r[1] - r[0]
	}
	if n < 1 {
		n = 1
	}
	piece := max((total+int64(n)-1)/int64(n), minPiece, 1)
	var out [][2]int64
	for _, r := range ranges {
		n := r[1] - r[0]
		k := max(min((n+piece-1)/piece, n/max(minPiece, 1)), 1) // pieces for this range
		q, rem := n/k, n%k                                      // the first rem pieces get one byte more
		a := r[0]
		for i := int64(0); i < k; i++ {
			b := a + q
			if i < rem {
				b++
			}
			out = append(out, [2]int64{a, b})
			a = b
		}
	}
	return out
}
