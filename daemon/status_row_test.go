package daemon

import "testing"

// TestStatusRowConnections: for a worker that is not asked (starting,
// unresponsive, killed), zctl status's connections come from the
// supervisor's counts, and must mean what the worker's own answer means:
// connections served, those in flight included (serve.Stats counts a
// connection when it starts). Counting only those reported done made a
// worker's CONNS, and totals.connections, drop by its active ones the
// moment it stopped answering the heartbeat.
func TestStatusRowConnections(t *testing.T) {
	g := &generation{id: 1}
	sl := &slot{index: 0}
	w := &workerProc{pid: 42, slot: sl}
	sl.w = w
	w.active.Store(2)
	w.conns.Store(5)
	if got := workerRow(g, sl, w); got.Active != 2 || got.Connections != 7 {
		t.Errorf("row: active %d, connections %d; want 2 and 7 (5 done, 2 in flight)", got.Active, got.Connections)
	}
}
