package serve

import "time"

// tickUntil calls f every d until stop is closed: the worker's periodic
// housekeeping (the park sweep, the open-file cache's sweep, the root's
// check).
func tickUntil(stop <-chan struct{}, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f()
		}
	}
}
