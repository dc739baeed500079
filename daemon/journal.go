package daemon

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// journalStderr says whether stderr is systemd's journal: JOURNAL_STREAM
// ("DEVICE:INODE", set by systemd for a unit whose output goes to the
// journal) names stderr's own device and inode (systemd.exec(5)). Workers
// inherit both the variable and the stderr.
var journalStderr = sync.OnceValue(func() bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	var st syscall.Stat_t
	if err1 != nil || err2 != nil || syscall.Fstat(2, &st) != nil {
		return false
	}
	return uint64(st.Dev) == d && uint64(st.Ino) == i
})

// levelPrefixer puts each record's level in front of it as sd-daemon(3)'s
// "<N>" (journald takes it as the line's PRIORITY and strips it,
// SyslogLevelPrefix=yes by default), so that `journalctl -p warning`
// finds the daemon's warnings and errors: without it every line of the
// journal is PRIORITY=6 (info). Each Write is one record, as log/slog's
// handlers write them.
type levelPrefixer struct{ w io.Writer }

// journalWriter is w with levelPrefixer when stderr is the journal.
func journalWriter(w io.Writer) io.Writer {
	if journalStderr() {
		return levelPrefixer{w}
	}
	return w
}

func (p levelPrefixer) Write(b []byte) (int, error) {
	pre := syslogPrefix(b)
	if pre == "" {
		return p.w.Write(b)
	}
	rec := make([]byte, 0, len(pre)+len(b))
	rec = append(append(rec, pre...), b...)
	if _, err := p.w.Write(rec); err != nil {
		return 0, err
	}
	return len(b), nil
}

// syslogPrefix is "<N>" for a record of slog's text ("time=... level=WARN
// msg=...") or JSON ({"time":"...","level":"WARN",...}) handler, "" when
// the record's start names no level.
func syslogPrefix(b []byte) string {
	head := b[:min(len(b), 96)]
	var v []byte
	if i := bytes.Index(head, []byte(`"level":"`)); i >= 0 && len(head) > 0 && head[0] == '{' {
		v = head[i+len(`"level":"`):]
	} else if i := bytes.Index(head, []byte("level=")); i == 0 || (i > 0 && head[i-1] == ' ' && bytes.HasPrefix(head, []byte("time="))) {
		v = head[i+len("level="):]
	}
	switch {
	case v == nil:
		return ""
	case bytes.HasPrefix(v, []byte("ERROR")):
		return "<3>"
	case bytes.HasPrefix(v, []byte("WARN")):
		return "<4>"
	case bytes.HasPrefix(v, []byte("INFO")):
		return "<6>"
	case bytes.HasPrefix(v, []byte("DEBUG")):
		return "<7>"
	}
	return ""
}
