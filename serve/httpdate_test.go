package serve

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/httpx"
)

// TestHTTPDateConcurrent: the Date value is the one of the second asked
// for, whatever other goroutines ask meanwhile. A response's Date is its
// request's start (httpConn.now), so a worker's goroutines ask for
// different seconds at once, older ones included; a value and its second
// stored apart could pair one second with another's value.
func TestHTTPDateConcurrent(t *testing.T) {
	var d httpDate
	base := time.Unix(1_700_000_000, 0)
	secs := []time.Time{base, base.Add(time.Second), base.Add(2 * time.Second)}
	want := make([]string, len(secs))
	for i, s := range secs {
		want[i] = string(httpx.AppendHTTPDate(nil, s))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for g := range max(4, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20000 {
				k := (g + i) % len(secs)
				if got := string(d.get(secs[k])); got != want[k] {
					mu.Lock()
					bad = append(bad, got+" for "+want[k])
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d goroutines got another second's Date, e.g. %s", len(bad), bad[0])
	}
}
