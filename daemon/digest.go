package daemon

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/digest"
)

// zctl digest: the supervisor asks one worker of the current generation
// to compute the digests (msgDigestReq), waits for its answer (msgDigest),
// and passes what it learned to the generation's other workers
// (msgDigestLearn), so each of them announces the digests at once, with
// or without an on-disk cache.

// digestRequest is msgDigestReq's JSON, after the request id.
type digestRequest struct {
	Paths     []string `json:"paths"`
	TimeoutMS int64    `json:"timeout_ms"`
}

// digestAnswer is msgDigest's JSON, after the request id.
type digestAnswer struct {
	Error   string         `json:"error,omitempty"` // the request failed as a whole
	Results []digestResult `json:"results,omitempty"`
}

type digestResult struct {
	Key    digest.Key `json:"key"`
	SHA256 string     `json:"sha256,omitempty"`
	Error  string     `json:"error,omitempty"`
}

// digestLearned is one entry of msgDigestLearn's JSON array.
type digestLearned struct {
	Key    digest.Key `json:"key"`
	SHA256 string     `json:"sha256"`
}

// maxDigestError bounds each error in an answer, so that an answer for
// ctl.MaxDigestPaths paths fits one channel message.
const maxDigestError = 256

// digestMargin is how long the supervisor waits for a worker's answer
// beyond the request's timeout (the worker answers at the timeout).
const digestMargin = 5 * time.Second

// Digest implements ctl.DigestHandler.
func (h *controlHandler) Digest(ctx context.Context, paths []string, timeout time.Duration) ([]ctl.Digest, error) {
	s := h.sup()
	var ws []*workerProc
	if p := s.dispatch.Load(); p != nil {
		ws = *p
	}
	if len(ws) == 0 {
		return nil, errors.New("no worker is ready to compute digests")
	}
	w := ws[0]
	for _, o := range ws[1:] {
		if o.active.Load() < w.active.Load() {
			w = o
		}
	}
	req, err := digestRequestPayload(paths, timeout)
	if err != nil {
		return nil, err
	}
	b, err := w.ask(ctx, s.querySeq.Add(1), msgDigestReq, req, timeout+digestMargin)
	if err != nil {
		return nil, err
	}
	var ans digestAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		return nil, fmt.Errorf("bad digest answer from worker %d: %w", w.pid, err)
	}
	if ans.Error != "" {
		return nil, errors.New(ans.Error)
	}
	if len(ans.Results) != len(paths) {
		return nil, fmt.Errorf("worker %d answered %d digests for %d paths", w.pid, len(ans.Results), len(paths))
	}
	out := make([]ctl.Digest, len(paths))
	var learned []digestLearned
	for i, r := range ans.Results {
		out[i] = ctl.Digest{Path: paths[i], SHA256: r.SHA256, Error: r.Error}
		if r.Error == "" {
			out[i].Size = r.Key.Size
			learned = append(learned, digestLearned{Key: r.Key, SHA256: r.SHA256})
		}
	}
	if len(learned) > 0 {
		msg, _ := json.Marshal(learned)
		msg = append([]byte{msgDigestLearn}, msg...)
		for _, o := range ws {
			if o != w {
				fdpass.TrySend(o.ch, msg) // best effort: a miss there only means a hash or a disk load
			}
		}
	}
	return out, nil
}

// digestRequestPayload is msgDigestReq's JSON. Without HTML escaping: a
// request line of ctl.MaxLine bytes of '<' would take six times as many
// as \u003c, more than one channel message holds, and a worker drops a
// message over its receive buffer (the request would wait out its whole
// timeout). As it is, the worst case is U+2028, escaped in six bytes for
// three, which fits; a request that would not is refused at once.
func digestRequestPayload(paths []string, timeout time.Duration) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(digestRequest{Paths: paths, TimeoutMS: timeout.Milliseconds()}); err != nil {
		return nil, err
	}
	if n := len(idMessage(msgDigestReq, 0)) + b.Len(); n > maxMsg {
		return nil, fmt.Errorf("digest request of %d bytes is too large for a worker's channel (%d); ask for fewer paths at once", n, maxMsg)
	}
	return b.Bytes(), nil
}

// answerDigest computes the digests a msgDigestReq asks for and answers.
// It runs on its own goroutine: hashing may take minutes.
func (w *worker) answerDigest(p []byte) {
	id, rest, err := parseID(p)
	if err != nil {
		w.log.Error("bad digest request", "err", err)
		return
	}
	var req digestRequest
	var ans digestAnswer
	if err := json.Unmarshal(rest, &req); err != nil {
		ans.Error = "bad digest request: " + err.Error()
	} else if len(req.Paths) > ctl.MaxDigestPaths {
		ans.Error = fmt.Sprintf("digest of %d paths: at most %d per request", len(req.Paths), ctl.MaxDigestPaths)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(req.TimeoutMS)*time.Millisecond)
		rs, err := w.srv.ComputeDigests(ctx, req.Paths)
		cancel()
		if err != nil {
			ans.Error = err.Error()
		}
		for _, r := range rs {
			if r.Err != nil {
				msg := r.Err.Error()
				if errors.Is(r.Err, context.DeadlineExceeded) {
					msg += " (timed out; a hash that had begun goes on, and its digest is kept)"
				}
				if len(msg) > maxDigestError {
					msg = strings.ToValidUTF8(msg[:maxDigestError], "") + "..."
				}
				ans.Results = append(ans.Results, digestResult{Error: msg})
				continue
			}
			ans.Results = append(ans.Results, digestResult{Key: r.Key, SHA256: r.Sum.String()})
		}
	}
	b, _ := json.Marshal(ans)
	if err := fdpass.Send(w.ch, append(idMessage(msgDigest, id), b...)); err != nil {
		w.log.Error("answer digest request", "err", err)
	}
}

// learnDigests records digests another worker computed (msgDigestLearn).
func (w *worker) learnDigests(p []byte) {
	var ls []digestLearned
	if err := json.Unmarshal(p, &ls); err != nil {
		w.log.Error("bad digest message", "err", err)
		return
	}
	for _, l := range ls {
		var s digest.Sum
		if b, err := hex.DecodeString(l.SHA256); err == nil && len(b) == len(s) {
			copy(s[:], b)
			w.srv.LearnDigest(l.Key, s)
		}
	}
}
