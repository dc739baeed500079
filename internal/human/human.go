// Package human formats sizes, rates and durations for people.
package human

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Bytes formats n with binary units: "0 B", "512 B", "1.5 KiB", "3.2 GiB".
func Bytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		v /= 1024
		if v < 1024 || u == "PiB" {
			if v < 10 {
				return fmt.Sprintf("%.2f %s", v, u)
			}
			if v < 100 {
				return fmt.Sprintf("%.1f %s", v, u)
			}
			return fmt.Sprintf("%.0f %s", v, u)
		}
	}
	return "?"
}

// Rate formats bytes per second.
func Rate(bps float64) string {
	if bps < 0 {
		bps = 0
	}
	return Bytes(int64(bps)) + "/s"
}

// Duration formats d compactly: "0s", "42s", "3m05s", "2h10m", "3d4h".
func Duration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, (s%3600)/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, (s%86400)/3600)
}

// Delay formats a short wait precisely enough to be meaningful below a
// second: "250ms", "1.5s", "8s", "1m05s" (Duration rounds to whole seconds).
func Delay(d time.Duration) string {
	switch {
	case d < 0:
		d = 0
	case d >= 10*time.Second:
		return Duration(d)
	}
	if d < time.Second {
		return fmt.Sprintf("%dms", d.Round(time.Millisecond)/time.Millisecond)
	}
	s := d.Round(100 * time.Millisecond).Seconds()
	if s == float64(int64(s)) {
		return fmt.Sprintf("%ds", int64(s))
	}
	return fmt.Sprintf("%.1fs", s)
}

// ParseBytes reads a size such as "512", "500K", "20M", "1.5G", "2MiB" or
// "64KB". K, M, G, T and P are binary multiples (1024), with or without "iB"
// or "B" after them, as in Bytes' output.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("bad size %q", s)
	}
	mult, ok := units[strings.ToUpper(unit)]
	if !ok {
		return 0, fmt.Errorf("bad size %q: unknown unit %q", s, unit)
	}
	n := v * mult
	if n >= math.MaxInt64 {
		return 0, fmt.Errorf("bad size %q: too large", s)
	}
	return int64(n), nil
}

var units = map[string]float64{"": 1, "B": 1}

func init() {
	for i, u := range []string{"K", "M", "G", "T", "P"} {
		m := float64(int64(1) << (10 * (i + 1)))
		units[u], units[u+"B"], units[u+"IB"] = m, m, m
	}
}
