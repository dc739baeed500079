package proc

import (
	"os"
	"testing"
)

func TestParseStat(t *testing.T) {
	line := "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 100 0 0\n"
	st, err := parseStat(1234, []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != 1 || st.Session != 1234 || st.UTime != 250 || st.STime != 50 || st.CUTime != 7 || st.CSTime != 3 {
		t.Fatalf("got %+v", st)
	}
}

func TestSelf(t *testing.T) {
	pid := os.Getpid()
	if RSS([]int{pid}) <= 0 {
		t.Fatal("no RSS for this process")
	}
	for i := 0; i < 1e7; i++ { // burn a little CPU
		_ = i * i
	}
	if CPU([]int{pid}) < 0 {
		t.Fatal("negative CPU")
	}
	a, err := Snapshot(0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Snapshot(0)
	if u := Since(a, b); u.Foreign < 0 || u.Busy < 0 {
		t.Fatalf("got %+v", u)
	}
}
