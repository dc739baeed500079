package daemon

import "testing"

func TestGCPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name         string
		live, copies int64
		want         int
	}{
		{"no copies, large heap: GOGC=100", 40 * mib, 0, 100},
		{"no copies, small heap: the runtime's own 4 MiB floor", 1 * mib, 0, 100},
		{"copies of 4 MiB beside 1 MiB: goal 4+4 MiB", 5 * mib, 4 * mib, 60},
		{"copies of 4 MiB beside 10 MiB: goal 20+4 MiB", 14 * mib, 4 * mib, 71},
		{"copies of 4 MiB beside 100 MiB: nearly 100", 104 * mib, 4 * mib, 96},
		{"only copies: goal 4 MiB more", 4 * mib, 4 * mib, 100},
		{"copies counted above live (read apart): as only copies", 3 * mib, 4 * mib, 100},
		{"many copies, little else: the floor", 64 * mib, 63 * mib, 10},
		{"nothing live yet", 0, 0, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gcPercent(tc.live, tc.copies); got != tc.want {
				t.Errorf("gcPercent(%d, %d) = %d, want %d", tc.live, tc.copies, got, tc.want)
			}
		})
	}
}
