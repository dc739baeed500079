package fetch

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// TestStreamOpenOut: Job.OpenOut is called once, only after the server
// has the file (never for a missing one), its error is the Fetch's, and
// what it opens receives the file.
func TestStreamOpenOut(t *testing.T) {
	s := newFakeServer(t)
	data := randBytes(1<<20, 7)
	s.put("/f", data, mtime1)
	c, _ := testClient(t, Options{})
	var calls atomic.Int32
	name := filepath.Join(t.TempDir(), "out")
	open := func(context.Context) (*os.File, error) {
		calls.Add(1)
		return os.Create(name)
	}
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/missing"), OpenOut: open, Name: "-"}); err == nil || calls.Load() != 0 {
		t.Fatalf("missing file: err %v, OpenOut called %d times, want an error and none", err, calls.Load())
	}
	if _, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), OpenOut: open, Name: "-"}); err != nil || calls.Load() != 1 {
		t.Fatalf("err %v, OpenOut called %d times, want once", err, calls.Load())
	}
	if got, _ := os.ReadFile(name); !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, not the file", len(got))
	}
	boom := errors.New("boom")
	_, err := c.Fetch(context.Background(), Job{Src: s.target("/f"), OpenOut: func(context.Context) (*os.File, error) { return nil, boom }, Name: "-"})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want OpenOut's", err)
	}
}
