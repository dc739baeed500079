package human

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:            "0ms",
		0:                       "0ms",
		239 * time.Millisecond:  "239ms",
		time.Second:             "1s",
		1500 * time.Millisecond: "1.5s",
		8 * time.Second:         "8s",
		9960 * time.Millisecond: "10s",
		65 * time.Second:        "1m05s",
	} {
		if got := Delay(d); got != want {
			t.Errorf("Delay(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"512": 512, "0": 0, "500K": 500 << 10, "20M": 20 << 20, "1.5G": 3 << 29, "2MiB": 2 << 20,
		"64KB": 64 << 10, "1t": 1 << 40, " 7 k ": 7 << 10, "3B": 3,
	} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "1X", "1.2.3M", "1e3", "NaNM", "99999999999T", "1 M B"} {
		if got, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", in, got)
		}
	}
}

// ParseBytes reads back what Bytes prints, within its rounding.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"1", "500K", "1.5GiB", "3.2 GiB", "12 KB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseBytes(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseBytes(%q) = %d", s, n)
		}
		back, err := ParseBytes(Bytes(n))
		if err != nil {
			t.Fatalf("ParseBytes(Bytes(%d) = %q): %v", n, Bytes(n), err)
		}
		if d := float64(back-n) / float64(max(n, 1)); d > 0.01 || d < -0.01 {
			t.Fatalf("%d -> %q -> %d", n, Bytes(n), back)
		}
	})
}
