package main

import (
	"strings"
	"testing"
)

const wrkOK = `Running 2s test @ http://127.0.0.1:18081
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.14ms   14.14ms 131.67ms   90.12%
    Req/Sec     8.27k     7.79k   32.67k    82.50%
  Latency Distribution
     50%  450.00us
     75%    8.43ms
     90%   21.86ms
     99%    1.20s
  33507 requests in 2.11s, 138.59MB read
Requests/sec:  15881.07
Transfer/sec:     65.69MB
`

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want sample // checked keys
		err  string // substring of the error; "" for none
	}{
		{"ok", wrkOK, sample{"rps": 15881.07, "requests": 33507, "read_bytes": 138.59 * (1 << 20), "p50_us": 450, "p90_us": 21860, "p99_us": 1.2e6}, ""},
		{"socket errors", strings.Replace(wrkOK, "Requests/sec", "  Socket errors: connect 0, read 12, write 0, timeout 0\nRequests/sec", 1), nil, "Socket errors: connect 0, read 12"},
		{"non-2xx", strings.Replace(wrkOK, "Requests/sec", "  Non-2xx or 3xx responses: 7\nRequests/sec", 1), nil, "Non-2xx or 3xx responses: 7"},
		{"404s wanted, all 404", strings.Replace(wrkOK, "Requests/sec", "  Non-2xx or 3xx responses: 33507\nRequests/sec", 1), sample{"rps": 15881.07, "requests": 33507}, ""},
		{"404s wanted, some 200", strings.Replace(wrkOK, "Requests/sec", "  Non-2xx or 3xx responses: 33500\nRequests/sec", 1), nil, "33500 of 33507 responses"},
		{"404s wanted, none", wrkOK, nil, "0 of 33507 responses"},
		{"404s wanted, socket errors", strings.Replace(wrkOK, "Requests/sec", "  Socket errors: connect 0, read 12, write 0, timeout 0\n  Non-2xx or 3xx responses: 33507\nRequests/sec", 1), nil, "Socket errors"},
		{"nothing answered", "Running 1s test @ http://127.0.0.1:1\n  0 requests in 1.06s, 0.00B read\nRequests/sec:      0.00\nTransfer/sec:       0.00B\n", nil, "no request completed"},
		{"not wrk", "unable to connect to 127.0.0.1:1 Connection refused", nil, "no Requests/sec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.text, strings.HasPrefix(tc.name, "404s wanted"))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if d := got[k] - v; d > 1e-6*v || d < -1e-6*v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func TestSideCell(t *testing.T) {
	sec := &Section{ID: "http64", Metrics: []Metric{mRPS}, Rows: []*Row{
		{Key: zfsHTTPKey, Errors: []string{"wrk: Socket errors: connect 0, read 5, write 0, timeout 0"}},
		{Key: "nginx", Runs: []map[string]float64{{"rps": 100e3}, {"rps": 120e3}, {"rps": 110e3}}},
	}}
	busy := &Section{ID: "http64", Busy: true, Rows: sec.Rows}
	for _, tc := range []struct {
		name  string
		s     *Section
		row   string
		quick bool
		want  string
	}{
		{"median", sec, "nginx", false, "110.0"},
		{"failed server", sec, zfsHTTPKey, false, "**failed**"},
		{"section not run", nil, "nginx", false, "not run"},
		{"busy", busy, "nginx", false, "box busy"},
		{"busy but quick", busy, "nginx", true, "110.0"},
	} {
		if got := sideCell(tc.s, tc.row, mRPS, tc.quick); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := sideRatio(sec, sidePair{"http64", zfsHTTPKey, "nginx"}, "rps", false); got != "-" {
		t.Errorf("ratio with a failed server = %q, want -", got)
	}
}
