package daemon

import (
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
