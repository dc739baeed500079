package daemon

import (
	"github.com/zfs-serve/zfs-serve/internal/sched"
)

// The supervisor's scheduling policy (supervisor_sched_batch).
//
// The supervisor wakes for every batch of new connections, accepts them
// and hands them over, a few microseconds each. As an ordinary
// (SCHED_OTHER) thread, each wake-up preempts whatever runs on the CPU,
// usually a worker, which a new connection does not need: under load, a
// worker switched out and back for each batch, and the batches stayed
// small. As SCHED_BATCH (at the same nice value, so with the same share of
// the CPU) it waits for the running thread's tick or for an idle CPU, and
// accepts what came meanwhile in one batch. On an idle box nothing
// changes: a free CPU runs it at once. Native new connections on the
// development box: -9% server CPU per connection, +3% req/s
// (bench/findings.md).

// schedState is what the supervisor knows of its policy: base, the one it
// was started with (-1: unknown); now, the one it has set (base until it
// sets one; -1 after a failure, which may have set some threads only).
type schedState struct{ base, now int }

// initSched records the policy the supervisor was started with, its first
// thread's. Only from SCHED_OTHER does it ever change it: a policy chosen
// outside (systemd's CPUSchedulingPolicy=, chrt) stands, also with
// reset-on-fork, where the runtime's other threads run SCHED_OTHER.
func (s *Supervisor) initSched() {
	p, err := sched.Started()
	if err != nil {
		p = -1
	}
	s.sched = schedState{base: p, now: p}
}

// applySched puts supervisor_sched_batch in force: at start and at each
// reload.
func (s *Supervisor) applySched(batch bool) {
	if s.env.setSched == nil || s.sched.base != sched.Normal {
		return
	}
	want := sched.Normal
	if batch {
		want = sched.Batch
	}
	if want == s.sched.now {
		return
	}
	if err := s.env.setSched(want); err != nil {
		s.log.Warn("could not set the supervisor's scheduling policy (supervisor_sched_batch): a seccomp filter without sched_setattr? Allow it, or set supervisor_sched_batch = false", "batch", batch, "err", err)
		// Some threads may have changed: unknown, so that the next
		// reload sets its policy whichever it is.
		s.sched.now = -1
		return
	}
	s.sched.now = want
	s.log.Debug("supervisor scheduling policy set", "batch", batch)
}

// startWorker calls start on a thread of the policy the supervisor was
// started with, which the worker it starts inherits: workers serve
// connections and run as the operator started zfs-serve. It does not
// trust s.sched.now for it: a SetProcess that failed half-way, or ran
// out of passes, leaves threads of both policies.
func (s *Supervisor) startWorker(start func() error) error {
	if s.sched.base != sched.Normal {
		return start() // the supervisor never changes it
	}
	return sched.Run(sched.Normal, start)
}
