package main

import (
	"fmt"
	"strings"
)

// sidePair is one server pair of the side-by-side table: zfs-serve's row
// and nginx's row in one section, measured with the same client.
type sidePair struct{ sec, ours, peer string }

// sideWorkload is one workload measured both natively and over HTTP.
type sideWorkload struct {
	what         string
	native, http sidePair
	metrics      []string
}

func sideWorkloads(manyConns int) []sideWorkload {
	req := []string{"rps", "p99_us", "cpu_us_per_req"}
	many := fmt.Sprint(manyConns)
	return []sideWorkload{
		{"4 KiB keep-alive, 64 conns", sidePair{"small64", "zfs-sendfile", "nginx"}, sidePair{"http64", zfsHTTPKey, "nginx"}, req},
		{"4 KiB keep-alive, " + many + " conns", sidePair{"small" + many, "zfs-sendfile", "nginx"}, sidePair{"http" + many, zfsHTTPKey, "nginx"}, req},
		{"4 KiB, new connection per request", sidePair{"newconn", "zfs-sendfile", "nginx"}, sidePair{"httpnewconn", zfsHTTPKey, "nginx"}, req},
		{"one big file", sidePair{"fetch", "zfetch<-zfs-sendfile", "curl<-nginx"}, sidePair{"httpfetch", "curl<-" + zfsHTTPKey, "curl<-nginx"}, []string{"gbps", "cpu_per_gb"}},
	}
}

// renderSideBySide writes zfs-serve native, zfs-serve HTTP and nginx next
// to each other, from the sections of this run, if any HTTP section ran.
func renderSideBySide(w *strings.Builder, r *Results) {
	sec := func(id string) *Section {
		for _, s := range r.Sections {
			if s.ID == id {
				return s
			}
		}
		return nil
	}
	var ran bool
	for _, id := range httpSectionIDs {
		ran = ran || sec(id) != nil
	}
	if !ran {
		return
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("## Native vs HTTP vs nginx\n\n")
	p("zfs-serve (sendfile) over its native protocol and over HTTP/1.1 on the same port, and nginx, from the sections below (medians of this run). ")
	p("Each pair is measured with one client: natively with zload (native protocol to zfs-serve, HTTP to nginx; for the big file zfetch against curl <- nginx, the issue's comparison), ")
	p("over HTTP with wrk (curl for the big file) for both servers. A ratio is zfs-serve's figure over nginx's in the same pair.\n\n")
	p("| workload | figure | native: zfs-serve | nginx | ratio | HTTP: zfs-serve | nginx | ratio |\n|---|---|---|---|---|---|---|---|\n")
	for _, wl := range sideWorkloads(r.Params.ManyConns) {
		ns, hs := sec(wl.native.sec), sec(wl.http.sec)
		for _, key := range wl.metrics {
			m := sideMetric(ns, hs, key)
			label := m.Label
			if m.Lower {
				label += " (lower is better)"
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", wl.what, label,
				sideCell(ns, wl.native.ours, m, r.Quick), sideCell(ns, wl.native.peer, m, r.Quick), sideRatio(ns, wl.native, key, r.Quick),
				sideCell(hs, wl.http.ours, m, r.Quick), sideCell(hs, wl.http.peer, m, r.Quick), sideRatio(hs, wl.http, key, r.Quick))
		}
	}
	p("\n")
}

// sideMetric finds key's column in whichever of the sections ran.
func sideMetric(a, b *Section, key string) Metric {
	for _, s := range []*Section{a, b} {
		if s != nil {
			return metricOf(s, key)
		}
	}
	for _, m := range []Metric{mGBps, mCPUGB, mRPS, mP99, mCPUReq} {
		if m.Key == key {
			return m
		}
	}
	return Metric{Key: key, Label: key, Scale: 1, Digits: 2}
}

// sideCell is row's median of m in s, or why there is none.
func sideCell(s *Section, row string, m Metric, quick bool) string {
	switch {
	case s == nil:
		return "not run"
	case s.Busy && !quick:
		return "box busy"
	}
	r := s.find(row)
	if v, ok := r.median(m.Key); ok {
		return fmt.Sprintf("%.*f", m.Digits, v*m.Scale)
	}
	if r != nil && len(r.Errors) > 0 {
		return "**failed**"
	}
	return "-"
}

func sideRatio(s *Section, pr sidePair, key string, quick bool) string {
	if s == nil || s.Busy && !quick {
		return "-"
	}
	a, b := s.find(pr.ours), s.find(pr.peer)
	if a == nil || b == nil {
		return "-"
	}
	return ratioCell(a, b, key)
}
