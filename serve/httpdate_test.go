package serve

import (
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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

// TestHTTPLastModifiedNotAfterDate: a file whose modification time is
// ahead of the server's clock (a clock skew, an archive's timestamps) is
// sent with Last-Modified no later than Date, as RFC 9110 section 8.8.2.1
// requires; so is a file changed after its request started (Date is the
// request's start).
func TestHTTPLastModifiedNotAfterDate(t *testing.T) {
	ts := newHTTPServer(t)
	ts.write(t, "future", []byte("hello"))
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(ts.root, "future"), future, future); err != nil {
		t.Fatal(err)
	}
	for _, req := range []string{
		"GET /future HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /future HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		method := strings.Fields(req)[0]
		resp, _ := ts.httpDo(t, method, req)
		date, err := http.ParseTime(resp.Header.Get("Date"))
		if err != nil {
			t.Fatalf("%s: Date %q: %v", method, resp.Header.Get("Date"), err)
		}
		lm, err := http.ParseTime(resp.Header.Get("Last-Modified"))
		if err != nil {
			t.Fatalf("%s: Last-Modified %q: %v", method, resp.Header.Get("Last-Modified"), err)
		}
		if resp.StatusCode != 200 || lm.After(date) {
			t.Errorf("%s: %d, Last-Modified %v after Date %v", method, resp.StatusCode, lm, date)
		}
	}
}
