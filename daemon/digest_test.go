package daemon

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/digest"
)

// TestDigestAnswerFits: the largest answer a worker can give (every path
// failed with an error of the longest kind, made of the bytes JSON
// escapes the most) fits one channel message.
func TestDigestAnswerFits(t *testing.T) {
	worst := strings.Repeat("\x01", maxDigestError) + "..."
	var ans digestAnswer
	for range ctl.MaxDigestPaths {
		ans.Results = append(ans.Results, digestResult{Key: digest.Key{Dev: ^uint64(0), Ino: ^uint64(0), Size: -1 << 63, MTime: -1 << 63, CTime: -1 << 63},
			SHA256: strings.Repeat("f", 64), Error: worst})
	}
	b, _ := json.Marshal(ans)
	msg := idMessage(msgDigest, 1)
	if n := len(msg) + len(b); n > maxMsg {
		t.Fatalf("an answer for %d paths takes %d bytes; a channel message has at most %d", ctl.MaxDigestPaths, n, maxMsg)
	} else {
		t.Logf("largest answer: %d bytes of %d", n, maxMsg)
	}
}

// TestDigestRequestFits: the largest digest request the control server
// accepts (a MaxLine line whose paths are made of the bytes JSON
// escapes the most: '<', '>' and '&', which encoding/json writes as
// \u003c and the like by default, six bytes for one, or U+2028) fits one
// channel message to the worker as the supervisor encodes it. One that
// did not was dropped by the worker ("channel message too long;
// ignored", over its receive buffer) and zctl digest waited out the
// whole timeout, 5 minutes by default, or failed with "sendmsg: message
// too long".
func TestDigestRequestFits(t *testing.T) {
	for _, c := range []string{"<", ">", "&", "\u2028"} {
		var paths []string
		per := 4000 / len(c) * len(c)
		for range ctl.MaxDigestPaths {
			paths = append(paths, strings.Repeat(c, per/len(c)))
			var line bytes.Buffer
			enc := json.NewEncoder(&line)
			enc.SetEscapeHTML(false)
			enc.Encode(ctl.Request{V: ctl.Version, Cmd: ctl.CmdDigest, Paths: paths})
			if line.Len() > ctl.MaxLine {
				paths = paths[:len(paths)-1]
				break
			}
		}
		payload, err := digestRequestPayload(paths, ctl.DefaultDigestTimeout)
		if err != nil {
			t.Errorf("%q: %d paths of %d bytes: %v", c, len(paths), per, err)
			continue
		}
		if n := len(idMessage(msgDigestReq, 1)) + len(payload); n > maxMsg {
			t.Errorf("%q: %d paths of %d bytes take %d bytes on the channel; a message has at most %d", c, len(paths), per, n, maxMsg)
		}
	}
}
