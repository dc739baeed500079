package fetch

import (
	"fmt"
	"strings"
	"time"
)

// ident is what tells one version of a file from another on one source:
// zfs-serve's native STAT gives the size and the mtime in nanoseconds; an
// HTTP server its Content-Length, Last-Modified (seconds), ETag and,
// maybe, a digest.
type ident struct {
	Size  int64
	MTime int64 // Unix nanoseconds; 0 when the server gives none
	// ETag is the HTTP entity tag as sent (W/ for a weak one), "" for none.
	ETag string
	// LastModified is the HTTP Last-Modified value as sent, for If-Range.
	LastModified string
	// SHA256 is the digest the server announces for the whole file, in
	// lower-case hex, "" for none.
	SHA256 string
	// NoRanges: the server says it does not take ranges (Accept-Ranges:
	// none).
	NoRanges bool
	// Loc is where an HTTP file is, after redirects.
	Loc Target
}

// strongETag reports whether t's ETag can be used in If-Range.
func (id ident) strongETag() bool { return id.ETag != "" && !strings.HasPrefix(id.ETag, "W/") }

// ifRange is the validator for an If-Range request field: the strong ETag,
// else the Last-Modified date, else "" (none: the range is asked for
// unconditionally, and the response's own validators are checked).
func (id ident) ifRange() string {
	if id.strongETag() {
		return id.ETag
	}
	return id.LastModified
}

// hasValidator reports whether a change of the file can be seen other
// than by its size: always natively (an mtime of 0 is an mtime), over HTTP
// by Last-Modified, ETag or a digest.
func (id ident) hasValidator() bool {
	return !id.Loc.IsHTTP() || id.MTime != 0 || id.ETag != "" || id.SHA256 != ""
}

// changedFrom says how now differs from was, two answers of one source
// about one file, or "" if they are the same version. A validator that
// one answer has and the other lacks counts as a change.
func (now ident) changedFrom(was ident) string {
	var parts []string
	if was.Size != now.Size {
		parts = append(parts, fmt.Sprintf("size %d -> %d bytes", was.Size, now.Size))
	}
	if was.MTime != now.MTime {
		parts = append(parts, fmt.Sprintf("mtime %s -> %s", fmtTime(was.MTime), fmtTime(now.MTime)))
	}
	if was.ETag != now.ETag {
		parts = append(parts, fmt.Sprintf("ETag %s -> %s", orNone(was.ETag), orNone(now.ETag)))
	}
	if was.SHA256 != now.SHA256 && was.SHA256 != "" && now.SHA256 != "" {
		parts = append(parts, fmt.Sprintf("sha256 %s -> %s", was.SHA256, now.SHA256))
	}
	return strings.Join(parts, ", ")
}

// differsFrom says how a mirror's file m differs from the reference ref
// (another server's answer), or "". The size must match; digests, when
// both announce one, decide; otherwise the mtimes, when both give one, must
// agree: to the second where either is HTTP (Last-Modified's precision);
// between two native answers, to the precision of the coarser of the two
// (mtimePrecision), so a mirror whose copy kept only whole seconds (tar,
// scp -p) or microseconds is not left out for the digits it lost, while
// two versions within the same second, both in nanoseconds, still differ.
// ETags are not compared: two servers derive them from different things
// (zfs-serve from the inode, nginx from mtime and size).
func (m ident) differsFrom(ref ident) string {
	if m.Size != ref.Size {
		return fmt.Sprintf("size %d bytes, not %d", m.Size, ref.Size)
	}
	if m.SHA256 != "" && ref.SHA256 != "" {
		if m.SHA256 != ref.SHA256 {
			return fmt.Sprintf("sha256 %s, not %s", m.SHA256, ref.SHA256)
		}
		return ""
	}
	if m.MTime == 0 || ref.MTime == 0 {
		return ""
	}
	unit := int64(1e9) // HTTP's Last-Modified: seconds
	if m.LastModified == "" && ref.LastModified == "" {
		unit = max(mtimePrecision(m.MTime), mtimePrecision(ref.MTime))
	}
	if floorDiv(m.MTime, unit) != floorDiv(ref.MTime, unit) {
		why := fmt.Sprintf("mtime %s, not %s", fmtTime(m.MTime), fmtTime(ref.MTime))
		if unit > 1 {
			why += fmt.Sprintf(" (compared to %s)", time.Duration(unit))
		}
		return why
	}
	return ""
}

// mtimePrecision is the coarsest precision a native mtime (nanoseconds)
// may have been cut to by a copy or a file system: a second (tar's ustar
// and GNU formats, scp -p, file systems with second timestamps), a
// microsecond (utimes), 100 ns (NTFS, SMB), else a nanosecond. A value
// that happens to end in zeros is compared a little less finely: one in
// a thousand to the microsecond, one in a billion to the second.
func mtimePrecision(ns int64) int64 {
	for _, p := range []int64{1e9, 1e3, 100} {
		if ns%p == 0 {
			return p
		}
	}
	return 1
}

// floorDiv is a/b rounded down (mtimes before 1970 are negative).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func fmtTime(ns int64) string {
	if ns == 0 {
		return "none"
	}
	return time.Unix(0, ns).UTC().Format("2006-01-02T15:04:05.999999999Z")
}

// describeChange says what differs between two versions of a file.
func describeChange(size0, mtime0, size1, mtime1 int64) string {
	return ident{Size: size1, MTime: mtime1}.changedFrom(ident{Size: size0, MTime: mtime0})
}
