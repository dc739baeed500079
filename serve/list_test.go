package serve

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/config"
	"github.com/zfs-serve/zfs-serve/wire"
)

func TestList(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "d/b file", []byte("12345"))
	ts.write(t, "d/a", nil)
	os.Mkdir(filepath.Join(ts.root, "d", "sub"), 0o755)
	os.Symlink("a", filepath.Join(ts.root, "d", "ln"))
	syscall.Mkfifo(filepath.Join(ts.root, "d", "pipe"), 0o644)
	r, body := ts.do(t, wire.Request{Op: wire.OpList, Path: "/d"})
	if r.Status != wire.StatusOK || r.Kind != wire.KindDir || r.Size != 5 {
		t.Fatalf("LIST: %+v", r)
	}
	es, err := wire.ReadList(bytes.NewReader(body), r.BodyLen)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name string
		kind wire.Kind
		size int64
	}{{"a", wire.KindFile, 0}, {"b file", wire.KindFile, 5}, {"ln", wire.KindSymlink, 0}, {"pipe", wire.KindOther, 0}, {"sub", wire.KindDir, 0}}
	if len(es) != len(want) {
		t.Fatalf("entries %+v", es)
	}
	for i, w := range want {
		if es[i].Name != w.name || es[i].Kind != w.kind || es[i].Size != w.size {
			t.Errorf("entry %d: %+v, want %+v", i, es[i], w)
		}
	}
}

// TestListBudget: a worker bounds the listing bytes it is sending at
// once, and gives them back after each response.
func TestListBudget(t *testing.T) {
	ts := newTestServer(t, config.ModeSendfile)
	ts.write(t, "d/a", []byte("1"))
	ts.srv.listBytes.Store(maxListBytes) // as if others were being sent
	if r, _ := ts.do(t, wire.Request{Op: wire.OpList, Path: "/d"}); r.Status != wire.StatusBusy {
		t.Fatalf("LIST over the budget: %v", r.Status)
	}
	ts.srv.listBytes.Store(0)
	r, body := ts.do(t, wire.Request{Op: wire.OpList, Path: "/d"})
	if r.Status != wire.StatusOK {
		t.Fatalf("LIST: %v", r.Status)
	}
	es, err := wire.ReadList(bytes.NewReader(body), int64(len(body)))
	if err != nil || len(es) != 1 || es[0].Name != "a" {
		t.Fatalf("entries %+v %v", es, err)
	}
	// Given back just after the send, which the client may see first.
	for deadline := time.Now().Add(10 * time.Second); ts.srv.listBytes.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d listing bytes still counted after the response", ts.srv.listBytes.Load())
		}
	}
}
