// Package human formats sizes, rates and durations for people.
package human

import (
	"fmt"
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
