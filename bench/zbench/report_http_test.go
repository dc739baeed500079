package main

import (
	"strings"
	"testing"
)

// A run whose zfs-serve failed every HTTP run still renders: the sections
// and the side-by-side table say "failed", nginx's figures stand, and the
// targets say why they have no value.
func TestRenderFailedHTTPServer(t *testing.T) {
	r := &Results{Params: fullParams(), Machine: map[string]string{}}
	for _, id := range httpSectionIDs {
		ours, peer, key := zfsHTTPKey, "nginx", "rps"
		if id == "httpfetch" {
			ours, peer, key = "curl<-"+zfsHTTPKey, "curl<-nginx", "gbps"
		}
		r.Sections = append(r.Sections, &Section{ID: id, Title: id, Metrics: []Metric{mRPS, mGBps}, Ratios: []string{key},
			Rows: []*Row{
				{Key: ours, Label: "zfs-serve (sendfile), HTTP", Errors: []string{"warm-up: wrk: Socket errors: connect 0, read 9, write 0, timeout 0"}},
				{Key: peer, Label: "nginx", Runs: []map[string]float64{{key: 2}}},
			}})
	}
	var w strings.Builder
	render(&w, r, "")
	out := w.String()
	for _, want := range []string{
		"## Native vs HTTP vs nginx",
		"| 4 KiB keep-alive, 64 conns | k req/s | not run | not run | - | **failed** | 0.0 | - |",
		"| one big file | GB/s | not run | not run | - | **failed** | 2.00 | - |",
		"| zfs-serve (sendfile), HTTP | **failed** (below) |",
		"- error, zfs-serve (sendfile), HTTP: warm-up: wrk: Socket errors",
		"| HTTP (wrk), 4 KiB keep-alive, 64 conns: >= 1.0x nginx req/s | - | not measured (errors) |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out, ": ratio |") {
		t.Errorf("report has a ratio table although zfs-serve has no figure:\n%s", out)
	}
}

// TestRatioText: a ratio that two decimals would round onto its target
// shows a third, so a missed target never reads as its own line.
func TestRatioText(t *testing.T) {
	for _, c := range []struct {
		v, want float64
		text    string
	}{
		{0.949, 0.95, "0.949x"},
		{0.9504, 0.95, "0.950x"},
		{0.95, 0.95, "0.95x"},
		{1.2049, 1.2, "1.205x"},
		{1.1951, 1.2, "1.195x"},
		{1.27, 1.2, "1.27x"},
		{0.7649, 0.8, "0.76x"},
	} {
		if got := ratioText(c.v, c.want); got != c.text {
			t.Errorf("ratioText(%v, %v) = %q, want %q", c.v, c.want, got, c.text)
		}
	}
}
