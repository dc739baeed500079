package daemon

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestCheckMetricsTakeover: the metrics address is taken over only from a
// draining zfs-serve (its /healthz answers 503 "unavailable: draining"),
// bound when nothing listens, and refused otherwise.
func TestCheckMetricsTakeover(t *testing.T) {
	serve := func(code int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			w.Write([]byte(body + "\n"))
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		name     string
		addr     string
		draining bool
		err      string
	}{
		{"nothing listens", free, false, ""},
		{"port 0", "127.0.0.1:0", false, ""},
		{"draining", serve(503, "unavailable: draining"), true, ""},
		{"serving", serve(200, "ok"), false, "address already in use"},
		{"stopping", serve(503, "unavailable: stopping"), true, ""},
		{"another server", serve(404, "not found"), false, "address already in use"},
	} {
		draining, err := checkMetricsTakeover(tc.addr)
		if draining != tc.draining || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: got %v, %v; want %v, %q", tc.name, draining, err, tc.draining, tc.err)
		}
	}
}
