package main

import "testing"

func TestParseStraceC(t *testing.T) {
	text := `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 45.00    0.123456          12     10000       335 read
 20.00    0.010000           5      2000           sendfile
------ ----------- ----------- --------- --------- ----------------
100.00    0.234567                 12000       335 total
`
	c := parseStraceC(text)
	if c["read"].Calls != 10000 || c["read"].Errors != 335 || c["sendfile"].Calls != 2000 || len(c) != 2 {
		t.Fatalf("got %+v", c)
	}
}

func TestParsePerfStat(t *testing.T) {
	text := `# started on Thu Nov 26 06:13:02 2026

     0.250,100,,raw_syscalls:sys_enter,1000,100.00,,
     0.250,60,,syscalls:sys_enter_read,1000,100.00,,
     0.250,<not counted>,,syscalls:sys_enter_futex,0,100.00,,
     0.500,50,,raw_syscalls:sys_enter,1000,100.00,,
     0.500,30,,syscalls:sys_enter_sendfile64,1000,100.00,,
`
	c := parsePerfStat(text)
	if c["read"].Calls != 60 || c["sendfile"].Calls != 30 || c["(other)"].Calls != 60 || len(c) != 3 {
		t.Fatalf("got %+v", c)
	}
}

func TestSoakFlat(t *testing.T) {
	mib := float64(1 << 20)
	for _, tc := range []struct {
		first, last float64
		flat        bool
	}{
		{20 * mib, 21 * mib, true},
		{20 * mib, 19 * mib, true},
		{20 * mib, 23 * mib, false},   // +15%
		{100 * mib, 106 * mib, false}, // +6% but > 4 MiB
	} {
		if got := soakFlat(tc.first, tc.last); got != tc.flat {
			t.Errorf("soakFlat(%v, %v) = %v", tc.first/mib, tc.last/mib, got)
		}
	}
}
