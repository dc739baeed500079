package rawcall

import (
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCloseAll: CloseAll closes exactly the descriptors it is given, in
// runs and alone, whatever their order, skipping negative ones, and
// leaves open the descriptors between and around them; so does its
// fallback after close_range was refused.
func TestCloseAll(t *testing.T) {
	t.Run("close_range", func(t *testing.T) { testCloseAll(t) })
	t.Run("refused", func(t *testing.T) {
		noCloseRange.Store(true)
		t.Cleanup(func() { noCloseRange.Store(false) })
		testCloseAll(t)
	})
}

func testCloseAll(t *testing.T) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	// 12 fresh descriptors; which of them CloseAll gets, by index.
	for _, give := range [][]int{
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11},
		{11, 3, 0, 5, 4, 9, 10},
		{1, 3, 5, 7},
		{6},
		{},
		{2, 3, 7, 8, 9},
	} {
		var fds []int
		for range 12 {
			fd, err := unix.FcntlInt(null.Fd(), unix.F_DUPFD_CLOEXEC, 100)
			if err != nil {
				t.Fatal(err)
			}
			fds = append(fds, fd)
		}
		closed := map[int]bool{}
		arg := []int{-1}
		for _, i := range give {
			arg = append(arg, fds[i], -1)
			closed[fds[i]] = true
		}
		CloseAll(arg)
		for _, fd := range fds {
			_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			if open := err != syscall.EBADF; open == closed[fd] {
				t.Errorf("given %v: descriptor %d open %v", give, fd, open)
			}
			if !closed[fd] {
				syscall.Close(fd)
			}
		}
	}
}

// TestCloseAllRuns: a batch of consecutive descriptors is one system
// call, not one each.
func TestCloseAllRuns(t *testing.T) {
	for _, c := range []struct {
		fds  []int
		runs [][2]int
	}{
		{[]int{5, 6, 7}, [][2]int{{5, 7}}},
		{[]int{7, -1, 5, 6, -1}, [][2]int{{5, 7}}},
		{[]int{9, 13, 16, 18, 20, 21, 22}, [][2]int{{9, 9}, {13, 13}, {16, 16}, {18, 18}, {20, 22}}},
		{[]int{-1, -1}, nil},
		{nil, nil},
	} {
		var got [][2]int
		closeRuns(c.fds, func(lo, hi int) { got = append(got, [2]int{lo, hi}) })
		if len(got) != len(c.runs) {
			t.Errorf("%v: runs %v, want %v", c.fds, got, c.runs)
			continue
		}
		for i := range got {
			if got[i] != c.runs[i] {
				t.Errorf("%v: runs %v, want %v", c.fds, got, c.runs)
			}
		}
	}
}
