package daemon

import "github.com/zfs-serve/zfs-serve/ctl"

// supState is the supervisor's state. The loop changes it (setState);
// other goroutines read a copy (loadState).
type supState int32

const (
	stateStarting  supState = iota // the first generation is not ready yet
	stateServing                   // a generation serves, no reload in progress
	stateReloading                 // a new generation is starting; the old one serves
	stateDraining                  // no new connections; exits when the last worker has
	stateStopping                  // workers killed; exits when they are reaped
)

// String is the state as the control protocol and the metrics spell it.
func (st supState) String() string {
	switch st {
	case stateServing:
		return ctl.StateServing
	case stateReloading:
		return ctl.StateReloading
	case stateDraining:
		return ctl.StateDraining
	case stateStopping:
		return ctl.StateStopping
	}
	return ctl.StateStarting
}

// exiting reports whether the daemon is on its way out: draining or
// stopping.
func (st supState) exiting() bool { return st == stateDraining || st == stateStopping }

// serves reports whether a generation takes new connections in st.
func (st supState) serves() bool { return st == stateServing || st == stateReloading }

func (s *Supervisor) setState(st supState) {
	s.state = st
	s.stateNow.Store(int32(st))
	s.notifyStatus()
}

// loadState is the state, for goroutines off the loop.
func (s *Supervisor) loadState() supState { return supState(s.stateNow.Load()) }
