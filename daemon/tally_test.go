package daemon

import (
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zfs-serve/zfs-serve/daemon/fdpass"
	"github.com/zfs-serve/zfs-serve/serve"
	"github.com/zfs-serve/zfs-serve/wire"
)

func status(native, http uint64) *workerStatus {
	return &workerStatus{BytesSent: native + http, HTTPBytes: http, Native: native / 10, HTTP: http / 10,
		NativeResp: serve.Classes{native / 10}, HTTPResp: serve.Classes{0, 0, http / 10}}
}

// TestTallyNeverGoesBackwards: the totals are what gone workers last
// reported plus what live ones last reported; a late, lower answer, an
// answer after the worker's death and the death itself leave them as
// they were.
func TestTallyNeverGoesBackwards(t *testing.T) {
	var ta tally
	a, b := &workerProc{pid: 1}, &workerProc{pid: 2}
	steps := []struct {
		name             string
		do               func()
		native, httpSent uint64
	}{
		{"a answers", func() { ta.update(a, status(100, 20)) }, 100, 20},
		{"b answers", func() { ta.update(b, status(50, 0)) }, 150, 20},
		{"a answers more", func() { ta.update(a, status(300, 40)) }, 350, 40},
		{"a's older answer arrives late", func() { ta.update(a, status(200, 30)) }, 350, 40},
		{"a dies", func() { markGone(a); ta.retire(a) }, 350, 40},
		{"an answer of a after its death", func() { ta.update(a, status(400, 50)) }, 350, 40},
		{"a replacement starts from zero", func() { ta.update(&workerProc{pid: 3}, status(10, 0)) }, 360, 40},
		{"b drains: its final counts, then its channel closes", func() {
			b2, _ := json.Marshal(status(70, 10))
			ta.final(b, b2)
			markGone(b)
			ta.retire(b)
		}, 380, 50},
		{"retiring a worker twice", func() { ta.retire(b) }, 380, 50},
	}
	for _, st := range steps {
		st.do()
		got, _ := ta.totals()
		if got.nativeBytes != st.native || got.httpBytes != st.httpSent {
			t.Fatalf("%s: native %d http %d, want %d %d", st.name, got.nativeBytes, got.httpBytes, st.native, st.httpSent)
		}
	}
}

// TestTallyRandomOps: whatever the order of answers, deaths and
// replacements, no total ever goes down, and with every worker retired
// through a final report, the totals are exactly what was served.
func TestTallyRandomOps(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var ta tally
	type wk struct {
		p     *workerProc
		sent  uint64 // what the worker has served so far
		reqs  uint64
		resps serve.Classes
	}
	var live []*wk
	var served, prev workerCounts
	check := func(op string) {
		got, _ := ta.totals()
		for i, pair := range [][2]uint64{{got.nativeBytes, prev.nativeBytes}, {got.nativeRequests, prev.nativeRequests},
			{got.nativeResp[2], prev.nativeResp[2]}} {
			if pair[0] < pair[1] {
				t.Fatalf("after %s: counter %d went from %d to %d", op, i, pair[1], pair[0])
			}
		}
		prev = got
	}
	answer := func(w *wk) *workerStatus {
		return &workerStatus{BytesSent: w.sent, Native: w.reqs, NativeResp: w.resps}
	}
	for range 5000 {
		switch op := r.IntN(10); {
		case op < 2 || len(live) == 0:
			live = append(live, &wk{p: &workerProc{}})
		case op < 6:
			w := live[r.IntN(len(live))]
			n := r.Uint64N(1000)
			w.sent += n
			w.reqs++
			w.resps[2]++
			served.nativeBytes += n
			served.nativeRequests++
			served.nativeResp[2]++
		case op < 8:
			w := live[r.IntN(len(live))]
			ta.update(w.p, answer(w))
			check("an answer")
		default:
			i := r.IntN(len(live))
			w := live[i]
			b, _ := json.Marshal(answer(w))
			ta.final(w.p, b)
			markGone(w.p)
			ta.retire(w.p)
			live = append(live[:i], live[i+1:]...)
			check("a drained exit")
		}
	}
	for _, w := range live {
		b, _ := json.Marshal(answer(w))
		ta.final(w.p, b)
		markGone(w.p)
		ta.retire(w.p)
	}
	check("the last exits")
	if got, _ := ta.totals(); got != served {
		t.Fatalf("totals %+v, want what was served %+v", got, served)
	}
}

// TestWorkerCounters: a status query with statusCounters gets the
// counters without the transfers; a drained worker's last message is its
// final counters, after its last done report.
func TestWorkerCounters(t *testing.T) {
	w, sup, root := testWorker(t)
	if err := os.WriteFile(root+"/f", []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	client, fd := acceptedPair(t) // refuse_test.go
	if err := fdpass.Send(sup, appendConns(nil, []connMeta{{id: 5, client: "c"}}), fd); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	exit := make(chan int, 1)
	go func() { exit <- w.run() }()
	client.SetDeadline(time.Now().Add(5 * time.Second))
	for _, p := range []string{"/f", "/missing"} {
		if err := wire.WriteRequest(client, &wire.Request{Op: wire.OpGet, Path: p}); err != nil {
			t.Fatal(err)
		}
		r, err := wire.ReadResponse(client)
		if err != nil {
			t.Fatal(err)
		}
		io.CopyN(io.Discard, client, r.BodyLen)
	}
	want := workerStatus{Active: 1, Connections: 1, BytesSent: 5, Native: 2, NativeResp: serve.Classes{1, 0, 1, 0}}
	if err := fdpass.Send(sup, append(idMessage(msgStatusReq, 9), statusCounters)); err != nil {
		t.Fatal(err)
	}
	if got := statusMsg(t, recvMsg(t, sup), 9); !equalStatus(got, want) {
		t.Fatalf("counters %+v, want %+v", got, want)
	}
	if err := fdpass.Send(sup, []byte{msgDrain}); err != nil {
		t.Fatal(err)
	}
	client.Close()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit status %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the drained worker did not exit")
	}
	if m := recvMsg(t, sup); m[0] != msgDone {
		t.Fatalf("message type %d, want the done report", m[0])
	}
	want.Active = 0
	if got := statusMsg(t, recvMsg(t, sup), finalStatusID); !equalStatus(got, want) {
		t.Fatalf("final counters %+v, want %+v", got, want)
	}
}

func statusMsg(t *testing.T, m []byte, wantID uint64) workerStatus {
	t.Helper()
	if m[0] != msgStatus {
		t.Fatalf("message type %d, want msgStatus", m[0])
	}
	id, rest, err := parseID(m[1:])
	if err != nil || id != wantID {
		t.Fatalf("status id %d %v, want %d", id, err, wantID)
	}
	var st workerStatus
	if err := json.Unmarshal(rest, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func equalStatus(a, b workerStatus) bool {
	return a.Active == b.Active && a.Connections == b.Connections && a.BytesSent == b.BytesSent && a.Native == b.Native &&
		a.HTTP == b.HTTP && a.NativeResp == b.NativeResp && a.HTTPResp == b.HTTPResp && a.Transfers == nil && a.Omitted == b.Omitted
}
