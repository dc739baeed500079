package daemon

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestSignalFlood: a SIGTERM that comes while SIGHUPs (or SIGUSR1s) pile
// up is delivered. With one channel of 4 for every signal, signal.Notify
// dropped whatever found it full: a script's burst of SIGHUPs while the
// loop was busy lost a SIGTERM, and the daemon served on after
// systemctl stop (until TimeoutStopSec and a SIGKILL).
func TestSignalFlood(t *testing.T) {
	sigs, stop := notifySignals()
	defer stop()
	for _, flood := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1} {
		for range 20 {
			syscall.Kill(os.Getpid(), flood)
			time.Sleep(2 * time.Millisecond) // the runtime delivers each: nobody reads them
		}
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		deadline := time.After(2 * time.Second)
		got := map[os.Signal]int{}
	read:
		for {
			select {
			case sig := <-sigs:
				got[sig]++
				if sig == syscall.SIGTERM {
					break read
				}
			case <-deadline:
				t.Fatalf("after 20 %v and a SIGTERM, only %v arrived: the SIGTERM was lost", flood, got)
			}
		}
		// What is left of the flood, before the next round.
		for more := true; more; {
			select {
			case sig := <-sigs:
				got[sig]++
			case <-time.After(100 * time.Millisecond):
				more = false
			}
		}
		if got[flood] == 0 || got[flood] > 2 {
			t.Errorf("20 %v arrived as %d (want them merged into one or two)", flood, got[flood])
		}
	}
}
