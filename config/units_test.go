package config

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSizeText(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"2MiB", 2 << 20, true},
		{"2097152", 2 << 20, true},
		{"64KiB", 64 << 10, true},
		{"1GiB", 1 << 30, true},
		{"512B", 512, true},
		{" 3 MiB ", 3 << 20, true},
		{"0", 0, true},
		{"4294967296GiB", 1 << 62, true},
		{"4294967297GiB", 0, false}, // overflows
		{"9223372036854775807", 0, false},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1", 0, false},
		{"-1KiB", 0, false},
		{"1.5MiB", 0, false},
		{"2MB", 0, false},
		{"2mib", 0, false},
		{"2 M", 0, false},
		{"two", 0, false},
		{"0x10", 0, false},
	}
	for _, tt := range tests {
		var s Size = 7
		err := s.UnmarshalText([]byte(tt.in))
		switch {
		case tt.ok && err != nil:
			t.Errorf("%q: %v", tt.in, err)
		case tt.ok && s != tt.want:
			t.Errorf("%q = %d, want %d", tt.in, s, tt.want)
		case !tt.ok && err == nil:
			t.Errorf("%q accepted as %d", tt.in, s)
		case !tt.ok && s != 7:
			t.Errorf("%q: failed but changed the value to %d", tt.in, s)
		}
	}
}

func TestSizeTOML(t *testing.T) {
	tests := []struct {
		in   any
		want Size
		ok   bool
	}{
		{int64(2097152), 2 << 20, true},
		{int64(0), 0, true},
		{"64KiB", 64 << 10, true},
		{int64(-1), 0, false},
		{1.5, 0, false},
		{true, 0, false},
		{[]any{int64(1)}, 0, false},
	}
	for _, tt := range tests {
		var s Size
		err := s.UnmarshalTOML(tt.in)
		if tt.ok != (err == nil) || s != tt.want {
			t.Errorf("UnmarshalTOML(%#v) = %d, %v; want %d, ok %v", tt.in, s, err, tt.want, tt.ok)
		}
	}
}

func TestSizeMarshalRoundTrip(t *testing.T) {
	tests := []struct {
		s    Size
		text string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{1024, "1KiB"},
		{1536, "1536"},
		{64 << 10, "64KiB"},
		{2 << 20, "2MiB"},
		{3 << 30, "3GiB"},
		{1<<30 + 1<<20, "1025MiB"},
	}
	for _, tt := range tests {
		b, err := tt.s.MarshalText()
		if err != nil || string(b) != tt.text {
			t.Errorf("MarshalText(%d) = %q, %v; want %q", tt.s, b, err, tt.text)
			continue
		}
		var back Size
		if err := back.UnmarshalText(b); err != nil || back != tt.s {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d", b, back, err, tt.s)
		}
	}
}

func TestDurationText(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30s", 30 * time.Second, true},
		{"2m", 2 * time.Minute, true},
		{"1h2m3s", time.Hour + 2*time.Minute + 3*time.Second, true},
		{"1.5s", 1500 * time.Millisecond, true},
		{"0", 0, true},
		{"-5s", -5 * time.Second, true}, // parsed; validate refuses it
		{"5", 0, false},
		{"", 0, false},
		{"30 s", 0, false},
		{"1d", 0, false},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if tt.ok != (err == nil) || d.D() != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v, ok %v", tt.in, d.D(), err, tt.want, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), strconv.Quote(tt.in)) {
			t.Errorf("error for %q does not quote it: %v", tt.in, err)
		}
	}
	b, _ := Duration(90 * time.Second).MarshalText()
	if string(b) != "1m30s" {
		t.Errorf("MarshalText(90s) = %q", b)
	}
}
